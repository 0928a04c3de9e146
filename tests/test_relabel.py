"""Stephens' relabelling and the allocation divergences (NumPy only: no compilation)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bayesgmm.relabel import (
    allocation_probabilities,
    configuration_distance,
    log_component_densities,
    relabel_permutations,
    stephens_relabel,
)


def _random_params(rng, s, k, d, covariance_type):
    a = rng.normal(size=(s, k, d, d))
    full = a @ np.swapaxes(a, -1, -2) + np.eye(d)
    cov = {
        "full": full,
        "tied": full[:, 0],
        "diag": np.diagonal(full, axis1=-2, axis2=-1).copy(),
        "spherical": np.trace(full, axis1=-2, axis2=-1) / d,
    }[covariance_type]
    return rng.dirichlet(np.ones(k), size=s), rng.normal(size=(s, k, d)), cov


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_log_component_densities_match_scipy(covariance_type):
    rng = np.random.default_rng(0)
    s, k, d, n = 3, 2, 3, 5
    w, mu, cov = _random_params(rng, s, k, d, covariance_type)
    X = rng.normal(size=(n, d))
    got = log_component_densities(X, w, mu, cov, covariance_type)
    assert got.shape == (s, n, k)
    for i in range(s):
        for j in range(k):
            if covariance_type == "full":
                c = cov[i, j]
            elif covariance_type == "tied":
                c = cov[i]
            elif covariance_type == "diag":
                c = np.diag(cov[i, j])
            else:
                c = cov[i, j] * np.eye(d)
            expected = np.log(w[i, j]) + stats.multivariate_normal(mu[i, j], c).logpdf(X)
            np.testing.assert_allclose(got[i, :, j], expected, rtol=1e-10)


def _scramble(rng, P):
    """Permute each draw's components at random; returns the scrambled draws and the truth."""
    s, _, k = P.shape
    truth = np.array([rng.permutation(k) for _ in range(s)])
    return np.take_along_axis(P, truth[:, None, :], axis=2), truth


def _assert_aligned(P, scrambled, perm):
    """Relabelled draws equal the originals up to one permutation common to all draws."""
    relabelled = np.take_along_axis(scrambled, perm[:, None, :], axis=2)
    k = P.shape[2]
    common = [g for g in _perms(k) if np.allclose(relabelled[0], P[0][:, g])]
    assert common, "the first draw matches no permutation of the original"
    np.testing.assert_allclose(relabelled, P[:, :, common[0]])


def _perms(k):
    import itertools

    return [list(p) for p in itertools.permutations(range(k))]


def test_stephens_recovers_label_switching():
    rng = np.random.default_rng(1)
    s, n, k = 300, 60, 3
    base = rng.dirichlet(np.full(k, 0.3), size=n)  # (n, K): fairly decided allocations
    P = np.stack([rng.dirichlet(50 * base[i] + 0.01, size=s) for i in range(n)], axis=1)
    scrambled, _ = _scramble(rng, P)
    perm, Q = stephens_relabel(scrambled)
    _assert_aligned(P, scrambled, perm)
    assert Q.shape == (n, k)
    # started from the truth's classification matrix, the labels are the original ones
    perm, _ = stephens_relabel(scrambled, base)
    np.testing.assert_allclose(np.take_along_axis(scrambled, perm[:, None, :], axis=2), P)


def test_stephens_holds_where_parameter_matching_fails():
    """Two components with the same mean (a narrow one inside a broad one): the means cannot
    tell them apart, the allocation probabilities can."""
    rng = np.random.default_rng(2)
    s, n = 400, 80
    X = np.concatenate([rng.normal(0, 1, n // 2), rng.normal(0, 6, n // 2)])[:, None]
    w = np.clip(0.5 + 0.05 * rng.normal(size=(s, 1)), 0.3, 0.7) * np.array([1.0, -1.0]) + [0, 1]
    mu = 0.3 * rng.normal(size=(s, 2, 1))  # both means near 0, overlapping across draws
    var = np.stack([np.exp(0.1 * rng.normal(size=s)), 36 * np.exp(0.1 * rng.normal(size=s))], 1)
    truth = np.array([rng.permutation(2) for _ in range(s)])
    sw = np.take_along_axis(w, truth, 1)
    smu = np.take_along_axis(mu, truth[:, :, None], 1)
    svar = np.take_along_axis(var, truth, 1)
    P = allocation_probabilities(log_component_densities(X, sw, smu, svar, "spherical"))
    perm, _ = stephens_relabel(P)
    narrow = np.take_along_axis(svar, perm, 1)[:, 0]
    # label 0 is the same component (narrow, or broad) in every draw
    assert np.all(narrow < 3) or np.all(narrow > 10)
    # matching the means and weights to a reference point confuses them in many draws
    ref = {"weights": np.array([0.5, 0.5]), "means": np.zeros((2, 1)), "covariances": [1.0, 36]}
    by_params = relabel_permutations(sw, smu, ref, "spherical", n)
    by_params_narrow = np.take_along_axis(svar, by_params, 1)[:, 0]
    assert 0.1 < np.mean(by_params_narrow < 3) < 0.9


def test_configuration_distance():
    rng = np.random.default_rng(3)
    n, k = 40, 3
    a = rng.dirichlet(np.full(k, 0.2), size=n)
    b = rng.dirichlet(np.full(k, 0.2), size=n)
    P = np.stack([a[:, [2, 0, 1]], b])
    dist, perm = configuration_distance(P, np.stack([a, b]))
    assert dist.shape == (2, 2) and perm.shape == (2, 2, k)
    assert dist[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert dist[1, 1] == pytest.approx(0.0, abs=1e-12)
    assert dist[0, 1] > 0.1 and dist[1, 0] > 0.1
    np.testing.assert_array_equal(perm[0, 0], [1, 2, 0])  # P[0][:, perm] == a
