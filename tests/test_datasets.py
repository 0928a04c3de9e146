"""Tests for the embedded data sets."""

import numpy as np
import pandas as pd
import pytest

from bayesgmm.datasets import load_faithful, load_galaxies


def test_faithful_array():
    X = load_faithful()
    assert isinstance(X, np.ndarray)
    assert X.shape == (272, 2)
    assert X.dtype == np.float64
    np.testing.assert_array_equal(X[0], [3.6, 79.0])
    np.testing.assert_array_equal(X[-1], [4.467, 74.0])
    # eruption times in minutes, waiting times in whole minutes
    assert 1.5 < X[:, 0].min() < X[:, 0].max() < 5.5
    np.testing.assert_array_equal(X[:, 1], np.round(X[:, 1]))
    assert X[:, 1].min() == 43.0
    assert X[:, 1].max() == 96.0


def test_faithful_frame():
    df = load_faithful(as_frame=True)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["eruptions", "waiting"]
    assert df.shape == (272, 2)
    assert all(dtype == np.float64 for dtype in df.dtypes)
    assert df.iloc[0].tolist() == [3.6, 79.0]
    np.testing.assert_array_equal(df.to_numpy(), load_faithful())


def test_galaxies_array():
    v = load_galaxies()
    assert isinstance(v, np.ndarray)
    assert v.shape == (82,)
    assert v.dtype == np.float64
    assert v.min() == 9172.0
    assert v.max() == 34279.0
    assert v[0] == 9172.0
    assert v[-1] == 34279.0
    assert np.all(np.diff(v) > 0)


def test_galaxies_frame():
    df = load_galaxies(as_frame=True)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["velocity"]
    assert df.shape == (82, 1)
    assert df["velocity"].dtype == np.float64
    np.testing.assert_array_equal(df["velocity"].to_numpy(), load_galaxies())


@pytest.mark.parametrize("loader", [load_faithful, load_galaxies])
def test_fresh_array_each_call(loader):
    first = loader()
    expected = first.copy()
    first[...] = -1.0
    second = loader()
    assert second is not first
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(second, expected)


@pytest.mark.parametrize("loader", [load_faithful, load_galaxies])
def test_fresh_frame_each_call(loader):
    first = loader(as_frame=True)
    expected = first.copy()
    first.iloc[0, 0] = -1.0
    pd.testing.assert_frame_equal(loader(as_frame=True), expected)
