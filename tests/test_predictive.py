"""Predictive draws, the log-prior group and posterior memberships against SciPy references.

The posterior trees here are mostly built by hand (``arviz_base.from_dict`` with the layout of
``Mixture.sample_posterior``) from parameters drawn with NumPy, so that the helpers are checked
against SciPy without running NUTS; one test runs the real sampler on tiny data.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

import bayesgmm as bg
from bayesgmm.predictive import (
    add_log_prior,
    add_posterior_predictive,
    log_prior_draws,
    prior_draws,
)

COV_DIMS = {
    "full": ["component", "feature", "feature_"],
    "tied": ["feature", "feature_"],
    "diag": ["component", "feature"],
    "spherical": ["component"],
}
LEVEL = 1e-3  # significance level of the distribution tests (fixed keys: deterministic)


def _random_draws(rng, s, k, d, ct):
    w = rng.dirichlet(np.full(k, 2.0), size=s)
    mu = rng.normal(0.0, 2.0, size=(s, k, d))
    if ct == "full":
        a = rng.normal(size=(s, k, d, d))
        cov = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d)
    elif ct == "tied":
        a = rng.normal(size=(s, d, d))
        cov = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d)
    elif ct == "diag":
        cov = rng.uniform(0.3, 2.0, size=(s, k, d))
    else:
        cov = rng.uniform(0.3, 2.0, size=(s, k))
    return {"weights": w, "means": mu, "covariances": cov}


def _full(cov, ct, k, d):
    """(K, D, D) covariances of one draw."""
    if ct == "full":
        return cov
    if ct == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if ct == "diag":
        return np.stack([np.diag(c) for c in cov])
    return np.stack([c * np.eye(d) for c in cov])


def _tree(draws, X, chains, ct):
    from arviz_base import from_dict

    k, d = draws["means"].shape[1:]
    post = {name: a.reshape((chains, -1) + a.shape[1:]) for name, a in draws.items()}
    dims = {
        "weights": ["component"],
        "means": ["component", "feature"],
        "covariances": COV_DIMS[ct],
        "obs": ["obs_id", "feature"],
    }
    coords = {
        "component": np.arange(k),
        "feature": np.arange(d),
        "feature_": np.arange(d),
        "obs_id": np.arange(X.shape[0]),
    }
    return from_dict({"posterior": post, "observed_data": {"obs": X}}, dims=dims, coords=coords)


# --------------------------------------------------------------------------- log prior


def _scipy_log_prior(draw, prior, ct):
    """log p(weights), log p(covariances), log p(means | covariances) with SciPy."""
    w, mu, cov = (np.asarray(draw[n], np.float64) for n in ("weights", "means", "covariances"))
    w = w / w.sum()  # float32 draws: SciPy checks the simplex to 1e-9
    k, d = mu.shape
    alpha, kappa, nu = (float(a) for a in (prior.alpha, prior.kappa, prior.dof))
    m0, psi = np.asarray(prior.mean, np.float64), np.asarray(prior.scale, np.float64)
    lw = stats.dirichlet.logpdf(w, np.full(k, alpha))
    full = _full(cov, ct, k, d)
    if ct == "full":
        lc = sum(stats.invwishart.logpdf(full[j], df=nu, scale=psi) for j in range(k))
    elif ct == "tied":
        lc = stats.invwishart.logpdf(cov, df=nu, scale=psi)
    elif ct == "diag":
        lc = np.sum(stats.invgamma.logpdf(cov, 0.5 * nu, scale=0.5 * psi))
    else:
        lc = np.sum(stats.invgamma.logpdf(cov, 0.5 * nu, scale=0.5 * psi))
    lm = sum(stats.multivariate_normal.logpdf(mu[j], m0, full[j] / kappa) for j in range(k))
    return lw, lc, lm


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_log_prior_group_matches_scipy(ct, x64):
    rng = np.random.default_rng(0)
    k, d, s = 3, 2, 6
    X = rng.normal(size=(30, d))
    prior = bg.Mixture(
        k, ct, prior=bg.Prior(weight_concentration=1.7, mean_precision=0.2)
    ).resolve_prior(X)
    draws = _random_draws(rng, s, k, d, ct)
    post = add_log_prior(_tree(draws, X, 2, ct), prior)
    group = post["log_prior"]
    assert set(group.data_vars) == {"weights", "means", "covariances"}
    for name in group.data_vars:
        assert group[name].dims == ("chain", "draw")
    got = {name: group[name].values.reshape(-1) for name in group.data_vars}
    for i in range(s):
        draw = {name: a[i] for name, a in draws.items()}
        lw, lc, lm = _scipy_log_prior(draw, prior, ct)
        np.testing.assert_allclose(got["weights"][i], lw, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got["covariances"][i], lc, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(got["means"][i], lm, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("ct", ["full", "spherical"])
def test_log_prior_draws_add_up_to_the_em_objective_prior(ct, x64):
    """The NumPy parts sum to ``priors.log_prior`` (the JAX prior term of the MAP-EM objective),
    and float32 draws (as a float32 sampler returns them) give nearly the same values."""
    import jax

    from bayesgmm.params import make_params
    from bayesgmm.priors import log_prior

    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 2))
    prior = bg.Mixture(2, ct, prior="default").resolve_prior(X)
    draws = _random_draws(rng, 4, 2, 2, ct)
    parts = log_prior_draws(draws, prior, ct)
    total = sum(parts.values())

    @jax.jit
    @jax.vmap
    def em_prior(w, mu, cov):
        return log_prior(make_params(w, mu, cov, ct), prior, ct)

    expected = em_prior(*(draws[n] for n in ("weights", "means", "covariances")))
    np.testing.assert_allclose(total, np.asarray(expected), rtol=1e-10)
    low = log_prior_draws({n: a.astype(np.float32) for n, a in draws.items()}, prior, ct)
    for name in parts:
        np.testing.assert_allclose(low[name], parts[name], rtol=1e-4, atol=1e-3)


# --------------------------------------------------------------------------- predictive


def _mixture_cdf_1d(x, w, mu, var):
    return np.sum(w * stats.norm.cdf((x[:, None] - mu) / np.sqrt(var)), axis=-1)


@pytest.mark.parametrize("ct", ["full", "spherical"])
def test_posterior_predictive_rows_follow_each_draws_mixture(ct):
    rng = np.random.default_rng(2)
    k, d, s, n = 2, 1, 400, 5
    draws = _random_draws(rng, s, k, d, ct)
    X = rng.normal(size=(n, d))
    post = add_posterior_predictive(_tree(draws, X, 2, ct), rng_key=3)
    obs = post["posterior_predictive"]["obs"]
    assert obs.dims == ("chain", "draw", "obs_id", "feature")
    assert obs.shape == (2, s // 2, n, d)
    reps = obs.values.reshape(s, n)
    var = _full(draws["covariances"][0], ct, k, d)  # shapes only
    var = np.stack(
        [np.diagonal(_full(c, ct, k, d), axis1=1, axis2=2)[:, 0] for c in draws["covariances"]]
    )
    # The probability integral transform of each row under its own draw's mixture is U(0, 1).
    u = np.stack(
        [
            _mixture_cdf_1d(reps[i], draws["weights"][i], draws["means"][i, :, 0], var[i])
            for i in range(s)
        ]
    )
    assert stats.kstest(u.ravel(), "uniform").pvalue > LEVEL
    # Different draws and rows differ (no reuse of one key).
    assert len(np.unique(reps)) == reps.size


def test_posterior_predictive_2d_full_moments():
    rng = np.random.default_rng(4)
    k, d = 2, 2
    one = _random_draws(rng, 1, k, d, "full")
    s, n = 50, 200  # one parameter set repeated: 10 000 rows of one mixture
    draws = {name: np.repeat(a, s, axis=0) for name, a in one.items()}
    post = add_posterior_predictive(_tree(draws, np.zeros((n, d)), 1, "full"), rng_key=0)
    rows = post["posterior_predictive"]["obs"].values.reshape(-1, d)
    w, mu, cov = one["weights"][0], one["means"][0], one["covariances"][0]
    mean = w @ mu
    second = sum(w[j] * (cov[j] + np.outer(mu[j], mu[j])) for j in range(k))
    total_cov = second - np.outer(mean, mean)
    m = len(rows)
    se = np.sqrt(np.diag(total_cov) / m)
    assert np.all(np.abs(rows.mean(axis=0) - mean) < 4.5 * se)
    np.testing.assert_allclose(np.cov(rows.T), total_cov, rtol=0.06, atol=0.03)


# --------------------------------------------------------------------------- membership


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_posterior_membership_against_scipy(ct, x64):
    rng = np.random.default_rng(5)
    k, d, s = 3, 2, 8
    draws = _random_draws(rng, s, k, d, ct)
    X = rng.normal(0.0, 2.0, size=(11, d))
    post = _tree(draws, X, 2, ct)
    m = bg.posterior_membership(post, X)
    resp = np.empty((s, len(X), k))
    for i in range(s):
        full = _full(draws["covariances"][i], ct, k, d)
        lp = np.stack(
            [
                np.log(draws["weights"][i, j])
                + stats.multivariate_normal.logpdf(X, draws["means"][i, j], full[j])
                for j in range(k)
            ],
            axis=1,
        )
        resp[i] = np.exp(lp - logsumexp(lp, axis=1, keepdims=True))
    np.testing.assert_allclose(m.mean, resp.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m["mean"].sum(axis=1), 1.0, rtol=1e-12)
    lo, hi = np.quantile(resp, [0.03, 0.97], axis=0)
    np.testing.assert_allclose(m.lower, lo, atol=1e-12)
    np.testing.assert_allclose(m.upper, hi, atol=1e-12)
    assert np.all(m.lower <= m.mean + 1e-12) and np.all(m.mean <= m.upper + 1e-12)
    assert m.prob == 0.94 and m["prob"] == 0.94
    narrow = bg.posterior_membership(post, X, prob=0.5)
    assert np.all(narrow.upper - narrow.lower <= m.upper - m.lower + 1e-12)


def test_posterior_membership_validation():
    rng = np.random.default_rng(6)
    draws = _random_draws(rng, 4, 2, 2, "full")
    X = rng.normal(size=(5, 2))
    post = _tree(draws, X, 1, "full")
    with pytest.raises(ValueError, match="prob"):
        bg.posterior_membership(post, X, prob=1.5)
    with pytest.raises(ValueError, match="feature"):
        bg.posterior_membership(post, X[:, :1])
    with pytest.raises(ValueError, match="posterior"):
        bg.posterior_membership({"prior": None}, X)
    before = X.copy()
    bg.posterior_membership(post, X)
    np.testing.assert_array_equal(X, before)


# --------------------------------------------------------------------------- prior predictive


def test_sample_prior_predictive_follows_the_declared_prior(x64):
    rng = np.random.default_rng(7)
    X = rng.normal([3.0, -1.0], [2.0, 0.5], size=(25, 2)) * 100.0
    k, d = 2, 2
    mix = bg.Mixture(k, "full", prior=bg.Prior(weight_concentration=2.0))
    tree = mix.sample_prior_predictive(X, num_samples=2000, rng_key=0)
    prior = tree["prior"]
    assert prior["weights"].dims == ("chain", "draw", "component")
    assert prior["means"].dims == ("chain", "draw", "component", "feature")
    assert prior["covariances"].dims == ("chain", "draw", "component", "feature", "feature_")
    assert prior["weights"].shape == (1, 2000, k)
    obs = tree["prior_predictive"]["obs"]
    assert obs.dims == ("chain", "draw", "obs_id", "feature")
    assert obs.shape == (1, 2000, 25, d)

    # The data-based defaults, computed here from X (Fraley & Raftery 2007).
    m0 = X.mean(axis=0)
    psi = np.cov(X.T) / k ** (2.0 / d)
    nu, kappa = d + 2.0, 0.01
    w = prior["weights"].values[0]
    mu = prior["means"].values[0]
    cov = prior["covariances"].values[0]
    # Weights: Dirichlet(2, 2), so w_0 ~ Beta(2, 2); mean 1/2, variance 1/20.
    assert stats.kstest(w[:, 0], stats.beta(2.0, 2.0).cdf).pvalue > LEVEL
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-12)
    # Covariances: InverseWishart(nu, psi); its (0, 0) entry is InvGamma((nu - D + 1)/2, psi/2)
    # and the mean is psi / (nu - D - 1) (the variance is infinite at nu = D + 2).
    for j in range(k):
        for e in range(d):
            ig = stats.invgamma(0.5 * (nu - d + 1), scale=0.5 * psi[e, e])
            assert stats.kstest(cov[:, j, e, e], ig.cdf).pvalue > LEVEL
    # Means given covariances: sqrt(kappa) chol(cov)^{-1} (mu - m0) ~ N(0, I).
    chol = np.linalg.cholesky(cov)
    z = np.linalg.solve(chol, (mu - m0)[..., None])[..., 0] * np.sqrt(kappa)
    for j in range(k):
        for e in range(d):
            assert stats.kstest(z[:, j, e], "norm").pvalue > LEVEL
    # Rows: the first coordinate of row 0 under its draw's mixture has a U(0, 1) PIT.
    x0 = obs.values[0, :, 0, 0]
    u = np.sum(w * stats.norm.cdf((x0[:, None] - mu[:, :, 0]) / np.sqrt(cov[:, :, 0, 0])), 1)
    assert stats.kstest(u, "uniform").pvalue > LEVEL


N_PRIOR = 4000


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_prior_draws_follow_the_declared_prior_for_every_type(ct):
    """Marginals of ``predictive.prior_draws`` (also SMC's start from the prior): weights
    Beta(alpha, (K-1) alpha), a variance InvGamma, and each mean standardised by its own variance
    and kappa N(0, 1)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 2)) * [1.0, 3.0]
    k, d = 3, 2
    prior = bg.Mixture(k, ct, prior="default").resolve_prior(x)
    draws = prior_draws(prior, k, ct, N_PRIOR, np.random.default_rng(1))
    alpha = float(prior.alpha)
    assert (
        stats.kstest(draws["weights"][:, 0], stats.beta(alpha, (k - 1) * alpha).cdf).pvalue > LEVEL
    )
    np.testing.assert_allclose(draws["weights"].sum(1), 1.0, rtol=1e-12)
    cov = draws["covariances"]
    dof = float(prior.dof)
    if ct in ("full", "tied"):
        # A diagonal entry of an inverse-Wishart(nu, Psi) matrix is InvGamma((nu - D + 1) / 2,
        # Psi_jj / 2).
        var = cov[:, 0, 0, 0] if ct == "full" else cov[:, 0, 0]
        ref = stats.invgamma((dof - d + 1) / 2, scale=float(prior.scale[0, 0]) / 2)
    elif ct == "diag":
        var = cov[:, 0, 0]
        ref = stats.invgamma(dof / 2, scale=float(np.asarray(prior.scale)[0]) / 2)
    else:
        var = cov[:, 0]
        ref = stats.invgamma(dof / 2, scale=float(prior.scale) / 2)
    assert stats.kstest(var, ref.cdf).pvalue > LEVEL
    standard = (draws["means"][:, 0, 0] - prior.mean[0]) * np.sqrt(float(prior.kappa) / var)
    assert stats.kstest(standard, stats.norm.cdf).pvalue > LEVEL


