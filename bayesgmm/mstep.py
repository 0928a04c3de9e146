"""M-step: closed-form maximum-likelihood and MAP updates from sufficient statistics.

With prior hyperparameters (alpha, kappa, m0, nu, Psi), soft counts n_k, means xbar_k,
scatter S_k about xbar_k, c_k = kappa n_k / (kappa + n_k) and d_k = xbar_k - m0, the mode of
the posterior is (derivations in ``docs/design.md``):

- weights_k = (n_k + alpha - 1) / (n + K (alpha - 1))
- means_k = (n_k xbar_k + kappa m0) / (n_k + kappa)
- full:      cov_k = (Psi + S_k + c_k d_k d_k^T) / (nu + D + 2 + n_k)
- tied:      cov = (Psi + sum_k [S_k + c_k d_k d_k^T]) / (nu + D + 1 + K + n)
- diag:      cov_kd = (Psi_dd + S_kd + c_k d_kd^2) / (nu + 3 + n_k)
- spherical: cov_k = (s + sum_d [S_kd + c_k d_kd^2]) / (nu + 2 + D + D n_k)

Without a prior these reduce to scikit-learn's updates, with ``reg_covar`` added to the diagonal.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from .numerics import tiny
from .params import GMMParams, make_params
from .priors import PriorParams
from .stats import SuffStats


def _scatter_about_mean(stats: SuffStats, nk: Array, covariance_type: str) -> Array:
    """Scatter about each component's weighted mean, from scatter about the reference means."""
    s1 = stats.s1
    if covariance_type == "full":
        return stats.s2 - jnp.einsum("kd,ke->kde", s1, s1) / nk[:, None, None]
    if covariance_type == "tied":
        return stats.s2 - jnp.einsum("kd,ke->de", s1 / nk[:, None], s1)
    if covariance_type == "diag":
        return stats.s2 - s1 * s1 / nk[:, None]
    return stats.s2 - jnp.sum(s1 * s1, axis=1) / nk


def m_step(
    stats: SuffStats,
    ref_means: Array,
    prior: PriorParams | None,
    reg_covar: Array,
    covariance_type: str,
    active: Array | None = None,
    kind: Array | None = None,
) -> GMMParams:
    """New parameters from statistics taken about ``ref_means``.

    Parameters
    ----------
    stats : SuffStats
    ref_means : array of shape (n_components, n_features)
    prior : PriorParams or None
        ``None`` gives the maximum-likelihood update.
    reg_covar : scalar
        Added to the covariance diagonal for maximum likelihood; ignored with a prior.
    covariance_type : str
    active : bool array of shape (n_components,), optional
        Components that take part. Inactive ones get weight 0 and unit covariance, so that one
        compiled program serves every number of components up to ``n_components``.
    kind : int array of shape (), optional
        Maximum likelihood with full statistics and parameters only: the index in
        :data:`bayesgmm.params.COVARIANCE_TYPES` of the covariance structure to fit, each held
        as full matrices (:func:`mixed_covariances`), so that one compiled program serves
        every covariance type of a model search.
    """
    k, d = ref_means.shape
    dtype = ref_means.dtype
    if active is None:
        active = jnp.ones(k, bool)
    n_active = jnp.sum(active)
    nk = stats.nk + tiny(dtype)
    xbar = ref_means + stats.s1 / nk[:, None]
    scatter = _scatter_about_mean(stats, nk, covariance_type)
    eye = jnp.eye(d, dtype=dtype)

    if kind is not None and (prior is not None or covariance_type != "full"):
        raise ValueError("kind needs maximum likelihood with full statistics")
    if prior is None:
        nk_active = jnp.where(active, nk, 0)
        weights = nk_active / jnp.sum(nk_active)
        means = xbar
        if kind is not None:  # one structure of a mixed-type program, as full matrices
            cov = mixed_covariances(scatter, nk, nk_active, reg_covar, kind)
        elif covariance_type == "full":
            cov = scatter / nk[:, None, None] + reg_covar * eye
        elif covariance_type == "tied":
            cov = scatter / jnp.sum(nk_active) + reg_covar * eye
        elif covariance_type == "diag":
            cov = scatter / nk[:, None] + reg_covar
        else:
            cov = scatter / (d * nk) + reg_covar
    else:
        alpha, kappa, m0, nu, psi = prior
        n = stats.weight
        weights = (stats.nk + alpha - 1) / (n + n_active * (alpha - 1))
        weights = jnp.where(active, weights, 0)
        means = (stats.nk[:, None] * xbar + kappa * m0) / (stats.nk[:, None] + kappa)
        c = kappa * stats.nk / (kappa + stats.nk)
        dev = xbar - m0
        if covariance_type == "full":
            num = psi + scatter + c[:, None, None] * jnp.einsum("kd,ke->kde", dev, dev)
            cov = num / (nu + d + 2 + stats.nk)[:, None, None]
        elif covariance_type == "tied":
            num = psi + scatter + jnp.einsum("k,kd,ke->de", c, dev, dev)
            cov = num / (nu + d + 1 + n_active + n)
        elif covariance_type == "diag":
            cov = (psi + scatter + c[:, None] * dev**2) / (nu + 3 + stats.nk)[:, None]
        else:
            cov = (psi + scatter + c * jnp.sum(dev**2, axis=1)) / (nu + 2 + d + d * stats.nk)
    if covariance_type != "tied":
        unit = eye if covariance_type == "full" else jnp.ones_like(cov[0])
        mask = active.reshape((k,) + (1,) * (cov.ndim - 1))
        cov = jnp.where(mask, cov, unit)
    return make_params(weights, means, cov, covariance_type)


def mixed_covariances(
    scatter: Array, nk: Array, nk_active: Array, reg_covar: Array, kind: Array
) -> Array:
    """Maximum-likelihood covariances of structure ``kind``, as full matrices (K, D, D).

    ``scatter`` (K, D, D) about each component's mean; ``kind`` indexes
    :data:`bayesgmm.params.COVARIANCE_TYPES` (traced). The same updates as :func:`m_step`'s per
    type: full ``S_k / n_k``, tied ``sum_k S_k / n`` for every component, diag the diagonal of
    ``S_k / n_k``, spherical ``tr(S_k) / (D n_k)`` times the identity; ``reg_covar`` added to the
    diagonal. All four are formed (K D^2 numbers, nothing beside the E-step) and one is kept.
    """
    k, d = scatter.shape[0], scatter.shape[-1]
    eye = jnp.eye(d, dtype=scatter.dtype)
    per = scatter / nk[:, None, None]
    var = jnp.diagonal(per, axis1=-2, axis2=-1)
    options = jnp.stack(
        [
            per,
            jnp.broadcast_to(jnp.sum(scatter, axis=0) / jnp.sum(nk_active), (k, d, d)),
            var[:, :, None] * eye,
            (jnp.sum(var, axis=1) / d)[:, None, None] * eye,
        ]
    )
    return options[kind] + reg_covar * eye
