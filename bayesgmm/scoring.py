"""Scoring and sampling of a fitted mixture: far-point safe, and compiled once per size bucket.

Rows are mapped by the fit's transformation (``bayesgmm._transform``) on the host in float64,
then each row farther than ``_FAR`` from the fit's centre is scaled down by a power of two ``t``
so that nothing overflows; the log-density of component k is ``t^2 a_k`` with ``a`` from
:func:`bayesgmm.stats.scaled_log_prob_fn`. Row counts (and sample sizes) are padded to buckets
(powers of two from 64, then multiples of 65536), so a new count rarely compiles.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._transform import Transform, params_to_working, transform_of_params
from .numerics import float_dtype
from .params import GMMParams, full_covariances, make_params
from .stats import choose_block_size, map_blocks, scaled_log_prob_fn


# What the scoring methods keep of the scaled log-densities ``(a, t2)`` of a block of rows
# (see bayesgmm.stats.scaled_log_prob_fn): the log-density of component k is ``t2 * a[k]``.
def _reduce(a: Array, t2: Array, output: str) -> Array:
    if output == "predict":
        return jnp.argmax(a, axis=0, keepdims=True)
    # a - max(a) <= 0, times t2 > 0: exp never overflows, and the largest term is exp(0) = 1.
    e = t2[None, :] * (a - jnp.max(a, axis=0, keepdims=True))
    lse = jnp.log(jnp.sum(jnp.exp(e), axis=0, keepdims=True))
    if output == "predict_proba":
        return jnp.exp(e - lse)
    big = jnp.finfo(a.dtype).max
    # Beyond the dtype's range the log-density is reported as its most negative finite value.
    return jnp.maximum(t2[None, :] * jnp.max(a, axis=0, keepdims=True) + lse, -big)


@partial(jax.jit, static_argnames=("covariance_type", "block_size", "output"))
def score_rows(Xt, params: GMMParams, covariance_type: str, block_size: int, output: str):
    """Block by block, ``output`` of the rows ``Xt`` (D + 2, n): shape (n, K) or (n,).

    The last two rows of ``Xt`` are each row's ``1 / t`` and ``t^2`` (see :func:`rows_for_scoring`).
    """
    log_prob = scaled_log_prob_fn(params, covariance_type)

    def block(xt):
        a = log_prob(xt[:-2], xt[-2], xt[-1])
        return _reduce(a, xt[-1], output)

    out = map_blocks(block, Xt, block_size)
    return out[:, 0] if output in ("score_samples", "predict") else out


# Rows farther than this (in units of the fit's scale) from its centre are scaled down by a
# power of two t before the cast, so that their squares cannot overflow (the log-densities are
# then ``t^2`` times those of the scaled rows).
_FAR = {np.dtype(np.float32): 2.0**20, np.dtype(np.float64): 2.0**100}


def bucket(n: int) -> int:
    """Row counts are padded to these sizes, so that a new count rarely compiles anew."""
    if n <= 2**16:
        return max(64, 1 << (n - 1).bit_length())
    return -(-n // 2**16) * 2**16


def rows_for_scoring(X: np.ndarray, t: Transform, dtype) -> np.ndarray:
    """``(X - shift) / scale`` as columns with two more rows (1 / t, t^2), padded to a bucket."""
    n, d = X.shape
    dtype = np.dtype(dtype)
    y = np.asarray(X, np.float64) / t.scale - t.shift / t.scale
    far = np.max(np.abs(y), axis=1)
    tscale = np.where(far > _FAR[dtype], np.exp2(np.ceil(np.log2(np.maximum(far, 1.0)))), 1.0)
    out = np.zeros((d + 2, bucket(n)), dtype)
    out[-2:] = 1.0  # padding rows: t = 1
    out[:d, :n] = (y / tscale[:, None]).T
    out[d, :n] = 1.0 / tscale
    out[d + 1, :n] = np.minimum(tscale, np.sqrt(np.finfo(dtype).max)) ** 2
    return out


@partial(jax.jit, static_argnames=("covariance_type", "n_samples"))
def sample_rows(key, params: GMMParams, covariance_type: str, n_samples: int):
    k1, k2 = jax.random.split(key)
    n_components, d = params.means.shape
    labels = jax.random.categorical(k1, jnp.log(params.weights), shape=(n_samples,))
    cov = full_covariances(params.covariances, covariance_type, n_components, d)
    chol = jnp.linalg.cholesky(cov)
    z = jax.random.normal(k2, (n_samples, d), params.means.dtype)
    return params.means[labels] + jnp.einsum("nde,ne->nd", chol[labels], z), labels


def clamp(x: float) -> float:
    big = np.finfo(np.float64).max
    with np.errstate(over="ignore"):
        return float(np.clip(x, -big, big))


def score_array(
    params: GMMParams, t: Transform, covariance_type: str, output: str, Xa: np.ndarray
) -> np.ndarray:
    """``output`` of validated rows ``Xa`` (n, D) under working-space ``params``: (n, K) or (n,).

    The rows are mapped by ``t`` and padded to a bucket of row counts (no compilation per n).
    """
    n, d = Xa.shape
    Xt = rows_for_scoring(Xa, t, np.dtype(params.means.dtype))
    block = choose_block_size(Xt.shape[1], params.means.shape[0], d)
    return np.asarray(score_rows(Xt, params, covariance_type, block, output))[:n]


def total_of(lp) -> tuple[float, int]:
    """Sum of log-densities in float64 (clamped to the finite range) and their number."""
    lp = np.asarray(lp, np.float64)
    n = lp.shape[0]
    with np.errstate(over="ignore"):  # lp / n: a sum of huge terms stays in range
        return clamp(np.sum(lp / n) * n), n


def draw(key, params: GMMParams, t: Transform, covariance_type: str, n: int):
    """``n`` rows (float64, the data's units) and their labels, drawn for ``n``'s bucket."""
    y, labels = sample_rows(key, params, covariance_type, bucket(n))
    return t.shift + t.scale * np.asarray(y, np.float64)[:n], np.asarray(labels)[:n]


def working_params(validated, covariance_type: str) -> tuple[GMMParams, Transform]:
    """Validated (weights, means, covariances) as working-space parameters and their transform.

    ``FitResult.from_params`` scores and samples about the mixture's centre, at its overall
    spread (:func:`bayesgmm._transform.transform_of_params`), as a fit does.
    """
    t = transform_of_params(*validated, covariance_type)
    pw = params_to_working(*validated, t, covariance_type, float_dtype())
    return make_params(*(jnp.asarray(a) for a in pw), covariance_type), t
