"""bayesgmm.sklearn against scikit-learn: its estimator checks and its own GaussianMixture.

References: ``sklearn.mixture.GaussianMixture`` started from the same ``weights_init``,
``means_init`` and ``precisions_init`` (rtol 1e-8, with an absolute floor of 1e-8 x the largest
entry, on weights, means and covariances; n_iter_ and converged_ equal; lower_bound_ to 1e-10),
scipy densities for the posterior averages, and scikit-learn's own tools (Pipeline,
GridSearchCV, clone, check_estimator). JAX's global x64 flag is left off here (the default):
the estimators must compute in float64 for float64 input on their own.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import bayesgmm as bg
from bayesgmm.sklearn import GaussianMixture, PosteriorGaussianMixture

RTOL = 1e-8
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def _sk_init(ref, X, k, covariance_type, seed=1):
    return ref.init_params(X, k, covariance_type, seed=seed)[1]


@pytest.fixture(autouse=True)
def _x64_off():
    """Every test starts with JAX's default float32 mode and must leave it so."""
    previous = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", False)
    yield
    assert not jax.config.jax_enable_x64, "the estimator changed JAX's global x64 flag"
    jax.config.update("jax_enable_x64", previous)


# --------------------------------------------------------------------------- estimator checks


@parametrize_with_checks([GaussianMixture()])
def test_check_estimator(estimator, check):
    check(estimator)


# The default suite runs slow tests too; these checks compile EM and NUTS programs for every
# data shape scikit-learn's checks use (minutes), so they run on request only.
full_checks = pytest.mark.skipif(
    os.environ.get("BAYESGMM_SKLEARN_CHECKS") != "1",
    reason="estimator checks with a prior and by NUTS take minutes: BAYESGMM_SKLEARN_CHECKS=1",
)


@pytest.mark.slow
@full_checks
@parametrize_with_checks(
    [
        GaussianMixture(prior="default"),
        PosteriorGaussianMixture(num_chains=1, num_warmup=50, num_samples=50),
    ]
)
def test_check_estimator_prior_and_posterior(estimator, check):
    check(estimator)


