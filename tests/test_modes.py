"""Separated modes: found, weighed against independent references, and warned about.

Every posterior here is one-dimensional with two spherical components and 82 rows, the structure
of ``test_nuts``'s quick runs, so that the compiled sampler is shared (50 warm-up iterations).
The references are independent of the package: importance sampling with proposals fitted (by
SciPy optimisation) to each mode, a Gibbs sampler for the conjugate model, and symmetry.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import optimize, special, stats

import bayesgmm as bg
from bayesgmm.modes import compose, configuration_fractions, importance_masses
from bayesgmm.sampler import reference_prior

QUICK = dict(num_chains=2, num_warmup=50)


def _default_hyper(x, k=2):
    """mclust's default conjugate prior for 1-D data (Fraley & Raftery 2007), by hand."""
    return {"m0": x.mean(), "kappa": 0.01, "nu": 3.0, "psi": x.var(ddof=1) / k**2, "alpha": 1.0}


def _sample(X, **kwargs):
    options = dict(QUICK, rng_key=0)
    options.update(kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", bg.MultimodalPosteriorWarning)
        post = bg.Mixture(2, "spherical", prior="default").sample_posterior(X[:, None], **options)
    found = [w for w in caught if issubclass(w.category, bg.MultimodalPosteriorWarning)]
    return post, found


# --------------------------------------------------------------------------- references


def _log_post(theta, x, h):
    """Log posterior of (logit w1, mu1, mu2, log var1, log var2), Jacobian included."""
    u, m1, m2, v1, v2 = np.moveaxis(np.asarray(theta, np.float64), -1, 0)
    w1 = special.expit(u)
    s1, s2 = np.exp(v1), np.exp(v2)
    lik = np.logaddexp(
        np.log(w1)[..., None] + stats.norm.logpdf(x, m1[..., None], np.sqrt(s1)[..., None]),
        np.log1p(-w1)[..., None] + stats.norm.logpdf(x, m2[..., None], np.sqrt(s2)[..., None]),
    ).sum(-1)
    lp = (h["alpha"] - 1) * (np.log(w1) + np.log1p(-w1))
    for m, s in ((m1, s1), (m2, s2)):
        lp = lp + stats.invgamma.logpdf(s, h["nu"] / 2, scale=h["psi"] / 2)
        lp = lp + stats.norm.logpdf(m, h["m0"], np.sqrt(s / h["kappa"]))
    out = lik + lp + np.log(w1) + np.log1p(-w1) + v1 + v2
    return np.where(np.isfinite(out), out, -np.inf)


def _hessian(f, x, h=1e-4):
    n = len(x)
    e = np.eye(n) * h
    out = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            out[i, j] = (
                f(x + e[i] + e[j]) - f(x + e[i] - e[j]) - f(x - e[i] + e[j]) + f(x - e[i] - e[j])
            ) / (4 * h * h)
    return out


def importance_fraction(x, in_region, n_per_proposal=5000, seed=0):
    """Posterior probability of ``in_region`` by importance sampling: multivariate-t proposals
    at every local optimum (from a grid of starts) and at its label swap."""
    h = _default_hyper(x)

    def f(t):
        return -_log_post(t, x, h)

    qs = np.quantile(x, [0.02, 0.2, 0.5, 0.8, 0.98])
    optima = []
    with np.errstate(all="ignore"):
        for a in qs:
            for b in qs[qs > a]:
                t0 = np.array([0.0, a, b, np.log(h["psi"]), np.log(h["psi"])])
                r = optimize.minimize(f, t0, method="Nelder-Mead", options={"maxiter": 2000})
                r = optimize.minimize(f, r.x, method="BFGS")
                if np.isfinite(r.fun) and not any(np.allclose(r.x, o, atol=1e-2) for o in optima):
                    optima.append(r.x)
    swap = np.eye(5)[[0, 2, 1, 4, 3]] * np.array([-1.0, 1, 1, 1, 1])[:, None]
    proposals = []
    for o in optima:
        with np.errstate(all="ignore"):
            hess = _hessian(f, o)
        if not np.all(np.isfinite(hess)) or np.any(np.linalg.eigvalsh(hess) <= 0):
            continue
        cov = 1.5 * np.linalg.inv(hess)
        proposals += [(o, cov), (swap @ o, swap @ cov @ swap.T)]
    rng = np.random.default_rng(seed)
    dists = [stats.multivariate_t(m, c, df=4) for m, c in proposals]
    z = np.concatenate([d.rvs(n_per_proposal, random_state=rng) for d in dists])
    log_q = np.logaddexp.reduce([d.logpdf(z) for d in dists], axis=0) - np.log(len(dists))
    with np.errstate(all="ignore"):
        log_w = _log_post(z, x, h) - log_q
    w = np.exp(log_w - log_w.max())
    ess = w.sum() ** 2 / np.sum(w**2)
    return float(np.sum(w * in_region(z)) / w.sum()), float(ess)


def _in_mode_a(z, scale=1.0):
    """The smaller-mean component has weight < 0.2 and sd < 2000 km/s (``scale`` km/s units)."""
    u, m1, m2, v1, v2 = z.T
    first = m1 < m2
    w_small = np.where(first, special.expit(u), 1 - special.expit(u))
    sd_small = np.sqrt(np.exp(np.where(first, v1, v2)))
    return (w_small < 0.2) & (sd_small < 2000.0 / scale)


def _fraction_a(post, scale=1.0):
    w = post.posterior["weights"].values
    mu = post.posterior["means"].values[..., 0]
    var = post.posterior["covariances"].values
    var = var if var.ndim == 3 else var[..., 0, 0]
    i = np.argmin(mu, -1)[..., None]
    w_small = np.take_along_axis(w, i, -1)[..., 0]
    sd_small = np.sqrt(np.take_along_axis(var, i, -1)[..., 0])
    return float(np.mean((w_small < 0.2) & (sd_small < 2000.0 / scale)))


def gibbs(x, n_iter=4000, burn=500, seed=0):
    """Gibbs sampler of the conjugate 1-D two-component model (labels sorted by mean)."""
    h = _default_hyper(x)
    rng = np.random.default_rng(seed)
    k = 2
    mu = np.quantile(x, [0.25, 0.75])
    var = np.full(k, x.var())
    w = np.full(k, 0.5)
    out = []
    for it in range(n_iter):
        logp = np.log(w) + stats.norm.logpdf(x[:, None], mu, np.sqrt(var))
        p = np.exp(logp - logp.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        z = (rng.random(len(x))[:, None] > np.cumsum(p, 1)).sum(1)
        counts = np.bincount(z, minlength=k)
        w = rng.dirichlet(h["alpha"] + counts)
        for j in range(k):
            xj = x[z == j]
            nj = len(xj)
            xbar = xj.mean() if nj else 0.0
            kn = h["kappa"] + nj
            mn = (h["kappa"] * h["m0"] + nj * xbar) / kn
            ss = np.sum((xj - xbar) ** 2) + h["kappa"] * nj / kn * (xbar - h["m0"]) ** 2
            var[j] = stats.invgamma.rvs(
                (h["nu"] + nj) / 2, scale=(h["psi"] + ss) / 2, random_state=rng
            )
            mu[j] = rng.normal(mn, np.sqrt(var[j] / kn))
        if it >= burn:
            o = np.argsort(mu)
            out.append(np.concatenate([w[o], mu[o], var[o]]))
    return np.array(out)


# --------------------------------------------------------------------------- tests


def test_galaxies_mode_mass_against_importance_sampling():
    """Galaxies, K=2 (in thousands of km/s: the default prior scales with the data, so the mode
    masses are those of the raw data). Mode A holds ~18% of the mass; the sampler's fraction of
    draws in A agrees with importance sampling within 0.05."""
    x = bg.datasets.load_galaxies() / 1000.0
    reference, ess = importance_fraction(x, lambda z: _in_mode_a(z, 1000.0))
    assert ess > 2000, ess
    assert 0.1 < reference < 0.3, reference  # the bimodality this test is about
    post, found = _sample(x, num_samples=500)
    got = _fraction_a(post, 1000.0)
    print(f"galaxies K=2: fraction in mode A {got:.3f}, importance sampling {reference:.3f}")
    assert abs(got - reference) < 0.05
    assert found, "no MultimodalPosteriorWarning on a bimodal posterior"
    # the chains of the two modes disagree, so tempered SMC weighed their basins
    assert post.posterior.attrs["basin_weighting"] == "tempered SMC"
    assert "Tempered SMC" in str(found[0].message)
    message = str(found[0].message)
    masses = post.posterior.attrs["mode_masses"]
    assert post.posterior.attrs["multimodal"] == 1
    assert np.sum(masses) == pytest.approx(1.0)
    for m in masses[masses > 0.01]:
        assert f"mass {m:.3f}" in message
    # every draw says which mode it is in, and the draws agree with the reported masses
    mode = post.sample_stats["mode"].values
    for j, m in enumerate(masses):
        assert np.mean(mode == j) == pytest.approx(m, abs=0.02)


def test_basins_that_smc_cannot_weigh_are_reported_not_established(monkeypatch):
    """When the SMC start would be too costly (here: a work bound of zero) the chains' basins are
    not weighed: the run falls back to the importance-sampling masses and says so."""
    from bayesgmm import basins

    monkeypatch.setattr(basins, "MAX_BASE_WORK", 0)
    x = bg.datasets.load_galaxies() / 1000.0
    post, found = _sample(x, num_samples=300)
    assert post.posterior.attrs["basin_weighting"] == "failed"
    assert "work bound" in post.posterior.attrs["basin_weighting_error"]
    assert found and "could not weigh their basins" in str(found[0].message)
    assert np.sum(post.posterior.attrs["mode_masses"]) == pytest.approx(1.0)


@pytest.mark.slow
def test_galaxies_mode_mass_with_the_defaults():
    x = bg.datasets.load_galaxies()
    reference, _ = importance_fraction(x / 1000.0, lambda z: _in_mode_a(z, 1000.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", bg.MultimodalPosteriorWarning)
        post = bg.Mixture(2, prior="default").sample_posterior(x)
    got = _fraction_a(post)
    print(
        f"galaxies K=2 defaults: fraction in mode A {got:.3f}, importance sampling {reference:.3f}"
    )
    assert abs(got - reference) < 0.05
    assert any(issubclass(w.category, bg.MultimodalPosteriorWarning) for w in caught)


def test_symmetric_bimodal_posterior_is_split_evenly_and_warned():
    """Three equal, evenly spaced clusters and two components: grouping the left pair or the
    right pair are mirror images, two modes of equal mass."""
    rng = np.random.default_rng(4)
    left = rng.normal(0.0, 0.5, 27)
    half = rng.normal(5.0, 0.5, 14)
    x = np.concatenate([left, half, 10.0 - half, 10.0 - left])
    post, found = _sample(x, num_samples=300)
    assert found
    masses = np.sort(post.posterior.attrs["mode_masses"])[::-1]
    assert masses[:2] == pytest.approx([0.5, 0.5], abs=0.1)
    assert "2 separated modes" in str(found[0].message)
    assert post.posterior.attrs["n_modes"] == 2
    # bg.compare marks the table
    res = bg.Mixture(2, "spherical", prior="default").fit_em(x[:, None])
    with pytest.warns(bg.MultimodalPosteriorWarning):
        table = bg.compare(res, post)
    assert table.attrs["multimodal"]
    assert "mode 0" in table.attrs["caption"]


def test_unimodal_posterior_matches_gibbs_without_warning():
    """Two well separated clusters: one mode; NUTS agrees with a Gibbs sampler written here."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0.0, 1.0, 30), rng.normal(8.0, 1.5, 52)])
    post, found = _sample(x, num_chains=2, num_samples=1000)
    assert not found, [str(w.message) for w in found]
    assert post.posterior.attrs["multimodal"] == 0
    w = post.posterior["weights"].values.reshape(-1, 2)
    mu = post.posterior["means"].values.reshape(-1, 2)
    var = post.posterior["covariances"].values.reshape(-1, 2)
    o = np.argsort(mu, 1)
    nuts = np.concatenate([np.take_along_axis(a, o, 1) for a in (w, mu, var)], axis=1)  # (draws, 6)
    ref = gibbs(x)
    # Monte Carlo standard errors with generous effective sizes (NUTS ~ >= 300 here, Gibbs
    # draws mildly autocorrelated): a z-score above 5 is a real disagreement.
    se = np.sqrt(nuts.var(0) / 300 + ref.var(0) / 500)
    z = (nuts.mean(0) - ref.mean(0)) / se
    assert np.all(np.abs(z) < 5), z
    np.testing.assert_allclose(nuts.std(0), ref.std(0), rtol=0.25)


def test_empty_component_gets_a_valid_start():
    """A component far from every row gets no data in the E-step. With a flat Dirichlet (the
    default) its MAP weight (n_k + alpha - 1) / (n + K (alpha - 1)) is exactly 0 and EM fails;
    the reference prior keeps it tiny but positive, with a valid estimate, and the chains start
    from it."""
    x = bg.datasets.load_galaxies()[:, None] / 1000.0
    empty = {"weights": [0.5, 0.5], "means": [[20.0], [400.0]], "covariances": [20.0, 20.0]}
    with pytest.raises(ValueError, match="singular"):
        bg.Mixture(2, "spherical", prior="default").fit_em(x, init_params=empty, max_iter=1)
    prior = bg.Mixture(2, "spherical", prior="default").resolve_prior(x)
    ref = reference_prior(prior)
    assert 1.0 < float(ref.alpha) < 1.01
    explicit = bg.Prior(weight_concentration=float(ref.alpha))
    res = bg.Mixture(2, "spherical", prior=explicit).fit_em(x, init_params=empty, max_iter=1)
    w = np.asarray(res.weights)
    assert np.all(np.isfinite(np.asarray(res.covariances)))
    assert np.all(np.asarray(res.covariances) > 0)
    assert 0.0 < w.min() < 1e-3
    post, _ = _sample(x[:, 0], init=res, num_samples=60)
    for name in ("weights", "means", "covariances"):
        assert np.all(np.isfinite(post.posterior[name].values))


def test_compose_gives_every_chain_the_mode_masses():
    rng = np.random.default_rng(6)
    chain_mode = np.array([[0, 0, 1], [1, 1, 1]])  # (runs, chains): run 0 chain 2 moved to mode 1
    idx = compose(rng, chain_mode, {0: 0.237, 1: 0.763}, num_chains=4, num_samples=1000)
    assert idx.shape == (4, 1000, 3)
    np.testing.assert_array_equal(idx[..., 2], np.broadcast_to(np.arange(1000), (4, 1000)))
    in_mode0 = chain_mode[idx[..., 0], idx[..., 1]] == 0
    np.testing.assert_array_equal(in_mode0.sum(1), 237)
    # the draws of one output chain come from one source chain per mode
    for c in range(4):
        assert len({tuple(p) for p in idx[c, in_mode0[c], :2]}) == 1


def test_compose_never_leaves_draws_unfilled_when_masses_are_unusable():
    """NaN masses (importance sampling that found nothing to weigh) once left the composed
    indices uninitialised (an SBC replicate of K=3, D=2, diag crashed on them); now the
    occupied modes share the draws and every index points at a real draw."""
    rng = np.random.default_rng(0)
    chain_mode = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    idx = compose(rng, chain_mode, {0: np.nan, 1: np.nan}, num_chains=4, num_samples=50)
    assert idx.min() >= 0
    assert np.all(idx[..., 0] < 3) and np.all(idx[..., 1] < 4) and np.all(idx[..., 2] < 50)


def test_importance_masses_with_no_finite_weight_are_not_established():
    rng = np.random.default_rng(1)
    draws = {"weights": rng.dirichlet([2, 2], size=40), "means": rng.normal(size=(40, 2, 1))}
    out = importance_masses(
        rng,
        {0: draws, 1: draws},
        unconstrain=lambda d: np.concatenate([d["weights"][:, :1], d["means"][:, :, 0]], 1),
        constrain=lambda z: {
            "weights": np.full((len(z), 2), 0.5),
            "means": z[:, 1:3, None],
            "covariances": np.ones((len(z), 2, 1)),
        },
        log_density=lambda z: np.full(len(z), -np.inf),  # the potential overflowed everywhere
        X_rows=rng.normal(size=(10, 1)),
        configurations=np.stack([np.tile([0.9, 0.1], (10, 1)), np.tile([0.1, 0.9], (10, 1))]),
        roots=np.array([0, 1]),
        covariance_type="diag",
    )
    masses, ess = out
    assert all(np.isnan(v) for v in masses.values())
    assert ess == {0: 0.0, 1: 0.0}


def test_configuration_fractions_count_every_chain_of_a_mode():
    """Chains from two references that settle in one mode all count, not only the first run's
    (the returned draws hold ``num_chains`` of them): galaxies K=4 with key 0 read 0.001 for a
    configuration that other chains visit and an independent Gibbs sampler puts at 0.06
    (``benchmarks/mode_reference.py``). Expected fractions counted by hand."""
    nearest = np.array([[[0, 0, 0, 0], [0, 0, 1, 1]], [[2, 2, 2, 2], [1, 1, 1, 1]]])
    one_mode = configuration_fractions(nearest, np.zeros((2, 2), int), {0: 1.0}, 3)
    np.testing.assert_allclose(one_mode, [6 / 16, 6 / 16, 4 / 16])
    # Two modes: each mode's chains give its own fractions, weighed by the mode masses.
    two_modes = configuration_fractions(nearest, np.array([[0, 0], [2, 2]]), {0: 0.25, 2: 0.75}, 3)
    np.testing.assert_allclose(two_modes, [0.25 * 0.75, 0.25 * 0.25 + 0.75 * 0.5, 0.75 * 0.5])
