"""Small numerically careful operations used across the package.

Each function says why it is needed; all are pure JAX and safe under ``jit`` and ``vmap``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array
from jax.scipy.linalg import solve_triangular


def float_dtype() -> jnp.dtype:
    """The active floating-point dtype: float64 when ``jax_enable_x64`` is on, else float32."""
    return jnp.result_type(float)


def tiny(dtype) -> Array:
    """Ten machine epsilons: added to soft counts so an empty component divides safely.

    scikit-learn adds the same amount, which keeps our iterates comparable with its.
    """
    return 10 * jnp.finfo(dtype).eps


def precision_cholesky_from_covariance(cov: Array) -> Array:
    """Upper-triangular ``U`` with ``U U^T = cov^{-1}`` for a batch of (D, D) covariances.

    Working through the precision Cholesky factor keeps log-densities in O(D^2) per point and
    avoids forming an explicit inverse. A non-positive-definite ``cov`` gives NaN entries, which
    the EM loop detects as a singular covariance.
    """
    chol = jnp.linalg.cholesky(cov)
    eye = jnp.broadcast_to(jnp.eye(cov.shape[-1], dtype=cov.dtype), cov.shape)
    return jnp.swapaxes(solve_triangular(chol, eye, lower=True), -1, -2)


def log_det_cholesky(chol: Array) -> Array:
    """log|det| of a triangular factor: the sum of the logs of its diagonal.

    Never forms the determinant, which under- or overflows already for moderate D.
    """
    return jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
