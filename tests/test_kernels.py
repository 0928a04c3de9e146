"""The E-step kernel (:func:`bayesgmm.stats.e_step`) against an independent NumPy/SciPy reference.

Both precisions run both kernels: the expanded quadratic forms (two matrix products per row
block, the statistics taken about the mixture mean; float64's default, and float32's on large
data in the fitting driver), and rows centred on every component (float32's default, and the
driver's fallback for components far from the mixture mean); float32 also sums the expanded
blocks with compensation. The reference computes the responsibilities with scipy.stats in
float64 and the weighted counts, means and scatter matrices about each component's weighted
mean directly. The data are centred, as the driver centres them, and walked in blocks of 256
rows (four blocks, the last overlapping its predecessor) with random sample weights.

Tolerances (relative to the largest entry of each quantity): float64 1e-9; float32 2e-5 for the
counts, means and log-likelihood and 1e-4 for the scatter, which loses about
``eps |xbar_k - c|^2 / sigma_k^2`` to the expansion about the mixture mean ``c`` (here the
components sit a few standard deviations from ``c``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import component_log_densities, init_params
from scipy.special import logsumexp

from bayesgmm.params import make_params
from bayesgmm.stats import _responsibilities_one_exp, e_step, sum_blocks

N, D, K, BLOCK = 900, 3, 3, 256
TYPES = ("full", "tied", "diag", "spherical")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, -3.0, 1.0], [-3.0, 5.0, 2.0]])
    X = centres[rng.integers(0, K, N)] + rng.normal(size=(N, D)) @ rng.normal(0.3, 0.4, (D, D))
    w = rng.uniform(0.5, 2.0, N)
    return X - X.mean(0), w


def _reference(X, w, params, covariance_type):
    """Counts (K,), means (K, D), scatter about them (K, D, D), log-likelihood: float64 NumPy."""
    lp = component_log_densities(X, *params, covariance_type)
    log_norm = logsumexp(lp, axis=1)
    r = np.exp(lp - log_norm[:, None]) * w[:, None]
    nk = r.sum(0)
    means = r.T @ X / nk[:, None]
    scatter = np.stack([(X - means[k]).T @ (r[:, k, None] * (X - means[k])) for k in range(K)])
    return nk, means, scatter, float(w @ log_norm)


def _kernel(X, w, params, covariance_type, dtype, centred=None):
    p = make_params(*(jnp.asarray(np.asarray(a), dtype) for a in params), covariance_type)
    Xt, wj = jnp.asarray(X.T, dtype), jnp.asarray(w, dtype)
    run = jax.jit(lambda Xt, wj, p: e_step(Xt, wj, BLOCK, p, covariance_type, centred=centred))
    stats, ref = run(Xt, wj, p)
    # Every output stays in the data's precision (no silent promotion to float64).
    assert all(a.dtype == dtype for a in jax.tree.leaves((stats, ref)))
    nk = np.asarray(stats.nk, np.float64)
    shift = np.asarray(stats.s1, np.float64) / nk[:, None]
    means = np.asarray(ref, np.float64) + shift
    s2 = np.asarray(stats.s2, np.float64)
    if covariance_type == "tied":  # summed over components; compared as such below
        return nk, means, s2 - np.einsum("k,kd,ke->de", nk, shift, shift), float(stats.loglik)
    if covariance_type in ("diag", "spherical"):  # only their diagonal (summed) is kept
        s2 = s2 - (nk[:, None] * shift**2 if covariance_type == "diag" else nk * (shift**2).sum(1))
        return nk, means, s2, float(stats.loglik)
    return (
        nk,
        means,
        s2 - nk[:, None, None] * shift[:, :, None] * shift[:, None, :],
        float(stats.loglik),
    )


def _close(actual, expected, rtol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * np.max(np.abs(expected)))


@pytest.mark.parametrize("centred", [False, True], ids=["expanded", "centred"])
@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_e_step_statistics_match_scipy(x64, data, covariance_type, dtype, centred):
    X, w = data
    start, _ = init_params(X, K, covariance_type, seed=3)
    params = (start["weights"], start["means"], start["covariances"])
    nk, means, scatter, ll = _kernel(X, w, params, covariance_type, dtype, centred)
    ref_nk, ref_means, ref_scatter, ref_ll = _reference(X, w, params, covariance_type)
    if covariance_type == "tied":
        ref_scatter = ref_scatter.sum(0)
    elif covariance_type == "diag":
        ref_scatter = np.diagonal(ref_scatter, axis1=1, axis2=2)
    elif covariance_type == "spherical":
        ref_scatter = np.trace(ref_scatter, axis1=1, axis2=2)
    tol, tol_scatter = (1e-9, 1e-9) if dtype == np.float64 else (2e-5, 1e-4)
    _close(nk, ref_nk, tol)
    _close(means, ref_means, tol)
    _close(scatter, ref_scatter, tol_scatter)
    assert abs(ll - ref_ll) <= tol * abs(ref_ll)


def test_compensated_block_sum_float32(f32):
    """Kahan summation over many float32 blocks keeps the sum to a few eps of the exact one."""
    n, block = 2**16, 256  # 256 blocks
    rng = np.random.default_rng(0)
    x = rng.uniform(1.0, 1.001, n).astype(np.float32)
    Xt, w = jnp.asarray(x[None, :]), jnp.ones(n, jnp.float32)

    def total(compensated):
        return float(
            sum_blocks(Xt, w, block, lambda xt, wb, i: jnp.sum(xt[0] * wb), None, compensated)
        )

    exact = float(np.sum(x.astype(np.float64)))
    assert abs(total(True) - exact) <= 4 * np.finfo(np.float32).eps * exact


def test_one_exp_responsibilities_match_logsumexp(x64):
    """One exponential per element gives scipy's normaliser; all -inf rows give -inf, never NaN."""
    rng = np.random.default_rng(1)
    lp = rng.normal(0, 30, (4, 6))
    lp[:, 5] = -np.inf
    lp[2, 4] = -np.inf
    resp, log_norm = _responsibilities_one_exp(jnp.asarray(lp))
    expected = logsumexp(lp, axis=0)
    np.testing.assert_allclose(np.asarray(log_norm)[:5], expected[:5], rtol=1e-14)
    assert np.asarray(log_norm)[5] == -np.inf
    np.testing.assert_allclose(
        np.asarray(resp)[:, :5], np.exp(lp[:, :5] - expected[:5]), atol=1e-14
    )
    assert np.all(np.asarray(resp)[:, 5] == 0)
