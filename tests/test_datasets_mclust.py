"""Tests for the data sets added with the mclust reference (iris, diabetes, banknote, synthetic)."""

import numpy as np
import pandas as pd
import pytest

from bayesgmm.datasets import (
    load_banknote,
    load_diabetes,
    load_iris,
    make_four_clusters,
)
from bayesgmm.datasets._synthetic import four_clusters_parameters

LABELLED = [
    # loader, shape, first row, label name, label counts
    (
        load_iris,
        (150, 4),
        [5.1, 3.5, 1.4, 0.2],
        "Species",
        {"setosa": 50, "versicolor": 50, "virginica": 50},
    ),
    (
        load_diabetes,
        (145, 3),
        [80.0, 356.0, 124.0],
        "class",
        {"Normal": 76, "Chemical": 36, "Overt": 33},
    ),
    (
        load_banknote,
        (200, 6),
        [214.8, 131.0, 131.1, 9.0, 9.7, 141.0],
        "Status",
        {"genuine": 100, "counterfeit": 100},
    ),
]


@pytest.mark.parametrize(("loader", "shape", "first", "label", "counts"), LABELLED)
def test_labelled_loaders(loader, shape, first, label, counts):
    X = loader()
    assert isinstance(X, np.ndarray) and X.dtype == np.float64 and X.shape == shape
    np.testing.assert_array_equal(X[0], first)
    X2, y = loader(return_labels=True)
    np.testing.assert_array_equal(X2, X)
    assert y.shape == (shape[0],)
    values, n = np.unique(y, return_counts=True)
    assert dict(zip(values.tolist(), n.tolist(), strict=True)) == counts
    # a new array on every call
    X[0, 0] = -1.0
    assert loader()[0, 0] == first[0]


@pytest.mark.parametrize(("loader", "shape", "first", "label", "counts"), LABELLED)
def test_labelled_loaders_as_frame(loader, shape, first, label, counts):
    df = loader(as_frame=True)
    assert isinstance(df, pd.DataFrame) and df.shape == shape
    assert all(dtype == np.float64 for dtype in df.dtypes)
    np.testing.assert_array_equal(df.to_numpy(), loader())
    df2, y = loader(as_frame=True, return_labels=True)
    assert isinstance(y, pd.Series) and y.name == label
    assert isinstance(y.dtype, pd.CategoricalDtype)
    assert y.value_counts().to_dict() == counts


def test_diabetes_and_banknote_values():
    X = load_diabetes()
    np.testing.assert_array_equal(X, np.round(X))  # areas and sspg are whole numbers
    assert X[:, 0].min() == 70.0 and X[:, 2].max() == 748.0
    B = load_banknote()
    np.testing.assert_array_equal(B * 10, np.round(B * 10))  # recorded to 0.1 mm
    assert B[:, 0].min() == 213.8 and B[:, 5].max() == 142.4


def test_four_clusters_is_deterministic_and_exact_in_size():
    X, y = make_four_clusters(return_labels=True)
    assert X.shape == (20000, 5) and X.dtype == np.float64
    np.testing.assert_array_equal(make_four_clusters(), X)
    assert np.bincount(y).tolist() == [7000, 6000, 4000, 3000]
    assert not np.array_equal(make_four_clusters(rng=1), X)
    small, ys = make_four_clusters(103, rng=5, return_labels=True)
    assert small.shape == (103, 5) and np.bincount(ys).tolist() == [38, 30, 20, 15]


def test_four_clusters_follow_their_parameters():
    X, y = make_four_clusters(return_labels=True)
    true = four_clusters_parameters()
    for k in range(4):
        rows = X[y == k]
        # standard errors of the sample moments are below 0.03 at these sizes
        np.testing.assert_allclose(rows.mean(axis=0), true["means"][k], atol=0.1)
        np.testing.assert_allclose(np.cov(rows.T), true["covariances"][k], atol=0.15)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_samples": 3}, "n_samples"),
        ({"n_samples": 10.0}, "n_samples"),
        ({"n_samples": True}, "n_samples"),
        ({"rng": -1}, "rng"),
        ({"rng": "0"}, "rng"),
    ],
)
def test_four_clusters_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_four_clusters(**kwargs)