def test_sample_prior_predictive_1d_diag_and_validation():
    rng = np.random.default_rng(8)
    X = rng.normal(10.0, 3.0, size=40)
    prior = bg.Prior(mean=[0.0], scale=[2.0], degrees_of_freedom=5.0, mean_precision=0.5)
    mix = bg.Mixture(3, "diag", prior=prior)
    tree = mix.sample_prior_predictive(X, num_samples=1500, rng_key=1)
    cov = tree["prior"]["covariances"].values[0]  # (S, K, D)
    assert cov.shape == (1500, 3, 1)
    assert stats.kstest(cov[:, 1, 0], stats.invgamma(2.5, scale=1.0).cdf).pvalue > LEVEL
    mu = tree["prior"]["means"].values[0]
    z = mu[:, :, 0] / np.sqrt(cov[:, :, 0] / 0.5)
    assert stats.kstest(z.ravel(), "norm").pvalue > LEVEL
    again = mix.sample_prior_predictive(X, num_samples=1500, rng_key=1)
    np.testing.assert_array_equal(again["prior"]["means"].values, mu[None])
    with pytest.raises(ValueError, match="prior"):
        bg.Mixture(2).sample_prior_predictive(X)
    with pytest.raises(ValueError, match="num_samples"):
        mix.sample_prior_predictive(X, num_samples=0)