def test_import_bayesgmm_does_not_import_sklearn():
    # Every public name loaded (bayesgmm's names load on first use), and a fit run.
    code = (
        "import sys, bayesgmm as bg\n"
        "names = [getattr(bg, n) for n in bg.__all__]\n"
        "bg.Mixture(1).fit_em([[0.0], [1.0], [2.0]], max_iter=2)\n"
        "assert 'sklearn' not in sys.modules, sorted(m for m in sys.modules if 'sklearn' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- vs scikit-learn


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_matches_sklearn_from_given_init(ref, faithful, covariance_type):
    X, k = faithful, 3
    sk_init = _sk_init(ref, X, k, covariance_type)
    # Not converged (tol=0 runs all 100 iterations), then converged; one compiled program.
    for tol in (0.0, 1e-3):
        kw = dict(covariance_type=covariance_type, tol=tol, **sk_init)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            ours = GaussianMixture(k, **kw).fit(X)
        expected = SkGaussianMixture(k, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            expected.fit(X)
        warned = any(issubclass(w.category, ConvergenceWarning) for w in caught)
        assert warned == (not expected.converged_)
        assert ours.n_iter_ == expected.n_iter_
        assert ours.converged_ == expected.converged_
        np.testing.assert_allclose(ours.lower_bound_, expected.lower_bound_, rtol=1e-10)
        for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
            got = getattr(ours, name)
            assert got.dtype == np.float64, name
            ref.assert_close(got, getattr(expected, name), RTOL, name)
        np.testing.assert_allclose(ours.score_samples(X), expected.score_samples(X), rtol=1e-10)
        np.testing.assert_allclose(ours.bic(X), expected.bic(X), rtol=1e-10)
        np.testing.assert_allclose(ours.aic(X), expected.aic(X), rtol=1e-10)
    assert expected.converged_  # the second pass did test a converged fit


def test_tol_decides_iterations_as_sklearn(ref, blobs3d):
    """n_iter_ follows scikit-learn's test on the change of the lower bound, for several tol."""
    sk_init = _sk_init(ref, blobs3d, 3, "full", seed=2)
    for tol in (1e-1, 1e-3, 1e-6):
        ours = GaussianMixture(3, tol=tol, **sk_init).fit(blobs3d)
        expected = SkGaussianMixture(3, tol=tol, **sk_init).fit(blobs3d)
        assert (ours.n_iter_, ours.converged_) == (expected.n_iter_, expected.converged_), tol
        np.testing.assert_allclose(ours.lower_bound_, expected.lower_bound_, rtol=1e-10)


def test_max_iter_one_lower_bound_is_the_start(ref, faithful):
    sk_init = _sk_init(ref, faithful, 3, "full")
    expected = SkGaussianMixture(3, max_iter=1, **sk_init)
    with pytest.warns(ConvergenceWarning):
        ours = GaussianMixture(3, max_iter=1, **sk_init).fit(faithful)
    with pytest.warns(ConvergenceWarning):
        expected.fit(faithful)
    assert ours.n_iter_ == expected.n_iter_ == 1
    np.testing.assert_allclose(ours.lower_bound_, expected.lower_bound_, rtol=1e-10)
    ref.assert_close(ours.means_, expected.means_, RTOL)


def test_warm_start_continues_like_sklearn(ref, faithful):
    """Fit after fit, both continue from the last parameters and lower bound."""
    sk_init = _sk_init(ref, faithful, 3, "full", seed=3)
    # One iteration per fit (the programs of test_max_iter_one_lower_bound_is_the_start).
    kw = dict(max_iter=1, tol=1e-2, warm_start=True, **sk_init)
    ours, expected = GaussianMixture(3, **kw), SkGaussianMixture(3, **kw)
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(6):
            ours.fit(faithful)
            expected.fit(faithful)
            assert (ours.n_iter_, ours.converged_) == (expected.n_iter_, expected.converged_)
            np.testing.assert_allclose(ours.lower_bound_, expected.lower_bound_, rtol=1e-10)
            ref.assert_close(ours.means_, expected.means_, RTOL)
            ref.assert_close(ours.covariances_, expected.covariances_, RTOL)
            seen.add((ours.n_iter_, ours.converged_))
    # Both regimes happened: runs cut at max_iter, and a converged continuation.
    assert (1, False) in seen and any(converged for _, converged in seen), seen


def test_max_iter_zero_returns_the_initialisation(ref, faithful):
    sk_init = _sk_init(ref, faithful, 3, "full")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # sklearn does not warn either
        ours = GaussianMixture(3, max_iter=0, **sk_init).fit(faithful)
        # scikit-learn 1.9 fails on max_iter=0 with precisions_init (no covariances_ to
        # return), so its attributes are read from a start with the other two given.
        sk_init.pop("precisions_init")
        expected = SkGaussianMixture(3, max_iter=0, random_state=0, **sk_init).fit(faithful)
    assert ours.n_iter_ == expected.n_iter_ == 0
    assert ours.converged_ is expected.converged_ is False
    assert ours.lower_bound_ == expected.lower_bound_ == -np.inf
    np.testing.assert_array_equal(ours.means_, sk_init["means_init"])
    np.testing.assert_allclose(ours.weights_, sk_init["weights_init"], rtol=1e-14)  # renormalised
    ref.assert_close(ours.precisions_, _sk_init(ref, faithful, 3, "full")["precisions_init"], 1e-12)


def test_means_init_alone(ref, blobs3d):
    """The other parameters come from init_params' M-step, as scikit-learn's do.

    On well-separated blobs both k-means runs find the same partition, so the weights and
    covariances of the start match scikit-learn's, while the means are the given ones.
    """
    means = np.array([[0.5, 0.2, 0.1], [3.5, 1.0, -1.5], [-2.5, 3.5, 1.5]])
    kw = dict(means_init=means, max_iter=0, random_state=0)
    ours = GaussianMixture(3, **kw).fit(blobs3d)
    expected = SkGaussianMixture(3, **kw).fit(blobs3d)
    # Given means travel through the fit's centring and scaling and back: equal to round-off.
    np.testing.assert_allclose(ours.means_, means, rtol=1e-15, atol=1e-15)
    order = np.argsort(expected.weights_)
    ref.assert_close(np.sort(ours.weights_), expected.weights_[order], RTOL)
    ref.assert_close(
        ours.covariances_[np.argsort(ours.weights_)], expected.covariances_[order], RTOL
    )
    # weights_init and precisions_init without means_init are kept as given.
    init = _sk_init(ref, blobs3d, 3, "full")
    init.pop("means_init")
    ours = GaussianMixture(3, max_iter=0, **init).fit(blobs3d)
    ref.assert_close(ours.precisions_, init["precisions_init"], 1e-10)
    np.testing.assert_allclose(ours.weights_, init["weights_init"], rtol=1e-14)


def test_init_params_kmeanspp_spelling(faithful):
    X = StandardScaler().fit_transform(faithful)
    gm = GaussianMixture(2, init_params="k-means++", n_init=2, random_state=0).fit(X)
    # Old Faithful's two clusters (standardised eruption means about -1.26 and 0.70).
    np.testing.assert_allclose(np.sort(gm.means_[:, 0]), [-1.26, 0.70], atol=0.05)
    assert gm.converged_


# --------------------------------------------------------------------------- dtypes


def test_dtype_follows_input_and_flag_is_left_alone(ref, faithful):
    """float64 in, float64 out with x64 off; float32 in, float32 out with x64 on.

    The float64 fit runs after a float32 fit of the same shapes: it must not reuse the float32
    program (it matches scikit-learn to 1e-8, which float32 cannot).
    """
    sk_init = _sk_init(ref, faithful, 2, "full")
    X32 = faithful.astype(np.float32)
    gm32 = GaussianMixture(2, **sk_init).fit(X32)
    assert gm32.means_.dtype == gm32.covariances_.dtype == np.float32
    assert gm32.predict_proba(X32).dtype == gm32.score_samples(X32).dtype == np.float32
    gm64 = GaussianMixture(2, **sk_init).fit(faithful)
    expected = SkGaussianMixture(2, **sk_init).fit(faithful)
    assert gm64.predict_proba(faithful).dtype == np.float64
    ref.assert_close(gm64.covariances_, expected.covariances_, RTOL)
    ref.assert_close(gm32.covariances_, expected.covariances_, 1e-4)
    jax.config.update("jax_enable_x64", True)
    try:
        again = GaussianMixture(2, **sk_init).fit(X32)
        assert jax.config.jax_enable_x64
        assert again.means_.dtype == np.float32
        np.testing.assert_array_equal(again.means_, gm32.means_)
    finally:
        jax.config.update("jax_enable_x64", False)


# --------------------------------------------------------------------------- scikit-learn tools


def test_pipeline_gridsearch_clone_pickle(faithful):
    # The settings and data shapes of examples/sklearn_pipeline.py's test run (2 folds of 136
    # rows, the refit on 272, prior="default", n_init=2): the compiled programs are shared.
    X = faithful
    est = GaussianMixture(n_init=2, random_state=0, prior="default")
    pipe = Pipeline([("scale", StandardScaler()), ("gmm", clone(est).set_params(n_components=2))])
    pipe.fit(X)
    Z = StandardScaler().fit_transform(X)
    np.testing.assert_allclose(pipe.score(X), pipe["gmm"].score(Z), rtol=1e-12)

    # The default score of a search is the mean log-likelihood of the held-out rows.
    cv = KFold(2, shuffle=True, random_state=0)
    search = GridSearchCV(est, {"n_components": [1, 2]}, cv=cv)
    search.fit(Z)
    assert search.best_params_ == {"n_components": 2}
    scores = [
        clone(est).set_params(n_components=2).fit(Z[tr]).score(Z[te]) for tr, te in cv.split(Z)
    ]
    np.testing.assert_allclose(search.cv_results_["mean_test_score"][1], np.mean(scores))
    np.testing.assert_allclose(
        cross_val_score(clone(est).set_params(n_components=2), Z, cv=cv), scores, rtol=1e-12
    )

    gm = search.best_estimator_
    loaded = pickle.loads(pickle.dumps(gm))
    np.testing.assert_array_equal(loaded.predict_proba(Z), gm.predict_proba(Z))
    np.testing.assert_array_equal(loaded.score_samples(Z), gm.score_samples(Z))
    assert loaded.predict_proba(Z).dtype == np.float64
    assert isinstance(gm.fitted_, bg.FitResult) and isinstance(gm.mixture_, bg.Mixture)


def test_validation_errors(faithful):
    gm = GaussianMixture(2)
    with pytest.raises(NotFittedError):
        gm.predict(faithful)
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(5).fit(faithful[:4])
    with pytest.raises(ValueError, match="init_params"):
        GaussianMixture(2, init_params="kmeans+").fit(faithful)
    with pytest.raises(ValueError, match="means_init"):
        GaussianMixture(2, means_init=np.zeros((3, 2))).fit(faithful)
    gm.fit(faithful)
    with pytest.raises(ValueError, match="features"):
        gm.predict(np.hstack([faithful, faithful]))


def test_dataframe_feature_names(faithful):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(faithful, columns=["eruptions", "waiting"])
    gm = GaussianMixture(2, random_state=0).fit(df)
    assert list(gm.feature_names_in_) == ["eruptions", "waiting"]
    with pytest.warns(UserWarning, match="feature names"):
        gm.predict(faithful)


def test_verbose_prints(faithful, capsys):
    GaussianMixture(2, verbose=2, verbose_interval=2, random_state=0).fit(faithful)
    out = capsys.readouterr().out
    assert "Initialization 0" in out and "Iteration 2" in out and "converged" in out


# --------------------------------------------------------------------------- posterior


@pytest.mark.slow  # compiling NUTS
def test_posterior_averages_over_draws(ref, faithful):
    X = StandardScaler().fit_transform(faithful)
    post = PosteriorGaussianMixture(
        2, num_chains=1, num_warmup=60, num_samples=40, random_state=0
    ).fit(X)
    draws = post.posterior_["posterior"]
    w = draws["weights"].values.reshape(-1, 2)
    m = draws["means"].values.reshape(-1, 2, 2)
    c = draws["covariances"].values.reshape(-1, 2, 2, 2)
    # scipy: log of the average density over the draws, and the average responsibilities.
    lp = np.stack([ref.component_log_densities(X, *p, "full") for p in zip(w, m, c, strict=True)])
    dens = logsumexp(lp, axis=2)
    expected_score = logsumexp(dens, axis=0) - np.log(len(w))
    expected_proba = np.mean(np.exp(lp - dens[:, :, None]), axis=0)
    np.testing.assert_allclose(post.score_samples(X), expected_score, rtol=1e-9)
    np.testing.assert_allclose(post.predict_proba(X), expected_proba, atol=1e-9)
    np.testing.assert_array_equal(post.predict(X), np.argmax(expected_proba, axis=1))
    np.testing.assert_allclose(post.means_, m.mean(axis=0), rtol=1e-12)
    assert post.means_.dtype == np.float64
    with pytest.raises(ValueError, match="prior"):
        PosteriorGaussianMixture(2, prior=None).fit(X)


# --------------------------------------------------------------------------- the core API


def test_core_partial_init_params_and_max_iter_zero(ref, faithful):
    means = np.array([[2.0, 55.0], [4.5, 80.0]])
    with jax.enable_x64(True):
        res = bg.Mixture(2).fit_em(faithful, init_params={"means": means}, max_iter=0)
        assert res.n_iter == 0 and not res.converged
        np.testing.assert_allclose(np.asarray(res.means), means, rtol=1e-15, atol=1e-15)
        # max_iter=0 scores the start: scipy's log-likelihood of the returned parameters.
        p = ref.as_np(res)
        expected = ref.log_likelihood(faithful, p["weights"], means, p["covariances"], "full")
        np.testing.assert_allclose(res.log_likelihood, expected, rtol=1e-10)


def test_core_kmeanspp_alias_and_float32_round_trip(faithful):
    mix = bg.Mixture(3, covariance_type="tied")
    a = mix.fit_em(faithful, init="k-means++", max_iter=5, rng_key=3)
    b = mix.fit_em(faithful, init="kmeans++", max_iter=5, rng_key=3)
    np.testing.assert_array_equal(np.asarray(a.covariances), np.asarray(b.covariances))
    # Parameters are float64 in both modes (mapped back to the data's units on the host).
    assert a.covariances.dtype == np.float64
    # A float32 fit's own parameters are accepted as a start (symmetric to float32 precision).
    again = mix.fit_em(faithful, init_params=a.params, max_iter=5)
    assert np.isfinite(again.log_likelihood)
    # A float64 matrix asymmetric beyond float64 precision is still refused.
    bad = dict(a.params)
    cov = np.asarray(a.covariances, np.float64)
    bad["covariances"] = cov + np.array([[0.0, 1e-6], [0.0, 0.0]]) * np.abs(cov).max()
    with pytest.raises(ValueError, match="symmetric"):
        mix.fit_em(faithful, init_params=bad)


@pytest.mark.slow  # 180 000 rows, to reach the threaded E-step
def test_float64_in_the_threaded_e_step(ref):
    """Large fits share the E-step among threads, which must compute in float64 too.

    JAX's ``enable_x64`` context is thread-local; the worker threads get the caller's setting.
    """
    rng = np.random.default_rng(5)
    X = np.concatenate([rng.normal(size=(90_000, 3)), 2 * rng.normal(size=(90_000, 3)) + 4])
    init = dict(
        weights_init=np.full(4, 0.25),
        means_init=np.array([[0.0, 0, 0], [4, 4, 4.1], [1, 1, 1], [3, 3, 3]]),
        precisions_init=np.stack([np.eye(3)] * 4),
    )
    kw = dict(max_iter=5, tol=0.0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = GaussianMixture(4, **kw).fit(X)
        expected = SkGaussianMixture(4, **kw).fit(X)
    ref.assert_close(ours.means_, expected.means_, RTOL)
    ref.assert_close(ours.covariances_, expected.covariances_, RTOL)
