"""A Mixture is an immutable declaration; a fit's data-based prior lives on the fit.

References: the default prior's data moments against NumPy's weighted mean and covariance
(float64, rtol 1e-12); the prior ``select`` uses for K against ``Mixture.resolve_prior`` and a
single ``fit_em`` for K (the same computation, rtol 1e-12).
"""

import dataclasses

import numpy as np
import numpyro
import pytest

import bayesgmm as bg
from bayesgmm import driver

SELECT = dict(max_iter=5, tol=0.0)


def _assert_same_prior(a, b, rtol=1e-12):
    assert a is not None and b is not None
    for name, x, y in zip(a._fields, a, b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, err_msg=name)


def test_mixture_is_immutable_and_comparable():
    mix = bg.Mixture(2, "diag", prior="default", reg_covar=1e-5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        mix.prior = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        mix.n_components = 3
    assert mix == bg.Mixture(2, covariance_type="diag", prior="default", reg_covar=1e-5)
    assert mix != bg.Mixture(3, "diag", prior="default", reg_covar=1e-5)
    assert hash(mix) == hash(bg.Mixture(2, "diag", prior="default", reg_covar=1e-5))
    assert repr(mix) == (
        "Mixture(n_components=2, covariance_type='diag', prior='default', reg_covar=1e-05)"
    )
    explicit = bg.Mixture(2, prior=bg.Prior(mean=np.zeros(2), scale=np.eye(2)))
    assert isinstance(hash(explicit), int)  # a Prior holding arrays still hashes
    with pytest.raises(ValueError, match="n_components"):
        bg.Mixture(0)


def test_select_keeps_every_k_prior_and_leaves_mixtures_unchanged(x64, faithful):
    sel = bg.select(faithful, [3, 1], ["full"], prior="default", **SELECT)
    res3, res1 = sel.fits[(3, "full")], sel.fits[(1, "full")]
    mix3 = bg.Mixture(3, "full", prior="default")
    assert res3.mixture == mix3 and res1.mixture == bg.Mixture(1, "full", prior="default")
    _assert_same_prior(res3.prior, mix3.resolve_prior(faithful))
    _assert_same_prior(res1.prior, res1.mixture.resolve_prior(faithful))
    # K enters the default scale: the K=3 and K=1 priors differ
    assert not np.allclose(res3.prior.scale, res1.prior.scale)
    single = mix3.fit_em(faithful, **SELECT)
    _assert_same_prior(res3.prior, single.prior)
    assert mix3 == bg.Mixture(3, "full", prior="default")  # fitting did not change it


def test_default_prior_moments_match_numpy(x64):
    rng = np.random.default_rng(3)
    n = 203  # four blocks of 64, the last overlapping
    X = rng.normal(100.0, [1.0, 5.0, 0.1], size=(n, 3)) + rng.normal(size=(n, 1))
    w = rng.uniform(0.2, 3.0, n)
    m = driver.data_moments(X, w, block_size=64)
    np.testing.assert_allclose(m.mean, np.average(X, axis=0, weights=w), rtol=1e-12)
    want = np.cov(X.T, aweights=w, bias=True)
    np.testing.assert_allclose(m.covariance, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    np.testing.assert_allclose(m.total_weight, w.sum(), rtol=1e-13)
    assert m.mean.dtype == np.float64


def test_select_refuses_unknown_keywords(faithful):
    with pytest.raises(ValueError, match="n_iter"):
        bg.select(faithful, [2], n_iter=5)
    start = {"weights": [0.5, 0.5], "means": [[2, 55], [4, 80]], "covariances": [1.0, 1.0]}
    with pytest.raises(ValueError, match="init_params"):
        bg.select(faithful, [2], init_params=start)
    with pytest.raises(ValueError, match="max_iter"):
        bg.select(faithful, [2], max_iter=-1)


def _sites(model, *args, **kwargs):
    with numpyro.handlers.trace() as tr, numpyro.handlers.seed(rng_seed=0):
        model(*args, **kwargs)
    return {k: s["value"] for k, s in tr.items() if s["type"] == "sample"}


def test_prior_predictive_takes_the_prior_explicitly(faithful):
    mix = bg.Mixture(2, "spherical", prior="default")
    with pytest.raises(ValueError, match=r"prior=res\.prior"):
        mix.model(None)
    sites = _sites(mix.model, None, n_samples=4, prior=mix.resolve_prior(faithful))
    assert sites["means"].shape == (2, 2) and sites["obs"].shape == (4, 2)
    with pytest.raises(ValueError, match="PriorParams"):
        mix.model(None, prior="default")
    with pytest.raises(ValueError, match="no prior"):
        bg.Mixture(2).model(None, prior=mix.resolve_prior(faithful))
