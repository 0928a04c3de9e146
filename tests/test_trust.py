"""Trust in every fit (issue 9): equivariance, extreme values, weights, monotone objective,
far points, new row counts.

References are independent: the transformation x -> a + s x written out here, scipy's
log-densities, NumPy arithmetic. Tolerances: float64 relative 1e-5 for parameters of shifted and
rescaled data (EM from the same start for a fixed number of iterations), 1e-12 for the
log-likelihood against the sum of score_samples; float32 to the resolution its working data
carry (1e-3 of a standard deviation).
"""

import warnings

import jax
import numpy as np
import pytest
from test_compile import count_compiles

import bayesgmm as bg

COV_TYPES = ("full", "tied", "diag", "spherical")


def _two_clusters(seed=0, n=80, d=2, gap=4.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0, (n // 2, d))
    b = rng.normal(gap, 0.7, (n - n // 2, d))
    return np.concatenate([a, b])


def _start(X, k, covariance_type):
    """A deterministic start: the means of sorted halves, the pooled variance."""
    order = np.argsort(X[:, 0])
    parts = np.array_split(X[order], k)
    means = np.stack([p.mean(0) for p in parts])
    var = X.var(0)
    d = X.shape[1]
    cov = {
        "full": np.stack([np.diag(var)] * k),
        "tied": np.diag(var),
        "diag": np.stack([var] * k),
        "spherical": np.full(k, var.mean()),
    }[covariance_type]
    return {"weights": np.full(k, 1.0 / k), "means": means, "covariances": cov}, d


def _mapped_start(start, a, s):
    return {
        "weights": start["weights"],
        "means": a + s * start["means"],
        "covariances": s**2 * start["covariances"],
    }


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("prior", [None, "default"], ids=["ml", "map"])
# Shifts keep the data's digits: -1e8 + 1e-6 x would keep two (float64 resolves 1.5e-8 at 1e8).
@pytest.mark.parametrize(
    "a,s", [(1e8, 1.0), (-1e8, 1e2), (0.0, 1e-6), (0.0, 1e6), (3.0, 1e-6), (-5e3, 3e-3)]
)
def test_equivariance_float64(x64, covariance_type, prior, a, s):
    X = _two_clusters()
    start, _ = _start(X, 2, covariance_type)
    opts = dict(max_iter=30, tol=0.0)
    base = bg.Mixture(2, covariance_type, prior=prior, reg_covar=1e-3).fit_em(
        X, init_params=start, **opts
    )
    moved = bg.Mixture(2, covariance_type, prior=prior, reg_covar=1e-3 * s**2).fit_em(
        a + s * X, init_params=_mapped_start(start, a, s), **opts
    )
    np.testing.assert_allclose(moved.weights, base.weights, rtol=1e-5)
    np.testing.assert_allclose((moved.means - a) / s, base.means, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(moved.covariances / s**2, base.covariances, rtol=1e-5, atol=1e-8)
    # The log-likelihood of the data as given: n D log(s) lower for data s times wider.
    n, d = X.shape
    np.testing.assert_allclose(
        moved.log_likelihood, base.log_likelihood - n * d * np.log(s), rtol=1e-9, atol=1e-6
    )


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_float64_data_near_1e8_in_float32(f32, covariance_type):
    """The issue's case: float64 data near 1e8 with unit spread, default float32 mode."""
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(0.71, 0.2, 150), rng.normal(3.19, 0.2, 150)])
    res = bg.Mixture(2, covariance_type).fit_em(X + 1e8)
    ref = bg.Mixture(2, covariance_type).fit_em(X)
    got = np.sort((res.means - 1e8).ravel())
    np.testing.assert_allclose(got, np.sort(ref.means.ravel()), atol=1e-3)
    np.testing.assert_allclose(got, [0.71, 3.19], atol=0.05)
    np.testing.assert_allclose(
        np.sort(res.covariances.ravel()), np.sort(ref.covariances.ravel()), rtol=1e-3
    )
    # Scoring new rows applies the same transformation.
    np.testing.assert_allclose(
        res.score_samples(X[:7] + 1e8), ref.score_samples(X[:7]), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("factor", [1e-300, 1e-20, 1e30, 1e300])
def test_weight_scale_leaves_ml_fit_unchanged(x64, factor):
    X = _two_clusters(3)
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(X))
    mix = bg.Mixture(2, "full")
    # Converged to round-off: restarts that reach the same optimum then agree, whichever of
    # them the last bits of the weights make the best.
    opts = dict(tol=1e-13, max_iter=500)
    base = mix.fit_em(X, sample_weight=w, **opts)
    scaled = mix.fit_em(X, sample_weight=w * factor, **opts)
    i, j = np.argsort(scaled.means[:, 0]), np.argsort(base.means[:, 0])  # up to relabelling
    np.testing.assert_allclose(scaled.means[i], base.means[j], rtol=1e-10)
    np.testing.assert_allclose(scaled.covariances[i], base.covariances[j], rtol=1e-10)
    np.testing.assert_allclose(scaled.log_likelihood, factor * base.log_likelihood, rtol=1e-10)


@pytest.mark.parametrize("factor", [1e-20, 1e30])
def test_weight_scale_float32(f32, factor):
    X = _two_clusters(3)
    base = bg.Mixture(2, "diag").fit_em(X)
    scaled = bg.Mixture(2, "diag").fit_em(X, sample_weight=np.full(len(X), factor))
    np.testing.assert_allclose(np.sort(scaled.means[:, 0]), np.sort(base.means[:, 0]), rtol=1e-4)
    assert np.ptp(scaled.means[:, 0]) > 2  # not every mean at the data mean


FAR = np.array([[1e160, 0.0], [1e300, -1e300], [-1e300, 5.0], [1e20, 1e-20], [2.0, 2.0]])


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_far_points_finite(dtype, covariance_type):
    res = bg.Mixture(2, covariance_type).fit_em(_two_clusters(4))
    lp = res.score_samples(FAR)
    proba = res.predict_proba(FAR)
    assert np.all(np.isfinite(lp)) and np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert np.all(lp[:4] < -1e30) and lp[4] > -50
    assert np.isfinite(res.score(FAR)) and np.isfinite(res.bic(FAR)) and np.isfinite(res.aic(FAR))
    assert set(np.asarray(res.predict(FAR)).tolist()) <= {0, 1}


def test_far_points_rank_by_distance(x64):
    """Far away the nearer component (in its own units) wins, as scipy says at moderate range."""
    from scipy import stats

    w, mu = np.array([0.5, 0.5]), np.array([[0.0], [10.0]])
    cov = np.array([1.0, 4.0])
    res = bg.FitResult.from_params(bg.Mixture(2, "spherical"), w, mu, cov)
    X = np.array([[-30.0], [40.0], [1e6]])
    lp = np.stack(
        [np.log(0.5) + stats.norm(mu[k, 0], np.sqrt(cov[k])).logpdf(X[:, 0]) for k in (0, 1)], 1
    )
    ref = lp - np.logaddexp(lp[:, :1], lp[:, 1:])
    np.testing.assert_allclose(np.log(res.predict_proba(X)[:2]), ref[:2], rtol=1e-10)
    np.testing.assert_allclose(
        res.score_samples(X[:2]), np.logaddexp(lp[:2, 0], lp[:2, 1]), rtol=1e-12
    )
    assert res.predict(X)[2] == 1


def test_log_likelihood_is_sum_of_score_samples(x64):
    rng = np.random.default_rng(5)
    X = _two_clusters(5) + 1e8
    w = rng.integers(1, 4, len(X)).astype(float)
    for cov in COV_TYPES:
        res = bg.Mixture(2, cov).fit_em(X, sample_weight=w)
        total = float(np.sum(w * res.score_samples(X)))
        np.testing.assert_allclose(res.log_likelihood, total, rtol=1e-12)


@pytest.mark.parametrize("prior,reg", [("default", 1e-6), (None, 0.0)], ids=["map", "ml0"])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_far_clusters_monotone(x64, prior, reg, covariance_type):
    """Two clusters 1e6 apart (in their own standard deviations): monotone to 1e-10 relative."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (100, 2)), rng.normal(0, 1, (100, 2)) + [1e6, 0.0]])
    res = bg.Mixture(2, covariance_type, prior=prior, reg_covar=reg).fit_em(X)
    h = np.asarray(res.history)
    assert res.converged
    assert np.all(np.diff(h) >= -1e-10 * np.abs(h[1:])), np.diff(h)


def test_cycle_stops_with_warning(x64):
    """A nearly singular prior scale makes float64 EM alternate (its M-step rounds the
    ill-conditioned covariances); the loop stops, unconverged, with a warning."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (100, 2)), rng.normal(1e6, 1, (100, 2))])
    with pytest.warns(RuntimeWarning, match="cycles"):
        res = bg.Mixture(2, "full", prior="default").fit_em(X, tol=0.0, max_iter=500)
    assert not res.converged and res.n_iter < 500


def test_new_row_counts_and_sample_sizes_do_not_compile():
    res = bg.Mixture(2, "full").fit_em(_two_clusters(6))
    X = _two_clusters(7, n=200)
    for n in (1, 100):  # warm the two buckets that the loop below uses
        res.sample(n)
        res.predict(X[:n]), res.predict_proba(X[:n]), res.score_samples(X[:n]), res.score(X[:n])
    with count_compiles() as names:
        for n in range(1, 100):
            Xn, labels = res.sample(n, rng_key=n)
            assert Xn.shape == (n, 2) and labels.shape == (n,)
        for n in (3, 17, 64, 65, 99):
            res.predict(X[:n]), res.predict_proba(X[:n]), res.score_samples(X[:n])
            res.score(X[:n])
    assert names == [], f"compiled: {names}"


def test_seeds_of_any_size():
    X = _two_clusters(8)
    mix = bg.Mixture(2, "diag")
    a = mix.fit_em(X, rng_key=2**70 + 5, init="random")
    b = mix.fit_em(X, rng_key=5 + 2**64 * 64, init="random")  # equal modulo 2**64
    np.testing.assert_array_equal(a.means, b.means)
    mix.fit_em(X, rng_key=-1)
    mix.fit_em(X, rng_key=jax.random.key(3))
    mix.fit_em(X, rng_key=jax.random.PRNGKey(3))
    res = mix.fit_em(X)
    res.sample(3, rng_key=2**70)
    # 0 <= seed < 2**31: the key jax.random.PRNGKey(seed) makes.
    np.testing.assert_array_equal(
        res.sample(5, rng_key=7)[0], res.sample(5, rng_key=jax.random.PRNGKey(7))[0]
    )


def test_no_warning_on_ordinary_fit(faithful):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bg.Mixture(2, "full").fit_em(faithful)


# An outlier 1e25 away from data of unit spread: float32 holds it after centring and scaling.
def _with_outlier(big=1e25):
    rng = np.random.default_rng(5)
    return np.concatenate([rng.normal(0.0, 1.0, (60, 2)), [[big, 0.5]]])


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_extreme_outlier_named_or_fitted(precision, request):
    request.getfixturevalue("x64" if precision == "float64" else "f32")
    X = _with_outlier()
    # Maximum likelihood gives the outlier a component of its own, which collapses: the
    # message names the extreme range, not only "singular".
    with pytest.raises(ValueError, match="extreme range: column 0"):
        bg.Mixture(2, "full").fit_em(X)
    # With the default prior it fits: one component on the outlier, one on the bulk.
    res = bg.Mixture(2, "full", prior="default").fit_em(X)
    means = res.means[np.argsort(res.means[:, 0])]
    bulk = X[:-1].mean(0)
    assert abs(means[0, 1] - bulk[1]) < 0.05 and means[1, 0] > 1e24
    assert np.all(np.isfinite(res.covariances)) and np.isfinite(res.log_likelihood)


def test_default_prior_columns_on_different_scales(x64):
    # The prior's conditioning check is that of the correlation matrix: rescaling a column by
    # 1e20 changes nothing but the scale's units (it used to call the covariance singular).
    X = _two_clusters(2)
    s = np.array([1e20, 1.0])
    a = bg.Mixture(2, "full", prior="default").resolve_prior(X)
    b = bg.Mixture(2, "full", prior="default").resolve_prior(X * s)
    np.testing.assert_allclose(b.scale, a.scale * np.outer(s, s), rtol=1e-12)


def test_transform_from_streamed_moments_equals_fit_transform():
    # A streamed fit has the mean and per-column spread from its own pass: the same transform.
    from bayesgmm._transform import fit_transform, transform_from_moments

    X = _two_clusters(4) * [1e-3, 1e4] + [1e8, -2.0]
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(X))
    mean = np.average(X, axis=0, weights=w)
    std = np.sqrt(np.average((X - mean) ** 2, axis=0, weights=w))
    a, b = fit_transform(X, w), transform_from_moments(mean, std)
    np.testing.assert_allclose(b.shift, a.shift, rtol=1e-14)
    assert a.scale == b.scale
