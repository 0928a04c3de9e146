"""Tempered SMC (bayesgmm.smc) against closed forms, and its use by the sampler (bayesgmm.basins).

The reference is independent of the package: the conjugate normal-inverse-gamma model (one
component), whose marginal likelihood and posterior moments are known in closed form. SMC from
the prior starts from ``predictive.prior_draws``, tested against scipy in ``test_predictive.py``.
Float64 only: the package runs SMC in float64 whatever the sampler's precision.
"""

import numpy as np
import pytest
from scipy.special import gammaln

import bayesgmm as bg
from bayesgmm import basins, smc


def _prior(x, k, ct):
    return bg.Mixture(k, ct, prior="default").resolve_prior(x, np.ones(len(x)))


def _nig_log_evidence(x, prior):
    """log p(x) of x_i ~ N(mu, s2), mu | s2 ~ N(m0, s2 / kappa), s2 ~ InvGamma(nu / 2, psi / 2)."""
    m0, k0, nu = float(prior.mean[0]), float(prior.kappa), float(prior.dof)
    psi = float(np.ravel(prior.scale)[0])
    n, xb = len(x), float(x.mean())
    ss = float(((x - xb) ** 2).sum())
    kn, nun = k0 + n, nu + n
    psin = psi + ss + k0 * n / kn * (xb - m0) ** 2
    log_z = gammaln(nun / 2) - gammaln(nu / 2) + 0.5 * nu * np.log(psi) - 0.5 * nun * np.log(psin)
    log_z += 0.5 * np.log(k0 / kn) - 0.5 * n * np.log(np.pi)
    return log_z, (k0 * m0 + n * xb) / kn, psin / (nun - 2)  # evidence, E[mu], E[s2]


@pytest.mark.parametrize("ct", ["full", "diag"])
def test_evidence_and_posterior_of_the_conjugate_one_component_model(ct):
    """One component in 1-D is the normal-inverse-gamma model: SMC from the prior recovers its
    log marginal likelihood (within 0.15 nats, several times the run-to-run spread) and the
    posterior means of mu and s2 (within 5 Monte Carlo standard errors of 2000 particles)."""
    rng = np.random.default_rng(2)
    x = rng.normal(2.0, 1.5, (40, 1))
    prior = _prior(x, 1, ct)
    res = smc.tempered_smc(x, np.ones(40), prior, 1, ct, 0, smc.SMCSettings(2000))
    log_z, mu, s2 = _nig_log_evidence(x[:, 0], prior)
    assert res.log_evidence == pytest.approx(log_z, abs=0.15)
    assert res.betas[0] == 0.0 and res.betas[-1] == 1.0
    assert np.all(np.diff(res.betas) > 0)
    mu_draws = res.params["means"][:, 0, 0]
    var_draws = res.params["covariances"].reshape(len(mu_draws))
    # the constrained draws are the flat particles' (potential.pack: covariance entry, then mean)
    np.testing.assert_allclose(mu_draws, res.particles[:, 1])
    se_mu = mu_draws.std() / np.sqrt(len(mu_draws) / 4)  # resampled particles: ESS ~ N / 4
    assert abs(mu_draws.mean() - mu) < 5 * se_mu
    se_var = var_draws.std() / np.sqrt(len(var_draws) / 4)
    assert abs(var_draws.mean() - s2) < 5 * se_var


def test_chains_of_one_basin_are_grouped_and_others_kept_apart():
    rng = np.random.default_rng(4)
    a = rng.normal(0.0, 1.0, (3, 400, 5))  # three chains of one basin
    b = rng.normal(0.0, 1.0, (2, 400, 5)) + np.array([0, 0, 6.0, 0, 0])  # two of another
    groups = basins.group_chains(np.concatenate([a, b]))
    assert list(groups) == [0, 0, 0, 3, 3]
