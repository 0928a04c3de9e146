"""Bad input raises ValueError naming the problem; the user's arrays are never modified.

Messages are matched loosely (the parameter name, case-insensitive) so wording can evolve.
Construction and fitting sit inside the same ``pytest.raises`` block: validation may happen at
either point.
"""

import numpy as np
import pytest

import bayesgmm as bg


@pytest.fixture
def X(faithful):
    return np.array(faithful)  # a writable copy


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X(X, bad):
    X[5, 1] = bad
    with pytest.raises(ValueError, match=r"(?i)nan|inf|finite"):
        bg.Mixture(2).fit_em(X)


def test_non_finite_X_at_predict(X):
    res = bg.Mixture(2).fit_em(X, max_iter=3)
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"(?i)nan|inf|finite"):
        res.predict(X)


@pytest.mark.parametrize("k", [0, -1])
def test_n_components_below_one(X, k):
    with pytest.raises(ValueError, match="n_components"):
        bg.Mixture(k).fit_em(X)


def test_n_components_above_n_samples(X):
    with pytest.raises(ValueError, match="n_components|n_samples"):
        bg.Mixture(6).fit_em(X[:5])


def test_unknown_covariance_type(X):
    with pytest.raises(ValueError, match="covariance_type"):
        bg.Mixture(2, covariance_type="banana").fit_em(X)


def test_unknown_init(X):
    with pytest.raises(ValueError, match="init"):
        bg.Mixture(2).fit_em(X, init="banana")


def test_negative_sample_weight(X):
    w = np.ones(len(X))
    w[3] = -1.0
    with pytest.raises(ValueError, match="sample_weight"):
        bg.Mixture(2).fit_em(X, sample_weight=w)


def test_all_zero_sample_weight(X):
    with pytest.raises(ValueError, match="sample_weight"):
        bg.Mixture(2).fit_em(X, sample_weight=np.zeros(len(X)))


def test_sample_weight_wrong_length(X):
    with pytest.raises(ValueError, match="sample_weight"):
        bg.Mixture(2).fit_em(X, sample_weight=np.ones(len(X) - 1))


def test_X_with_three_dimensions(X):
    with pytest.raises(ValueError, match=r"(?i)\bX\b|dimension|ndim|shape"):
        bg.Mixture(2).fit_em(X[:, :, None])


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score"])
def test_wrong_number_of_features_at_predict(X, method):
    res = bg.Mixture(2).fit_em(X, max_iter=3)
    bad = np.column_stack([X, X[:, :1]])
    with pytest.raises(ValueError, match=r"(?i)feature"):
        getattr(res, method)(bad)


def test_init_params_wrong_shape(X):
    params = {
        "weights": np.array([0.5, 0.5]),
        "means": np.zeros((3, 2)),
        "covariances": np.stack([np.eye(2)] * 2),
    }
    with pytest.raises(ValueError, match="means"):
        bg.Mixture(2).fit_em(X, init_params=params)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(scale=np.array([[1.0, 2.0], [2.0, 1.0]])), "scale"),  # indefinite
        (dict(scale=-np.eye(2)), "scale"),
        (dict(degrees_of_freedom=1.0), "degrees_of_freedom"),  # D - 1 = 1 is not allowed
        (dict(degrees_of_freedom=0.5), "degrees_of_freedom"),
        (dict(mean_precision=0.0), "mean_precision"),
        (dict(mean_precision=-1.0), "mean_precision"),
        (dict(weight_concentration=0.0), "weight_concentration"),
        (dict(weight_concentration=-2.0), "weight_concentration"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_invalid_prior(X, kwargs, name):
    with pytest.raises(ValueError, match=name):
        bg.Mixture(2, prior=bg.Prior(**kwargs)).fit_em(X)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_user_arrays_untouched(X, covariance_type):
    rng = np.random.default_rng(0)
    w = rng.integers(1, 4, size=len(X)).astype(np.float64)
    K = 2
    cov = {
        "full": np.stack([np.cov(X.T)] * K),
        "tied": np.cov(X.T),
        "diag": np.stack([X.var(0)] * K),
        "spherical": np.full(K, X.var(0).mean()),
    }[covariance_type]
    init = {"weights": np.array([0.4, 0.6]), "means": X[[0, 1]].copy(), "covariances": cov}
    X32 = X.astype(np.float32)
    m0, S0 = X.mean(0), np.cov(X.T)
    arrays = (X, X32, w, *init.values(), m0, S0)
    originals = [a.copy() for a in arrays]
    # the data-based prior defaults are where in-place centring would most likely happen;
    # "default" and an explicit Prior share one compiled program (hyperparameters are values)
    for prior in ("default", bg.Prior(mean=m0, scale=S0)):
        mix = bg.Mixture(K, covariance_type=covariance_type, prior=prior)
        res = mix.fit_em(X, sample_weight=w, init_params=init, max_iter=3)
        mix.fit_em(X32, sample_weight=w, init_params=init, max_iter=3)
        res.predict(X)
        res.score_samples(X32)
    for a, b in zip(arrays, originals, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
