"""The parameter pytree and conversions between covariances and precision Cholesky factors.

Shapes follow scikit-learn, per covariance type (K components, D features):

=========  ==============  =====================================
type       covariances     precisions_chol
=========  ==============  =====================================
full       (K, D, D)       (K, D, D), upper triangular
tied       (D, D)          (D, D), upper triangular
diag       (K, D)          (K, D), ``1 / sqrt(variances)``
spherical  (K,)            (K,), ``1 / sqrt(variances)``
=========  ==============  =====================================
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import Array

from .numerics import log_det_cholesky, precision_cholesky_from_covariance

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


class GMMParams(NamedTuple):
    """Parameters of a Gaussian mixture; a pytree."""

    weights: Array  # shape=(K,), on the simplex
    means: Array  # shape=(K, D)
    covariances: Array  # shape per covariance type, see the module docstring
    precisions_chol: Array  # same shape as covariances


def precisions_chol(covariances: Array, covariance_type: str) -> Array:
    """Precision Cholesky factors from covariances, for any covariance type."""
    if covariance_type in ("full", "tied"):
        return precision_cholesky_from_covariance(covariances)
    return 1.0 / jnp.sqrt(covariances)


def make_params(
    weights: Array, means: Array, covariances: Array, covariance_type: str
) -> GMMParams:
    """Bundle parameters, deriving the precision Cholesky factors."""
    return GMMParams(weights, means, covariances, precisions_chol(covariances, covariance_type))


def log_det_precision_chol(prec_chol: Array, covariance_type: str, n_features: int) -> Array:
    """log det of the precision Cholesky factor: shape (K,) (tied: a scalar)."""
    if covariance_type in ("full", "tied"):
        return log_det_cholesky(prec_chol)
    if covariance_type == "diag":
        return jnp.sum(jnp.log(prec_chol), axis=-1)
    return n_features * jnp.log(prec_chol)


def _array_module(covariances):
    # NumPy in, NumPy out: a FitResult's parameters may be float64 NumPy arrays while JAX runs
    # in float32, and the reporting code (plots, the command line) wants them unrounded.
    return np if isinstance(covariances, np.ndarray) else jnp


def feature_variances(
    covariances: Array, covariance_type: str, n_components: int, n_features: int
) -> Array:
    """Every component's variance of every feature: shape (K, D), whatever the covariance type.

    NumPy arrays give a NumPy array (the command line's degeneracy report uses it).
    """
    xp = _array_module(covariances)
    cov = xp.asarray(covariances)
    k, d = n_components, n_features
    if covariance_type == "full":
        return xp.diagonal(cov, axis1=-2, axis2=-1)
    if covariance_type == "tied":
        return xp.broadcast_to(xp.diagonal(cov), (k, d))
    if covariance_type == "diag":
        return cov
    return xp.broadcast_to(cov[:, None], (k, d))


def full_covariances(
    covariances: Array, covariance_type: str, n_components: int, n_features: int
) -> Array:
    """Covariances expanded to shape (K, D, D), whatever the covariance type (NumPy stays NumPy)."""
    xp = _array_module(covariances)
    if covariance_type == "full":
        return covariances
    if covariance_type == "tied":
        return xp.broadcast_to(covariances, (n_components, n_features, n_features))
    if covariance_type == "diag":
        return covariances[:, :, None] * xp.eye(n_features, dtype=covariances.dtype)
    return covariances[:, None, None] * xp.eye(n_features, dtype=covariances.dtype)


def n_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Number of free parameters, as scikit-learn and mclust count them."""
    k, d = n_components, n_features
    cov = {
        "full": k * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
    }[covariance_type]
    return cov + k * d + k - 1
