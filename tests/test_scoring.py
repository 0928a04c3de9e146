"""predict / predict_proba / score_samples / score / bic / aic / sample against scipy and sklearn.

References: scipy.stats.multivariate_normal densities computed from res.params (float64), and a
scikit-learn GaussianMixture whose fitted attributes are set to res.params.
Tolerances: float64 rtol 1e-10; float32 rtol 1e-4 with an absolute floor of 1e-3 (log-densities
of order 1-10; the package computes in float32, the reference in float64 from the same params).
"""

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

import bayesgmm as bg

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
TOL = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1e-4, atol=1e-3)}


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_against_scipy_densities(dtype, ref, faithful, fit_faithful_k3, covariance_type):
    res = fit_faithful_k3(covariance_type)
    p = {k: np.asarray(v, np.float64) for k, v in res.params.items()}
    X = faithful
    logp = ref.component_log_densities(
        X, p["weights"], p["means"], p["covariances"], covariance_type
    )
    want_ss = logsumexp(logp, axis=1)
    want_pp = softmax(logp, axis=1)
    ss = np.asarray(res.score_samples(X), np.float64)
    pp = np.asarray(res.predict_proba(X), np.float64)
    lab = np.asarray(res.predict(X))
    assert ss.shape == (len(X),) and pp.shape == (len(X), 3) and lab.shape == (len(X),)
    np.testing.assert_allclose(ss, want_ss, **TOL[dtype])
    np.testing.assert_allclose(pp, want_pp, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"])
    np.testing.assert_allclose(pp.sum(axis=1), 1.0, atol=1e-12 if dtype is np.float64 else 1e-5)
    # labels agree wherever the top two probabilities are not a near-tie
    top2 = np.sort(want_pp, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-3
    np.testing.assert_array_equal(lab[clear], want_pp.argmax(1)[clear])
    assert np.issubdtype(lab.dtype, np.integer)
    # score is the mean of score_samples; the log-likelihood their sum (ML: = objective)
    np.testing.assert_allclose(float(res.score(X)), want_ss.mean(), **TOL[dtype])
    np.testing.assert_allclose(float(res.log_likelihood), want_ss.sum(), rtol=TOL[dtype]["rtol"])
    np.testing.assert_allclose(
        float(res.objective), float(res.log_likelihood), rtol=TOL[dtype]["rtol"]
    )
    # on new data of another length
    Xn = X[:17] + 0.25
    np.testing.assert_allclose(
        np.asarray(res.score_samples(Xn), np.float64),
        logsumexp(
            ref.component_log_densities(
                Xn, p["weights"], p["means"], p["covariances"], covariance_type
            ),
            1,
        ),
        **TOL[dtype],
    )


@pytest.mark.parametrize("prior", [None, "default"], ids=["ml", "map"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_against_sklearn_model(x64, ref, faithful, fit_faithful_k3, covariance_type, prior):
    res = fit_faithful_k3(covariance_type, prior)
    p = {k: np.asarray(v, np.float64) for k, v in res.params.items()}
    gm = ref.sklearn_model(p["weights"], p["means"], p["covariances"], covariance_type)
    X = faithful
    np.testing.assert_allclose(np.asarray(res.score_samples(X)), gm.score_samples(X), rtol=1e-10)
    np.testing.assert_allclose(
        np.asarray(res.predict_proba(X)), gm.predict_proba(X), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(float(res.score(X)), gm.score(X), rtol=1e-10)
    np.testing.assert_allclose(float(res.bic(X)), gm.bic(X), rtol=1e-10)
    np.testing.assert_allclose(float(res.aic(X)), gm.aic(X), rtol=1e-10)
    # and sklearn's own parameter count, written out
    k = ref.n_parameters(3, 2, covariance_type)
    ll = float(res.score(X)) * len(X)
    np.testing.assert_allclose(float(res.bic(X)), -2 * ll + k * np.log(len(X)), rtol=1e-10)
    np.testing.assert_allclose(float(res.aic(X)), -2 * ll + 2 * k, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample(ref, faithful, fit_faithful_k3, covariance_type):
    res = fit_faithful_k3(covariance_type)
    n = 20000
    Xs, labels = res.sample(n, rng_key=0)
    Xs, labels = np.asarray(Xs, np.float64), np.asarray(labels)
    assert Xs.shape == (n, 2) and labels.shape == (n,)
    assert np.issubdtype(labels.dtype, np.integer)
    assert labels.min() >= 0 and labels.max() < 3
    w = np.asarray(res.weights, np.float64)
    mu = np.asarray(res.means, np.float64)
    S = ref.full_covariances(res.covariances, covariance_type, 3, 2)
    # mixture mean; tolerance 5 standard errors of the sample mean
    mean = w @ mu
    total_cov = np.einsum("k,kij->ij", w, S) + np.einsum("k,ki,kj->ij", w, mu - mean, mu - mean)
    se = np.sqrt(np.diag(total_cov) / n)
    assert np.all(np.abs(Xs.mean(0) - mean) < 5 * se), (Xs.mean(0), mean, se)
    # label frequencies ~ weights (5 binomial standard errors)
    freq = np.bincount(labels, minlength=3) / n
    assert np.all(np.abs(freq - w) < 5 * np.sqrt(w * (1 - w) / n) + 1e-12)
    # within a component the draws have that component's mean
    for k in range(3):
        sel = Xs[labels == k]
        if len(sel) > 500:
            se_k = np.sqrt(np.diag(S[k]) / len(sel))
            assert np.all(np.abs(sel.mean(0) - mu[k]) < 5 * se_k)
    # reproducible with the same key
    Xs2, labels2 = res.sample(n, rng_key=0)
    np.testing.assert_array_equal(np.asarray(Xs2, np.float64), Xs)
    np.testing.assert_array_equal(np.asarray(labels2), labels)


def test_sample_univariate(faithful):
    res = bg.Mixture(2).fit_em(faithful[:, 1], max_iter=20)
    Xs, labels = res.sample(100, rng_key=1)
    assert np.asarray(Xs).shape in ((100,), (100, 1))
    assert np.asarray(labels).shape == (100,)
