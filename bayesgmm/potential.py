"""The mixture's posterior potential, written out in NumPyro's unconstrained parametrisation.

:func:`bayesgmm.model.mixture_model` is the one declaration of the model. NUTS needs the
potential energy of its sites in unconstrained space and the gradient of it, and NumPyro's
generic route (``numpyro.infer.util.potential_energy``: trace the model, transform every site,
add the log-densities and the log-Jacobians) computes the Cholesky factor of each covariance
three times (its inverse-Wishart density, the means' prior, the likelihood) and differentiates
each. Compiling that gradient was most of the cost of a first ``sample_posterior``. Here the
same function is written directly: the unconstrained vector of a covariance already *is* its
Cholesky factor (NumPyro maps it with ``LowerCholeskyTransform`` followed by ``L L^T``), so one
triangular inverse per component serves all three terms.

The parametrisation is NumPyro's, site by site, so that draws, starting points and step-size
adaptation mean the same thing in both routes:

- ``weights`` (K - 1,): stick breaking (``StickBreakingTransform``), balanced so that zeros give
  equal weights;
- ``means`` (K, D): unconstrained;
- ``covariances``: full (K, D(D+1)/2) and tied (D(D+1)/2,): the strictly lower triangle of the
  Cholesky factor in row-major order, then the logs of its diagonal; diag (K, D) and spherical
  (K,): log-variances.

``tests/test_potential.py`` checks :func:`potential` and its gradient against
``potential_energy`` of the NumPyro model, :func:`constrain` against ``constrain_fn`` and
:func:`unconstrain` against ``unconstrain_fn``, for every covariance type, with and without
sample weights, in float64 and float32. Pure functions: JAX for the potential and the
constraining map (they run inside the sampler's compiled loop), NumPy for :func:`unconstrain`
(it runs once per chain start, on the host).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import gammaln, multigammaln

from .priors import PriorParams

_LOG_2PI = math.log(2.0 * math.pi)


def site_shapes(n_components: int, n_features: int, covariance_type: str) -> dict:
    """Shapes of the unconstrained sites (names as in the model)."""
    k, d = n_components, n_features
    tri = d * (d + 1) // 2
    cov = {"full": (k, tri), "tied": (tri,), "diag": (k, d), "spherical": (k,)}[covariance_type]
    return {"weights": (k - 1,), "means": (k, d), "covariances": cov}


def pack(z: dict) -> np.ndarray:
    """One flat vector (NumPy) per point from the sites of ``z``; leading axes are kept.

    The sampler moves a single vector rather than a dict of sites: NUTS carries several copies
    of the position, momentum and gradient through its nested loops, and every array of that
    state costs the compiled program copies and selects, so one leaf instead of three roughly
    halves its compile time. The order is that of ``jax.tree`` (sites sorted by name), as in
    NumPyro's own ravelling of the position.
    """
    names = sorted(z)
    lead = np.shape(z["means"])[:-2]
    return np.concatenate([np.reshape(z[name], lead + (-1,)) for name in names], axis=-1)


def unpack(v: Array, n_components: int, n_features: int, covariance_type: str) -> dict:
    """The sites of one flat vector ``v`` (the inverse of :func:`pack`, for one point)."""
    shapes = site_shapes(n_components, n_features, covariance_type)
    out, start = {}, 0
    for name in sorted(shapes):
        size = math.prod(shapes[name])
        out[name] = v[start : start + size].reshape(shapes[name])
        start += size
    return out


def flat_size(n_components: int, n_features: int, covariance_type: str) -> int:
    """Length of the flat vector of :func:`pack`."""
    return sum(
        math.prod(s) for s in site_shapes(n_components, n_features, covariance_type).values()
    )


# --------------------------------------------------------------------------- constraining maps


def _stick_shift(k: int, dtype) -> Array:
    # Balances the map: x = 0 gives equal weights (piece i takes 1 / (k - i) of what is left).
    return jnp.log(jnp.arange(k - 1, 0, -1, dtype=dtype))


def log_weights(x: Array) -> tuple[Array, Array]:
    """Stick breaking in log space: log-weights (K,) and the log-Jacobian of x -> weights.

    Log space keeps every weight's logarithm finite however far x goes (the weights themselves
    may underflow to zero).
    """
    k = x.shape[-1] + 1
    t = x - _stick_shift(k, x.dtype)
    log_take = jax.nn.log_sigmoid(t)  # fraction of the remaining stick taken by piece i
    log_keep = jax.nn.log_sigmoid(-t)
    log_left = jnp.concatenate([jnp.zeros(1, x.dtype), jnp.cumsum(log_keep)])  # before piece i
    log_w = jnp.concatenate([log_take, jnp.zeros(1, x.dtype)]) + log_left
    # |dy/dx| is triangular with diagonal y_i (1 - s_i), s_i the fraction taken by piece i.
    log_jac = jnp.sum(log_w[:-1] + log_keep)
    return log_w, log_jac


def _tril_indices(d: int) -> tuple[np.ndarray, np.ndarray]:
    return np.tril_indices(d, -1)


def cholesky_factor(v: Array, d: int) -> tuple[Array, Array]:
    """Lower Cholesky factor (..., D, D) from its unconstrained vector, and the log-diagonal."""
    rows, cols = _tril_indices(d)
    m = rows.size
    log_diag = v[..., m:]
    chol = jnp.zeros(v.shape[:-1] + (d, d), v.dtype).at[..., rows, cols].set(v[..., :m])
    diag = np.arange(d)
    chol = chol.at[..., diag, diag].set(jnp.exp(log_diag))
    return chol, log_diag


def constrain(z: dict, covariance_type: str) -> dict:
    """Constrained ``weights``, ``means`` and ``covariances`` of one unconstrained point."""
    log_w, _ = log_weights(z["weights"])
    means = z["means"]
    d = means.shape[-1]
    c = z["covariances"]
    if covariance_type in ("full", "tied"):
        chol, _ = cholesky_factor(c, d)
        cov = chol @ jnp.swapaxes(chol, -1, -2)
    else:
        cov = jnp.exp(c)
    return {"weights": jnp.exp(log_w), "means": means, "covariances": cov}


def unconstrain(params: dict, covariance_type: str) -> dict:
    """The unconstrained point (NumPy float64) of constrained parameters (NumPy arrays).

    Leading axes (a batch of points) are kept.
    """
    w = np.asarray(params["weights"], np.float64)
    k = w.shape[-1]
    left = np.clip(1.0 - np.cumsum(w[..., :-1], axis=-1), np.finfo(np.float64).tiny, None)
    x = np.log(w[..., :-1] / left) + np.log(np.arange(k - 1, 0, -1, dtype=np.float64))
    cov = np.asarray(params["covariances"], np.float64)
    if covariance_type in ("full", "tied"):
        d = cov.shape[-1]
        chol = np.linalg.cholesky(cov)
        rows, cols = _tril_indices(d)
        diag = np.log(np.diagonal(chol, axis1=-2, axis2=-1))
        c = np.concatenate([chol[..., rows, cols], diag], axis=-1)
    else:
        c = np.log(cov)
    return {"weights": x, "means": np.asarray(params["means"], np.float64), "covariances": c}


# --------------------------------------------------------------------------- the potential


def _inverse_wishart(precision_chol: Array, log_diag: Array, prior: PriorParams) -> Array:
    """log IW(L L^T | dof, scale) for factors with inverse ``precision_chol`` (..., D, D)."""
    d = log_diag.shape[-1]
    nu = prior.dof
    scale_chol = jnp.linalg.cholesky(prior.scale)
    log_det_scale = 2.0 * jnp.sum(jnp.log(jnp.diagonal(scale_chol)))
    trace = jnp.sum(jnp.square(precision_chol @ scale_chol), axis=(-2, -1))
    const = 0.5 * nu * log_det_scale - 0.5 * nu * d * math.log(2.0) - multigammaln(0.5 * nu, d)
    return const - (nu + d + 1) * jnp.sum(log_diag, axis=-1) - 0.5 * trace


def _inverse_gamma_log(u: Array, shape: Array, rate: Array) -> Array:
    """log InverseGamma(exp(u) | shape, rate), elementwise."""
    return shape * jnp.log(rate) - gammaln(shape) - (shape + 1.0) * u - rate * jnp.exp(-u)


def log_joint_parts(
    z: dict, X: Array, sample_weight: Array, prior: PriorParams, covariance_type: str
) -> tuple[Array, Array]:
    """The log-likelihood, and the log prior density in unconstrained space (log-Jacobian in).

    Their sum is :func:`log_joint`; tempered samplers (:mod:`bayesgmm.smc`) weigh the two apart.
    """
    log_w, log_jac = log_weights(z["weights"])
    means = z["means"]
    k, d = means.shape
    c = z["covariances"]
    alpha = prior.alpha
    lp = gammaln(k * alpha) - k * gammaln(alpha) + (alpha - 1.0) * jnp.sum(log_w)
    half_log_kappa = 0.5 * jnp.log(prior.kappa)
    dm = means - prior.mean
    diff = X[:, None, :] - means[None]  # (n, K, D)
    if covariance_type in ("full", "tied"):
        chol, log_diag = cholesky_factor(c, d)
        eye = jnp.eye(d, dtype=c.dtype)
        prec = solve_triangular(chol, jnp.broadcast_to(eye, chol.shape), lower=True)  # L^{-1}
        # log|d(L L^T)/dz|: exp on the diagonal, then 2^D prod_i L_ii^(D - i) (i from 0).
        powers = jnp.arange(d + 1, 1, -1, dtype=c.dtype)
        log_jac += jnp.sum(log_diag @ powers + d * math.log(2.0))
        lp += jnp.sum(_inverse_wishart(prec, log_diag, prior))
        if covariance_type == "tied":
            prec, log_diag = jnp.broadcast_to(prec, (k, d, d)), jnp.broadcast_to(log_diag, (k, d))
        dm_white = jnp.einsum("ked,kd->ke", prec, dm)
        lp += jnp.sum(
            -0.5 * d * _LOG_2PI - jnp.sum(log_diag, -1) + d * half_log_kappa
            - 0.5 * prior.kappa * jnp.sum(dm_white**2, -1)
        )  # fmt: skip
        white = jnp.einsum("ked,nkd->nke", prec, diff)
        log_dens = -0.5 * d * _LOG_2PI - jnp.sum(log_diag, -1) - 0.5 * jnp.sum(white**2, -1)
    else:
        u = c if covariance_type == "diag" else jnp.broadcast_to(c[:, None], (k, d))
        log_jac += jnp.sum(c)
        rate = 0.5 * prior.scale * (jnp.ones(d, c.dtype) if covariance_type == "diag" else 1.0)
        lp += jnp.sum(_inverse_gamma_log(c, 0.5 * prior.dof, rate))
        inv_var = jnp.exp(-u)
        lp += jnp.sum(
            -0.5 * _LOG_2PI - 0.5 * u + half_log_kappa - 0.5 * prior.kappa * dm**2 * inv_var
        )
        log_dens = jnp.sum(-0.5 * _LOG_2PI - 0.5 * u - 0.5 * diff**2 * inv_var, -1)
    loglik = jnp.sum(sample_weight * jax.nn.logsumexp(log_dens + log_w, axis=-1))
    return loglik, lp + log_jac


def log_joint(z: dict, X: Array, sample_weight: Array, prior: PriorParams, covariance_type: str):
    """Log prior + log-likelihood + log-Jacobian at an unconstrained point (minus the potential)."""
    loglik, log_prior = log_joint_parts(z, X, sample_weight, prior, covariance_type)
    return loglik + log_prior


def potential(z: dict, X: Array, sample_weight: Array, prior: PriorParams, covariance_type: str):
    """The potential energy (minus the log posterior density in unconstrained space)."""
    return -log_joint(z, X, sample_weight, prior, covariance_type)
