"""The conjugate prior: user-facing hyperparameters, their data-based defaults, and the log-prior.

The prior (see ``docs/design.md``) is

- weights ~ Dirichlet(alpha, ..., alpha)
- full:      covariances[k] ~ InverseWishart(nu, Psi);  means[k] | cov ~ Normal(m0, cov[k] / kappa)
- tied:      covariances ~ InverseWishart(nu, Psi);     means[k] | cov ~ Normal(m0, cov / kappa)
- diag:      covariances[k, d] ~ InverseGamma(nu / 2, Psi_dd / 2);
             means[k, d] ~ Normal(m0_d, cov[k, d] / kappa)
- spherical: covariances[k] ~ InverseGamma(nu / 2, s / 2), s = trace(Psi) / D;
             means[k] ~ Normal(m0, cov[k] / kappa * I)

In one dimension the four coincide. Defaults follow Fraley & Raftery (2007), as mclust's
``priorControl()``: kappa = 0.01, m0 = the data mean, nu = D + 2, Psi = cov(data) / K^(2/D),
alpha = 1 (a flat Dirichlet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.special import gammaln, multigammaln

from .params import GMMParams, log_det_precision_chol


@dataclass(frozen=True)
class Prior:
    """Hyperparameters of the conjugate prior; ``None`` entries take data-based defaults.

    Parameters
    ----------
    weight_concentration : float, default=1.0
        Concentration ``alpha`` of the symmetric Dirichlet on the weights. MAP fits by EM need
        ``alpha >= 1`` (below 1 the mode sits on the boundary of the simplex).
    mean_precision : float, default=0.01
        ``kappa``: the prior on a mean has covariance ``cov / kappa``.
    mean : array of shape (n_features,), optional
        Prior mean ``m0``; defaults to the (weighted) data mean.
    degrees_of_freedom : float, optional
        ``nu``; defaults to ``n_features + 2``. Must exceed ``n_features - 1``.
    scale : array of shape (n_features, n_features), optional
        ``Psi``; defaults to ``cov(data) / n_components ** (2 / n_features)``. For ``diag`` a
        vector of shape (n_features,) is accepted too, and for ``spherical`` a positive scalar.
    """

    weight_concentration: float = 1.0
    mean_precision: float = 0.01
    mean: Any = None
    degrees_of_freedom: float | None = None
    scale: Any = None


class PriorParams(NamedTuple):
    """Resolved hyperparameters as arrays; a pytree passed into compiled code."""

    alpha: Array  # shape=(), Dirichlet concentration
    kappa: Array  # shape=(), mean precision
    mean: Array  # shape=(D,)
    dof: Array  # shape=(), nu
    scale: Array  # full/tied (D, D); diag (D,); spherical ()


def _positive_scalar(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Prior {name} must be a positive number, got {value!r}.") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"Prior {name} must be a positive finite number, got {value!r}.")
    return v


class DataMoments(NamedTuple):
    """Weighted moments of the data behind the data-based prior defaults (NumPy float64)."""

    mean: np.ndarray  # shape=(D,)
    covariance: np.ndarray  # shape=(D, D), divisor: the total weight
    total_weight: float  # sum of the sample weights


def needs_data(prior: Prior | str | None) -> bool:
    """Whether ``prior`` has data-based defaults (a mean or scale left to the data)."""
    if prior is None:
        return False
    return not isinstance(prior, Prior) or prior.mean is None or prior.scale is None


def resolve_prior(
    prior: Prior | str | None,
    moments: DataMoments | None,
    n_components: int,
    covariance_type: str,
) -> PriorParams | None:
    """Validate ``prior`` and fill in the data-based defaults, in NumPy float64.

    Parameters
    ----------
    prior : None, "default" or Prior
    moments : DataMoments or None
        The data's weighted moments; only an explicit ``Prior(mean=, scale=)`` resolves without
        them (the dimension is then that of ``mean``). The default scale uses the covariance
        with divisor ``total_weight - 1`` (as R's ``var``, when the total exceeds 1).
    n_components : int
    covariance_type : str

    Returns
    -------
    PriorParams or None
        ``None`` for maximum likelihood (``prior=None``).
    """
    if prior is None:
        return None
    if isinstance(prior, str):
        if prior != "default":
            raise ValueError(f"prior must be None, 'default' or a bayesgmm.Prior, got {prior!r}.")
        prior = Prior()
    if not isinstance(prior, Prior):
        raise ValueError(
            f"prior must be None, 'default' or a bayesgmm.Prior, got {type(prior).__name__}."
        )
    if moments is not None:
        d = int(np.shape(moments.mean)[0])
        data_mean = np.asarray(moments.mean, np.float64)
        total = float(moments.total_weight)
        data_cov = np.asarray(moments.covariance, np.float64) * (
            total / (total - 1.0) if total > 1.0 else 1.0
        )
    elif needs_data(prior):
        raise ValueError("resolve_prior needs the data's moments for data-based defaults.")
    else:
        d = int(np.size(prior.mean))
    alpha = _positive_scalar(prior.weight_concentration, "weight_concentration")
    kappa = _positive_scalar(prior.mean_precision, "mean_precision")

    if prior.mean is None:
        mean = data_mean
    else:
        mean = (
            np.asarray(prior.mean, dtype=np.float64).reshape(-1)
            if np.ndim(prior.mean) <= 1
            else None
        )
        if mean is None or mean.shape != (d,):
            raise ValueError(
                f"Prior mean must have shape ({d},) to match n_features={d}, "
                f"got shape {np.shape(prior.mean)}."
            )
        if not np.all(np.isfinite(mean)):
            raise ValueError("Prior mean must be finite, got NaN or inf.")

    if prior.degrees_of_freedom is None:
        dof = d + 2.0
    else:
        dof = _positive_scalar(prior.degrees_of_freedom, "degrees_of_freedom")
        if dof <= d - 1:
            raise ValueError(
                f"Prior degrees_of_freedom must be greater than n_features - 1 = {d - 1}, "
                f"got {dof}."
            )

    if prior.scale is None:
        scale = data_cov / n_components ** (2.0 / d)
        if not _well_conditioned(scale):
            raise ValueError(
                "prior='default' needs a positive definite data covariance for its scale "
                "(data covariance / K^(2/D)), but the data covariance is singular: a constant "
                "column, linearly dependent columns or too few distinct rows. Drop the redundant "
                "columns or pass bayesgmm.Prior(scale=...) with a positive definite matrix."
            )
    else:
        scale = _check_scale(prior.scale, d, covariance_type)

    if covariance_type in ("full", "tied"):
        scale_arr = scale
    elif covariance_type == "diag":
        scale_arr = np.diagonal(scale).copy() if scale.ndim == 2 else scale
    else:
        if scale.ndim == 2:
            scale_arr = np.asarray(np.trace(scale) / d)
        elif scale.ndim == 1:
            scale_arr = np.asarray(scale.mean())
        else:
            scale_arr = scale
    return PriorParams(
        np.asarray(alpha), np.asarray(kappa), mean, np.asarray(dof), np.asarray(scale_arr)
    )


def _well_conditioned(matrix: np.ndarray) -> bool:
    """Symmetric positive definite with a condition number that float64 can still resolve."""
    if not np.all(np.isfinite(matrix)):
        return False
    eig = np.linalg.eigvalsh(matrix)
    return bool(eig[0] > 1e-12 * max(eig[-1], 0.0) and eig[0] > 0)


def _check_scale(value, d: int, covariance_type: str) -> np.ndarray:
    scale = np.array(value, dtype=np.float64)
    allowed = {"full": "(D, D)", "tied": "(D, D)", "diag": "(D, D) or (D,)"}.get(
        covariance_type, "(D, D), (D,) or a scalar"
    )
    if not np.all(np.isfinite(scale)):
        raise ValueError("Prior scale must be finite, got NaN or inf.")
    if scale.ndim == 2 and scale.shape == (d, d):
        if not np.allclose(scale, scale.T, rtol=1e-10, atol=1e-12 * np.abs(scale).max()):
            raise ValueError(
                "Prior scale must be a symmetric positive definite matrix; it is not symmetric."
            )
        if not _well_conditioned(scale):
            raise ValueError(
                "Prior scale must be a symmetric positive definite matrix; it is not positive "
                "definite (or is numerically singular)."
            )
        return scale
    ok_vector = scale.ndim == 1 and scale.shape == (d,) and covariance_type in ("diag", "spherical")
    ok_scalar = scale.ndim == 0 and covariance_type == "spherical"
    if ok_vector or ok_scalar:
        if np.any(scale <= 0):
            raise ValueError(f"Prior scale entries must be positive, got {value!r}.")
        return scale
    raise ValueError(
        f"Prior scale for covariance_type={covariance_type!r} must have shape {allowed} with "
        f"D={d}, got shape {scale.shape}."
    )


def cast_prior(prior: PriorParams | None, dtype) -> PriorParams | None:
    """The resolved prior as JAX arrays of ``dtype``."""
    if prior is None:
        return None
    return PriorParams(*(jnp.asarray(v, dtype=dtype) for v in prior))


# --------------------------------------------------------------------------------------------
# Log-densities, written out here so that the numerics do not depend on NumPyro. The tests
# check them against NumPyro's and SciPy's.


def _log_dirichlet(weights: Array, alpha: Array, active: Array) -> Array:
    k = jnp.sum(active)
    log_w = jnp.where(active, jnp.log(jnp.where(active, weights, 1)), 0)
    return gammaln(k * alpha) - k * gammaln(alpha) + (alpha - 1) * jnp.sum(log_w)


def _log_inverse_wishart(prec_chol: Array, dof: Array, scale: Array) -> Array:
    """log IW(cov | dof, scale) for cov = (U U^T)^{-1}, ``U = prec_chol`` (..., D, D)."""
    d = scale.shape[-1]
    scale_chol = jnp.linalg.cholesky(scale)
    log_det_scale = 2 * jnp.sum(jnp.log(jnp.diagonal(scale_chol)))
    log_det_cov = -2 * log_det_precision_chol(prec_chol, "full", d)
    # tr(Psi cov^{-1}) = tr(L L^T U U^T) = ||L^T U||_F^2
    tr = jnp.sum(jnp.square(jnp.einsum("ed,...ef->...df", scale_chol, prec_chol)), axis=(-2, -1))
    return (
        0.5 * dof * log_det_scale
        - 0.5 * dof * d * jnp.log(2.0)
        - multigammaln(0.5 * dof, d)
        - 0.5 * (dof + d + 1) * log_det_cov
        - 0.5 * tr
    )


def _log_inverse_gamma(var: Array, shape: Array, rate: Array) -> Array:
    return shape * jnp.log(rate) - gammaln(shape) - (shape + 1) * jnp.log(var) - rate / var


def log_prior(
    params: GMMParams, prior: PriorParams, covariance_type: str, active: Array | None = None
) -> Array:
    """log p(weights, means, covariances) under the conjugate prior: a scalar.

    ``active`` (K,) restricts the prior to the first components of a padded mixture.
    """
    k, d = params.means.shape
    if active is None:
        active = jnp.ones(k, bool)
    n_active = jnp.sum(active)
    lp = _log_dirichlet(params.weights, prior.alpha, active)
    diff = params.means - prior.mean
    pc = params.precisions_chol
    half_log_2pi = 0.5 * jnp.log(2 * jnp.pi)
    if covariance_type in ("full", "tied"):
        log_iw = _log_inverse_wishart(pc, prior.dof, prior.scale)
        lp += log_iw if covariance_type == "tied" else jnp.sum(jnp.where(active, log_iw, 0))
        y = jnp.einsum("kd,kde->ke", diff, pc) if covariance_type == "full" else diff @ pc
        log_det = jnp.broadcast_to(log_det_precision_chol(pc, covariance_type, d), (k,))
        log_norm = n_active * d * (0.5 * jnp.log(prior.kappa) - half_log_2pi)
        quad = jnp.sum(y * y, axis=1)
        lp += log_norm + jnp.sum(jnp.where(active, log_det - 0.5 * prior.kappa * quad, 0))
    else:
        var = params.covariances
        var_kd = var if covariance_type == "diag" else var[:, None]
        log_ig = jnp.broadcast_to(
            _log_inverse_gamma(var, 0.5 * prior.dof, 0.5 * prior.scale), var.shape
        )
        log_mean = 0.5 * jnp.log(prior.kappa / var_kd) - half_log_2pi
        log_mean = log_mean - 0.5 * prior.kappa * diff**2 / var_kd
        per_k = log_ig if covariance_type == "spherical" else jnp.sum(log_ig, axis=1)
        per_k = per_k + jnp.sum(log_mean, axis=1)
        lp += jnp.sum(jnp.where(active, per_k, 0))
    return lp
