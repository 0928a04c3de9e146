"""Maximum-likelihood EM against scikit-learn's GaussianMixture, iterate by iterate (float64).

Reference: sklearn.mixture.GaussianMixture started from the same weights / means / precisions
(``weights_init``, ``means_init``, ``precisions_init``) with ``tol=0`` so it runs exactly
``max_iter`` iterations. Tolerance: rtol 1e-8 (with an absolute floor of 1e-8 x the largest entry)
on weights, means and covariances; EM is a contraction, so float64 rounding stays ~1e-13.
"""

import numpy as np
import pytest

import bayesgmm as bg

RTOL = 1e-8
CASES = [("faithful", 2), ("faithful", 3), ("blobs3d", 3)]


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("data,n_components", CASES)
def test_iterates_match_sklearn(request, x64, ref, data, n_components, covariance_type):
    X = request.getfixturevalue(data)
    params, sk_init = ref.init_params(X, n_components, covariance_type, seed=1)
    mix = bg.Mixture(n_components, covariance_type=covariance_type, reg_covar=1e-6)
    for m in (1, 2, 3, 5):
        res = mix.fit_em(X, init_params=params, max_iter=m, tol=0.0)
        gm = ref.sklearn_fit(X, n_components, covariance_type, max_iter=m, **sk_init)
        assert res.covariance_type == covariance_type
        assert int(res.n_iter) == m
        assert not bool(res.converged)
        got = ref.as_np(res)
        ref.assert_close(got["weights"], gm.weights_, RTOL, f"weights after {m} iterations")
        ref.assert_close(got["means"], gm.means_, RTOL, f"means after {m} iterations")
        ref.assert_close(
            got["covariances"], gm.covariances_, RTOL, f"covariances after {m} iterations"
        )
        # log-likelihood of the returned parameters: sklearn's score is the mean per sample
        np.testing.assert_allclose(float(res.log_likelihood), gm.score(X) * len(X), rtol=1e-10)
        # ML: the objective is the log-likelihood
        np.testing.assert_allclose(float(res.objective), float(res.log_likelihood), rtol=1e-12)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_history_matches_sklearn_scores(x64, ref, faithful, covariance_type):
    """history[m-1] is the log-likelihood after m iterations = sklearn(max_iter=m).score * n."""
    X, K, n_iter = faithful, 3, 8
    params, sk_init = ref.init_params(X, K, covariance_type, seed=2)
    res = bg.Mixture(K, covariance_type=covariance_type).fit_em(
        X, init_params=params, max_iter=n_iter, tol=0.0
    )
    history = np.asarray(res.history, dtype=np.float64)
    assert history.shape == (n_iter,)
    expected = [
        ref.sklearn_fit(X, K, covariance_type, max_iter=m, **sk_init).score(X) * len(X)
        for m in range(1, n_iter + 1)
    ]
    np.testing.assert_allclose(history, expected, rtol=1e-10)
    assert history[-1] == float(res.objective)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_reg_covar_added_like_sklearn(x64, ref, faithful, covariance_type):
    """A large reg_covar (0.1, comparable to the eruption variance) makes its placement visible."""
    X, K = faithful, 2
    params, sk_init = ref.init_params(X, K, covariance_type, seed=3)
    res = bg.Mixture(K, covariance_type=covariance_type, reg_covar=0.1).fit_em(
        X, init_params=params, max_iter=3, tol=0.0
    )
    gm = ref.sklearn_fit(X, K, covariance_type, max_iter=3, reg_covar=0.1, **sk_init)
    got = ref.as_np(res)
    for name, want in (
        ("weights", gm.weights_),
        ("means", gm.means_),
        ("covariances", gm.covariances_),
    ):
        ref.assert_close(got[name], want, RTOL, name)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_convergence_rule_matches_sklearn(x64, ref, faithful, covariance_type):
    """Stop when the per-sample change between consecutive E-steps < tol: same n_iter as sklearn."""
    X, K, tol = faithful, 2, 1e-4
    params, sk_init = ref.init_params(X, K, covariance_type, seed=4)
    res = bg.Mixture(K, covariance_type=covariance_type).fit_em(
        X, init_params=params, max_iter=500, tol=tol
    )
    gm = ref.sklearn_fit(X, K, covariance_type, max_iter=500, tol=tol, **sk_init)
    assert gm.converged_
    assert bool(res.converged)
    assert int(res.n_iter) == gm.n_iter_
    assert len(np.asarray(res.history)) == gm.n_iter_
    got = ref.as_np(res)
    ref.assert_close(got["means"], gm.means_, RTOL, "means")
    ref.assert_close(got["covariances"], gm.covariances_, RTOL, "covariances")


def test_faithful_full_two_components(x64, faithful):
    """Known optimum: full K=2 log-likelihood -1130.264 (sklearn/mclust), tolerance 1e-3."""
    res = bg.Mixture(2, covariance_type="full").fit_em(faithful, n_init=3, tol=1e-10, max_iter=2000)
    assert bool(res.converged)
    assert abs(float(res.log_likelihood) - (-1130.264)) < 1e-3


def test_faithful_tied_three_components(x64, faithful):
    """mclust's EEE (tied) G=3 optimum, log-likelihood -1126.32 (+-0.01); restarts as needed."""
    res = bg.Mixture(3, covariance_type="tied").fit_em(
        faithful, n_init=10, tol=1e-10, max_iter=5000
    )
    assert abs(float(res.log_likelihood) - (-1126.32)) < 0.01
