"""E-step: component log-densities, responsibilities and additive sufficient statistics.

The statistics of a block of rows are sums over its rows, so blocks, devices and streams combine
by addition. Second moments are accumulated about a reference point per component (the current
means), which keeps float32 accurate: ``s1`` and ``s2`` are small when the means are good.

Rows are processed in blocks of ``block_size`` with ``lax.scan``; no array larger than
(block_size, K, D) is ever formed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.special import logsumexp

from .params import GMMParams, log_det_precision_chol

# Target number of elements of the (block, K, D) working array; 2**20 doubles are 8 MiB.
_BLOCK_ELEMENTS = 2**20


class SuffStats(NamedTuple):
    """Weighted sufficient statistics of a set of rows, about reference means ``m``."""

    nk: Array  # shape=(K,), sum_i w_i r_ik
    s1: Array  # shape=(K, D), sum_i w_i r_ik (x_i - m_k)
    s2: Array  # full (K, D, D); tied (D, D) summed over k; diag (K, D); spherical (K,): scatter about m
    loglik: Array  # shape=(), sum_i w_i log p(x_i)
    weight: Array  # shape=(), sum_i w_i


def choose_block_size(n_samples: int, n_components: int, n_features: int) -> int:
    """Rows per block so that the (block, K, D) working array stays near 2**20 elements."""
    per_row = max(n_components * max(n_features, 1), 1)
    block = max(_BLOCK_ELEMENTS // per_row, 256)
    if block >= n_samples:
        return max(n_samples, 1)
    # Prefer a block that divides the data into nearly equal parts, to limit padding.
    n_blocks = math.ceil(n_samples / block)
    return math.ceil(n_samples / n_blocks)


def to_blocks(X: Array, sample_weight: Array, block_size: int) -> tuple[Array, Array]:
    """Pad rows to a multiple of ``block_size`` (with zero weight) and reshape into blocks."""
    n, d = X.shape
    n_blocks = -(-n // block_size)
    pad = n_blocks * block_size - n
    if pad:
        X = jnp.concatenate([X, jnp.broadcast_to(X[:1], (pad, d))])
        sample_weight = jnp.concatenate([sample_weight, jnp.zeros(pad, sample_weight.dtype)])
    return X.reshape(n_blocks, block_size, d), sample_weight.reshape(n_blocks, block_size)


def centered(X: Array, means: Array) -> Array:
    """``X[:, None, :] - means[None]``: shape (B, K, D)."""
    return X[:, None, :] - means[None, :, :]


def log_gaussian_from_centered(xc: Array, params: GMMParams, covariance_type: str) -> Array:
    """log N(x_i | mean_k, cov_k) from centred rows ``xc`` of shape (B, K, D): shape (B, K)."""
    d = xc.shape[-1]
    pc = params.precisions_chol
    if covariance_type == "full":
        y = jnp.einsum("bkd,kde->bke", xc, pc)
    elif covariance_type == "tied":
        y = jnp.einsum("bkd,de->bke", xc, pc)
    elif covariance_type == "diag":
        y = xc * pc[None]
    else:
        y = xc * pc[None, :, None]
    log_det = log_det_precision_chol(pc, covariance_type, d)
    return -0.5 * (d * jnp.log(2 * jnp.pi) + jnp.sum(y * y, axis=-1)) + log_det


def weighted_log_prob(X: Array, params: GMMParams, covariance_type: str) -> Array:
    """log pi_k + log N(x_i | mean_k, cov_k): shape (B, K)."""
    xc = centered(X, params.means)
    return log_gaussian_from_centered(xc, params, covariance_type) + jnp.log(params.weights)


def stats_from_resp(xc: Array, resp_w: Array, covariance_type: str) -> tuple[Array, Array, Array]:
    """(nk, s1, s2) of one block from centred rows and weighted responsibilities (B, K)."""
    nk = jnp.sum(resp_w, axis=0)
    s1 = jnp.einsum("bk,bkd->kd", resp_w, xc)
    if covariance_type == "full":
        s2 = jnp.einsum("bkd,bke->kde", resp_w[:, :, None] * xc, xc)
    elif covariance_type == "tied":
        s2 = jnp.einsum("bkd,bke->de", resp_w[:, :, None] * xc, xc)
    elif covariance_type == "diag":
        s2 = jnp.einsum("bk,bkd->kd", resp_w, xc * xc)
    else:
        s2 = jnp.einsum("bk,bk->k", resp_w, jnp.sum(xc * xc, axis=-1))
    return nk, s1, s2


# A responsibility rule: (block rows (B, D), centred rows (B, K, D), block index) -> (resp, log_norm)
RespFn = Callable[[Array, Array, Array], tuple[Array, Array]]


def accumulate(
    X_blocks: Array,
    w_blocks: Array,
    ref_means: Array,
    resp_fn: RespFn,
    covariance_type: str,
) -> SuffStats:
    """Sum the sufficient statistics over blocks with ``lax.scan``.

    Parameters
    ----------
    X_blocks : array of shape (n_blocks, block_size, n_features)
    w_blocks : array of shape (n_blocks, block_size)
        Sample weights; padded rows have weight 0.
    ref_means : array of shape (n_components, n_features)
        The reference points about which ``s1`` and ``s2`` are taken.
    resp_fn : callable
        Gives the responsibilities (B, K) and per-row log-normaliser (B,) of a block.
    covariance_type : str
    """
    k, d = ref_means.shape
    dtype = X_blocks.dtype
    s2_shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[
        covariance_type
    ]
    init = SuffStats(
        jnp.zeros(k, dtype),
        jnp.zeros((k, d), dtype),
        jnp.zeros(s2_shape, dtype),
        jnp.zeros((), dtype),
        jnp.zeros((), dtype),
    )

    def body(acc: SuffStats, block):
        xb, wb, i = block
        xc = centered(xb, ref_means)
        resp, log_norm = resp_fn(xb, xc, i)
        nk, s1, s2 = stats_from_resp(xc, resp * wb[:, None], covariance_type)
        # Padded or zero-weight rows must not turn a -inf log-density into NaN.
        ll = jnp.sum(jnp.where(wb > 0, wb * log_norm, 0))
        new = SuffStats(nk, s1, s2, ll, jnp.sum(wb))
        return jax.tree.map(jnp.add, acc, new), None

    idx = jnp.arange(X_blocks.shape[0])
    out, _ = jax.lax.scan(body, init, (X_blocks, w_blocks, idx))
    return out


def gaussian_resp_fn(params: GMMParams, covariance_type: str) -> RespFn:
    """The E-step's responsibility rule: posterior component probabilities under ``params``."""

    def resp_fn(xb, xc, i):
        del xb, i
        lp = log_gaussian_from_centered(xc, params, covariance_type) + jnp.log(params.weights)
        log_norm = logsumexp(lp, axis=1)
        return jnp.exp(lp - log_norm[:, None]), log_norm

    return resp_fn


def e_step(X_blocks: Array, w_blocks: Array, params: GMMParams, covariance_type: str) -> SuffStats:
    """Sufficient statistics about the current means, and the log-likelihood of ``params``."""
    return accumulate(
        X_blocks, w_blocks, params.means, gaussian_resp_fn(params, covariance_type), covariance_type
    )


def map_blocks(fn: Callable[[Array], Array], X: Array, block_size: int) -> Array:
    """Apply a row-wise ``fn`` block by block (``lax.map``) and stitch the rows back together."""
    n = X.shape[0]
    Xb, _ = to_blocks(X, jnp.ones(n, X.dtype), block_size)
    out = jax.lax.map(fn, Xb)
    return out.reshape((-1,) + out.shape[2:])[:n]