# --------------------------------------------------------------------------- the real sampler


def test_sample_posterior_adds_predictive_and_log_prior_groups():
    """Tiny NUTS run (the shapes of tests/test_nuts.py's quick runs, so compilations are shared)."""
    import arviz_stats

    X = (bg.datasets.load_galaxies() / 1000.0)[:, None]
    X = np.asarray(X, np.float64)
    mix = bg.Mixture(2, "spherical", prior="default")
    init = {"weights": [0.1, 0.9], "means": [[10.0], [21.0]], "covariances": [1.0, 5.0]}
    post = mix.sample_posterior(
        X,
        num_chains=2,
        num_warmup=50,
        num_samples=60,
        init=init,
        rng_key=0,
        posterior_predictive=True,
    )
    pp = post["posterior_predictive"]["obs"]
    assert pp.dims == ("chain", "draw", "obs_id", "feature")
    assert pp.shape == (2, 60, len(X), 1)
    assert np.all(np.isfinite(pp.values))
    # The log prior group is the joint log prior of each draw, which with the log-likelihood
    # makes the sampler's log density (lp = log prior + log-likelihood, up to the Jacobian, so
    # compare with the independent SciPy computation instead).
    lp = post["log_prior"]
    prior = mix.resolve_prior(X)
    ds = post["posterior"]
    for c, i in [(0, 0), (1, 59)]:
        draw = {name: ds[name].values[c, i] for name in ("weights", "means", "covariances")}
        ref = sum(_scipy_log_prior(draw, prior, "spherical"))
        total = sum(float(lp[name].values[c, i]) for name in lp.data_vars)
        np.testing.assert_allclose(total, ref, rtol=2e-5)  # float32 run
    sens = arviz_stats.psense(post, group="prior")
    assert set(sens.data_vars) == {"weights", "means", "covariances"}
    assert all(np.all(np.isfinite(sens[name].values)) for name in sens.data_vars)

    import arviz_plots as azp

    pc = azp.plot_ppc_dist(post, num_samples=20)
    assert pc is not None
    import matplotlib.pyplot as plt

    plt.close("all")
    without = mix.sample_posterior(
        X, num_chains=2, num_warmup=50, num_samples=60, init=init, rng_key=0
    )
    assert "posterior_predictive" not in without.children
    assert "log_prior" in without.children
    np.testing.assert_array_equal(without["posterior"]["means"], ds["means"])
