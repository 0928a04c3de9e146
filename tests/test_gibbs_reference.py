"""The many-chain Gibbs reference (``gibbs_reference.gibbs_chains``) against its exact posterior.

With two clusters a hundred standard deviations apart every allocation is certain after the
first sweep, so the posterior is the product of a Dirichlet and one normal-inverse-Wishart
(full) or one normal-inverse-gamma per feature (diag) per cluster, known in closed form (Murphy
2012, sec. 4.6.3): the sampler's means of the weights, the component means and the covariances
must match it to Monte-Carlo error. It is what
``benchmarks/mode_reference.py`` compares ``sample_posterior``'s mode masses with.
"""

from __future__ import annotations

import numpy as np
from gibbs_reference import gibbs_chains, prior_dict

N_CHAINS = 8


def _separated_draws(seed: int, scale: np.ndarray, covariance_type: str):
    """Two clusters far apart, sampled from near the true split; draws labelled by position.

    Each chain starts at the true split with five rows misallocated: the first sweep must move
    them (from random allocations a component can empty and stay empty, a state of negligible
    posterior mass that a Gibbs sampler does not leave). Returns the clusters, the prior and
    the weights, means and covariances of every draw, cluster ``a`` (smaller first mean
    coordinate) first.
    """
    rng = np.random.default_rng(seed)
    a = rng.normal([0.0, 0.0], [1.0, 2.0], size=(30, 2))
    b = rng.normal([100.0, 50.0], [3.0, 1.0], size=(20, 2))
    X = np.concatenate([a, b])
    prior = prior_dict(alpha=1.5, kappa=0.01, mean=X.mean(0), dof=4.0, scale=scale)
    z0 = np.repeat([[0] * len(a) + [1] * len(b)], N_CHAINS, axis=0)
    for row in z0:
        flip = rng.choice(len(X), size=5, replace=False)
        row[flip] = 1 - row[flip]
    draws = gibbs_chains(X, 2, prior, z0, 305, rng, burn=5, covariance_type=covariance_type)
    order = np.argsort(draws["means"][..., 0], axis=-1)
    w = np.take_along_axis(draws["weights"], order, -1).reshape(-1, 2)
    mu = np.take_along_axis(draws["means"], order[..., None], -2).reshape(-1, 2, 2)
    cov = draws["covariances"]
    extra = (None,) * (cov.ndim - order.ndim)
    cov = np.take_along_axis(cov, order[(...,) + extra], order.ndim - 1)
    return a, b, prior, w, mu, cov.reshape((-1,) + cov.shape[2:])


def _expected_weights(prior, a, b):
    counts = np.array([len(a), len(b)])
    return (prior["alpha"] + counts) / (2 * prior["alpha"] + counts.sum())


def _assert_means_within_error(checks, n_draws):
    for got, want, sd in checks:
        # Draws given fixed allocations are independent: 5 standard errors of the mean.
        assert np.all(np.abs(got - want) <= 5 * sd / np.sqrt(n_draws) + 1e-12), (got, want)


def test_gibbs_chains_matches_the_exact_posterior_of_separated_clusters():
    a, b, prior, w, mu, cov = _separated_draws(3, np.eye(2), "full")
    m0, kappa, nu, psi = prior["mean"], prior["kappa"], prior["dof"], prior["scale"]
    checks = [(w.mean(0), _expected_weights(prior, a, b), w.std(0))]
    for j, xj in enumerate((a, b)):
        nj, xbar = len(xj), xj.mean(0)
        kn = kappa + nj
        psi_n = psi + (xj - xbar).T @ (xj - xbar) + kappa * nj / kn * np.outer(xbar - m0, xbar - m0)
        checks.append((mu[:, j].mean(0), (kappa * m0 + nj * xbar) / kn, mu[:, j].std(0)))
        checks.append((cov[:, j].mean(0), psi_n / (nu + nj - 3), cov[:, j].std(0)))
        # The marginal of a mean is a Student t with covariance psi_n / (kappa_n (nu_n - 3)):
        # its standard deviations within 10% (about six standard errors at this many draws).
        sd_mu = np.sqrt(np.diag(psi_n) / (kn * (nu + nj - 3)))
        np.testing.assert_allclose(mu[:, j].std(0), sd_mu, rtol=0.1)
    _assert_means_within_error(checks, w.shape[0])


def test_gibbs_chains_diag_matches_the_exact_posterior_of_separated_clusters():
    a, b, prior, w, mu, s2 = _separated_draws(4, np.array([1.0, 2.0]), "diag")
    assert s2.shape == (N_CHAINS * 300, 2, 2)
    m0, kappa, nu, psi = prior["mean"], prior["kappa"], prior["dof"], prior["scale"]
    checks = [(w.mean(0), _expected_weights(prior, a, b), w.std(0))]
    for j, xj in enumerate((a, b)):
        nj, xbar = len(xj), xj.mean(0)
        kn = kappa + nj
        # s2_jd ~ InverseGamma(shape, rate): mean rate / (shape - 1).
        shape = 0.5 * (nu + nj)
        rate = 0.5 * (psi + ((xj - xbar) ** 2).sum(0) + kappa * nj / kn * (xbar - m0) ** 2)
        checks.append((mu[:, j].mean(0), (kappa * m0 + nj * xbar) / kn, mu[:, j].std(0)))
        checks.append((s2[:, j].mean(0), rate / (shape - 1), s2[:, j].std(0)))
        # Standard deviations of the inverse gamma and of the mean's Student t marginal
        # within 10% (about six standard errors at this many draws).
        sd_s2 = rate / ((shape - 1) * np.sqrt(shape - 2))
        np.testing.assert_allclose(s2[:, j].std(0), sd_s2, rtol=0.1)
        np.testing.assert_allclose(mu[:, j].std(0), np.sqrt(rate / (kn * (shape - 1))), rtol=0.1)
    _assert_means_within_error(checks, w.shape[0])
