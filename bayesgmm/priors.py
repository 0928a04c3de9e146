"""The conjugate prior: user-facing hyperparameters, their data-based defaults, and the log-prior.

The prior (see ``docs/design.md``) is

- weights ~ Dirichlet(alpha, ..., alpha)
- full:      covariances[k] ~ InverseWishart(nu, Psi);  means[k] | cov ~ Normal(m0, cov[k] / kappa)
- tied:      covariances ~ InverseWishart(nu, Psi);     means[k] | cov ~ Normal(m0, cov / kappa)
- diag:      covariances[k, d] ~ InverseGamma(nu / 2, Psi_dd / 2);
             means[k, d] ~ Normal(m0_d, cov[k, d] / kappa)
- spherical: covariances[k] ~ InverseGamma(nu / 2, s / 2), s = trace(Psi) / D;
             means[k] ~ Normal(m0, cov[k] / kappa * I)

In one dimension the four coincide. The defaults are mclust's ``defaultPrior`` (Fraley &
Raftery 2007, as ``priorControl()`` uses them), with V = the data covariance (divisor: total
weight - 1, as R's ``var``) and f = K^(-2/D):

- every type: alpha = 1 (a flat Dirichlet), kappa = 0.01, m0 = the data mean, nu = D + 2;
- full, tied (mclust's VVV, EEE): Psi = f V (f diag(V) when the total weight is at most D);
- diag, spherical (VVI, VII): one scale for every coordinate, s = f trace(V) / D (the mean of
  the coordinates' variances, times f); diag's Psi_dd = s for every d.

``Prior(scale="per_feature")`` keeps each coordinate's own variance instead: Psi = f V read as
a matrix by every type, so diag's Psi_dd = f V_dd (full, tied and spherical are unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.special import gammaln, multigammaln

from .numerics import float_dtype
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
    scale : array of shape (n_features, n_features), "per_feature" or None, optional
        ``Psi``. ``None`` takes mclust's default, with ``V`` the data covariance and
        ``f = n_components ** (-2 / n_features)``: ``f V`` for ``full`` and ``tied``; for
        ``diag`` and ``spherical`` one scale for every coordinate, ``f trace(V) / n_features``.
        ``"per_feature"`` gives ``diag`` each coordinate's own variance, ``f V_dd`` (the other
        types as by default): a weaker prior on the coordinates of small variance when the
        coordinates' units differ. For ``diag`` a vector of shape (n_features,) is accepted
        too, and for ``spherical`` a positive scalar.

    Every number must be finite and at most ``sqrt(finfo(dtype).max)`` of the working
    precision (about 1.3e154 in float64, 1.8e19 in float32): the log-prior multiplies the
    hyperparameters by quantities of the data's own size, which must not overflow.
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


PER_FEATURE = "per_feature"


def hyper_limit(dtype=None) -> float:
    """The largest magnitude a hyperparameter may have: ``sqrt(finfo(dtype).max)``.

    The log-prior and the MAP M-step multiply a hyperparameter by quantities of the data's size
    (log-weights, squared distances, log-determinants, soft counts); below this bound such a
    product cannot overflow. ``dtype`` defaults to the working precision.
    """
    return float(np.sqrt(np.finfo(float_dtype() if dtype is None else dtype).max))


def _positive_scalar(value, name: str, limit: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"Prior {name} must be a positive number, got {value!r}.") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"Prior {name} must be a positive finite number, got {value!r}.")
    if v > limit:
        raise ValueError(
            f"Prior {name} must be at most {limit:.3g} in this precision (larger values "
            f"overflow the log-prior), got {value!r}."
        )
    return v


def _float_array(value, name: str) -> np.ndarray:
    """``value`` as a float64 array, refusing text, complex numbers and objects by ``name``."""
    try:
        arr = np.array(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError
        return arr.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"Prior {name} must be an array of real numbers, got {value!r}.") from None


def _check_range(arr: np.ndarray, name: str, limit: float) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"Prior {name} must be finite, got NaN or inf.")
    if arr.size and float(np.max(np.abs(arr))) > limit:
        raise ValueError(
            f"Prior {name} entries must be at most {limit:.3g} in magnitude in this precision "
            f"(larger values overflow the log-prior), got {float(np.max(np.abs(arr))):.3g}."
        )


class DataMoments(NamedTuple):
    """Weighted moments of the data behind the data-based prior defaults (NumPy float64)."""

    mean: np.ndarray  # shape=(D,)
    covariance: np.ndarray  # shape=(D, D), divisor: the total weight
    total_weight: float  # sum of the sample weights


def _is_per_feature(scale) -> bool:
    return isinstance(scale, str) and scale == PER_FEATURE


def needs_data(prior: Prior | str | None) -> bool:
    """Whether ``prior`` has data-based defaults (a mean or scale left to the data)."""
    if prior is None:
        return False
    if not isinstance(prior, Prior):
        return True
    return prior.mean is None or prior.scale is None or _is_per_feature(prior.scale)


def resolve_prior(
    prior: Prior | str | None,
    moments: DataMoments | None,
    n_components: int,
    covariance_type: str,
    dtype=None,
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
    dtype : numpy dtype, optional
        The precision the fit runs in (default: the working precision); hyperparameters above
        :func:`hyper_limit` of it are refused.

    Returns
    -------
    PriorParams or None
        ``None`` for maximum likelihood (``prior=None``). See the module docstring for the
        defaults (mclust's ``defaultPrior``).
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
    limit = hyper_limit(dtype)
    alpha = _positive_scalar(prior.weight_concentration, "weight_concentration", limit)
    kappa = _positive_scalar(prior.mean_precision, "mean_precision", limit)

    if prior.mean is None:
        mean = data_mean
    else:
        mean = _float_array(prior.mean, "mean")
        mean = mean.reshape(-1) if mean.ndim <= 1 else None
        if mean is None or mean.shape != (d,):
            raise ValueError(
                f"Prior mean must have shape ({d},) to match n_features={d}, "
                f"got shape {np.shape(prior.mean)}."
            )
        _check_range(mean, "mean", limit)

    if prior.degrees_of_freedom is None:
        dof = d + 2.0
    else:
        dof = _positive_scalar(prior.degrees_of_freedom, "degrees_of_freedom", limit)
        if dof <= d - 1:
            raise ValueError(
                f"Prior degrees_of_freedom must be greater than n_features - 1 = {d - 1}, "
                f"got {dof}."
            )

    per_feature = _is_per_feature(prior.scale)
    if prior.scale is None or per_feature:
        scale = _default_scale(data_cov, total, n_components, covariance_type, per_feature)
    elif isinstance(prior.scale, str):
        raise ValueError(
            f"Prior scale must be an array, None or {PER_FEATURE!r}, got {prior.scale!r}."
        )
    else:
        scale = _check_scale(prior.scale, d, covariance_type)
        _check_range(scale, "scale", limit)

    if covariance_type in ("full", "tied"):
        scale_arr = scale
    elif covariance_type == "diag":
        if scale.ndim == 2:
            scale_arr = np.diagonal(scale).copy()
        else:
            scale_arr = np.broadcast_to(scale, (d,)).copy()
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


def _default_scale(
    data_cov: np.ndarray, total: float, n_components: int, covariance_type: str, per_feature: bool
) -> np.ndarray:
    """mclust's ``defaultPrior`` scale from the data covariance (see the module docstring)."""
    d = data_cov.shape[0]
    fac = float(n_components) ** (-2.0 / d)
    variances = np.diagonal(data_cov)
    if covariance_type in ("diag", "spherical"):
        if not np.all(variances > 0):
            raise ValueError(
                "prior='default' needs every column of X to vary (its scale is made of the "
                "column variances), but X has a constant column. Drop it or pass "
                "bayesgmm.Prior(scale=...)."
            )
        if per_feature:
            return fac * variances
        # mclust's VVI and VII: one scale for every coordinate, the mean column variance.
        return np.asarray(fac * np.sum(variances) / d)
    # mclust: with no more rows than features the covariance is singular; it keeps the
    # variances only.
    scale = fac * (data_cov if total > d else np.diag(variances))
    if not _well_conditioned(scale):
        raise ValueError(
            "prior='default' needs a positive definite data covariance for its scale "
            "(data covariance / K^(2/D)), but the data covariance is singular: a constant "
            "column, linearly dependent columns or too few distinct rows. Drop the redundant "
            "columns or pass bayesgmm.Prior(scale=...) with a positive definite matrix."
        )
    return scale


def _well_conditioned(matrix: np.ndarray) -> bool:
    """Symmetric positive definite with a condition number that float64 can still resolve.

    The condition number is that of the matrix scaled to unit diagonal (a correlation matrix):
    columns on very different scales (one in 1e20, one in 1) are not ill-conditioned, and
    rescaling a column must not make a prior invalid (the fits are equivariant under it).
    """
    if not np.all(np.isfinite(matrix)):
        return False
    diag = np.diagonal(matrix)
    if not np.all(diag > 0):
        return False
    root = np.sqrt(diag)
    eig = np.linalg.eigvalsh(matrix / root[:, None] / root[None, :])
    return bool(eig[0] > 1e-12 * max(eig[-1], 0.0) and eig[0] > 0)


def _check_scale(value, d: int, covariance_type: str) -> np.ndarray:
    scale = _float_array(value, "scale")
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
