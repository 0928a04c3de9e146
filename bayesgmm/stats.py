"""E-step: component log-densities, responsibilities and additive sufficient statistics.

The statistics of a block of rows are sums over its rows, so blocks, devices and streams combine
by addition. Second moments are accumulated about reference points, which :func:`e_step` returns
with them and the M-step consumes.

The data are held as columns, ``Xt`` of shape (n_features, n_samples), and processed in blocks
of ``block_size`` columns with ``lax.scan``, read straight from ``Xt`` with ``lax.dynamic_slice``
(no padded or reshaped copy of the data). A block is ``xt`` of shape (D, B); per-component arrays
are (K, B) or (K, D, B), so every contraction over the rows of a block is a plain matrix product
over contiguous memory. No array larger than (K, D, block_size) is ever formed.

The E-step (:func:`e_step`) either expands the quadratic forms or centres every row on every
component's current mean. float64 expands; float32 centres by default, because the expansion's
cancellation in float32 can hide variances as small as a maximum-likelihood ``reg_covar`` floor,
and the fitting driver expands float32 on large data and fits again, centred, where that shows.
``log pi_k N(x | mu_k, Sigma_k)`` is a quadratic polynomial in ``x``: ``theta_k . phi(x - c) +
beta_k`` with features ``phi`` of the rows centred on one point ``c``, the mixture mean (full: the
products ``x_i x_j``, ``i <= j``, and ``x``; diag: ``x_i^2`` and ``x``; spherical: ``|x|^2`` and
``x``). The K log-densities of a block are one product (K, F) x (F, B), and the statistics
another, ``resp phi^T`` (K, F), which holds ``s1`` and ``s2`` about ``c``: half the arithmetic of
centring and whitening the rows for every component, and no (K, D, B) array. The price is
cancellation: about ``eps |x - c|^2 / sigma_k^2`` in the log-densities and ``eps |xbar_k - c|^2``
in the variances (float64: 1e-8 at a 1e4-sigma separation; float32 would lose 1e-3 at 1e2
sigma, which is why it centres unless the driver checks). The EM loop counts a variance below
what the statistics resolve as singular (``em.cancellation_floor``).
``sum_blocks(..., compensated=True)`` offers Kahan summation of block statistics for low
precisions.

Scoring (:func:`log_prob_fn`, for ``predict`` and ``score_samples``) expands in float64 only;
float32 there centres every row on every component's mean and whitens it with the precision
Cholesky factor (as scikit-learn does), which stays accurate for rows far from the data, and the
statistics of any other responsibility rule (:func:`accumulate`) are taken about given reference
means from rows centred on them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.special import logsumexp

from .params import GMMParams, log_det_precision_chol

# Rows per block B. The working arrays of a block should stay within a core's cache, and blocks
# should be long enough to amortise the per-block cost of the loop. Two working sets bound B:
# the (K, D, B) arrays of centred rows (scoring, :func:`accumulate`), about 2**18 elements, and
# the expanded E-step's features (F, B), F = D (D + 3) / 2 for a full covariance, whose two
# matrix products read them from cache when F B is about 2**15 elements (256 KiB in float64).
# benchmarks/bench_em.py measures the effect.
_BLOCK_ELEMENTS = 2**18
_FEATURE_ELEMENTS = 2**15
_MIN_BLOCK = 256
_MAX_BLOCK = 8192


class SuffStats(NamedTuple):
    """Weighted sufficient statistics of a set of rows, about reference means ``m``."""

    nk: Array  # shape=(K,), sum_i w_i r_ik
    s1: Array  # shape=(K, D), sum_i w_i r_ik (x_i - m_k)
    # full (K, D, D); tied (D, D) summed over k; diag (K, D); spherical (K,): scatter about m
    s2: Array
    loglik: Array  # shape=(), sum_i w_i log p(x_i)
    weight: Array  # shape=(), sum_i w_i


def choose_block_size(n_samples: int, n_components: int, n_features: int) -> int:
    """Rows per block: at most about ``_BLOCK_ELEMENTS`` elements of (K, D, B) and
    ``_FEATURE_ELEMENTS`` of the full-covariance features (D (D + 3) / 2, B), never more than n.

    The block is a multiple of 64 rows (for the vector units) between 256 and 8192, or all the
    rows when there are fewer; small data sets are then a single block and need no loop.
    """
    per_row = max(n_components * n_features, 1)
    n_feat = n_features * (n_features + 3) // 2
    block = min(_BLOCK_ELEMENTS // per_row, _FEATURE_ELEMENTS // max(n_feat, 1))
    block = min(max(block, _MIN_BLOCK), _MAX_BLOCK) // 64 * 64
    if block >= n_samples:
        return max(n_samples, 1)
    # Equal blocks: the last one overlaps its predecessor instead of being padded.
    n_blocks = math.ceil(n_samples / block)
    return math.ceil(n_samples / n_blocks / 64) * 64 if n_blocks > 1 else block


def n_blocks(n_samples: int, block_size: int) -> int:
    return -(-n_samples // block_size)


def row_block(Xt: Array, sample_weight: Array, block_size: int, i: Array) -> tuple[Array, Array]:
    """Block ``i`` of the rows of ``Xt`` (D, n): columns ``xt`` (D, B) and weights (B,).

    The blocks are rows ``[i B, (i + 1) B)``; the last one is moved back to end at the last row,
    and its rows that the previous block already holds get weight 0. No padding, no copy.
    """
    n = Xt.shape[1]
    if isinstance(i, (int, np.integer)):
        # A block index known while tracing (the first block, or data in one block): slice with
        # Python integers. jnp arithmetic on concrete values would run op by op, each op
        # compiling a small program of its own on the first call in a process.
        start = min(int(i) * block_size, n - block_size)
        xt = jax.lax.slice_in_dim(Xt, start, start + block_size, axis=1)
        wb = jax.lax.slice_in_dim(sample_weight, start, start + block_size)
        fresh = np.arange(start, start + block_size) >= int(i) * block_size
        return xt, (wb if fresh.all() else jnp.where(fresh, wb, 0))
    start = jnp.minimum(i * block_size, n - block_size)
    xt = jax.lax.dynamic_slice_in_dim(Xt, start, block_size, axis=1)
    wb = jax.lax.dynamic_slice_in_dim(sample_weight, start, block_size)
    fresh = start + jnp.arange(block_size) >= i * block_size
    return xt, jnp.where(fresh, wb, 0)


# --------------------------------------------------------------------------- log-densities


def centered(xt: Array, means: Array) -> Array:
    """Rows centred on every component: ``xk[k, :, b] = x_b - means[k]``, shape (K, D, B)."""
    return xt[None, :, :] - means[:, :, None]


def _log_norm_const(params: GMMParams, covariance_type: str) -> Array:
    """log pi_k + log det U_k - D/2 log(2 pi): shape (K,)."""
    d = params.means.shape[1]
    log_det = log_det_precision_chol(params.precisions_chol, covariance_type, d)
    return jnp.log(params.weights) + log_det - 0.5 * d * jnp.log(2 * jnp.pi)


def _mahalanobis_centered(xk: Array, params: GMMParams, covariance_type: str) -> Array:
    """Squared Mahalanobis distances (K, B) from rows centred on each component (K, D, B)."""
    pc = params.precisions_chol
    if covariance_type in ("full", "tied"):
        # tied as K batched products too: XLA does "de,kdb->keb" (a product over two axes of
        # xk) several times slower.
        y = jnp.einsum("kde,kdb->keb", jnp.broadcast_to(pc, xk.shape[:1] + pc.shape[-2:]), xk)
    elif covariance_type == "diag":
        y = xk * pc[:, :, None]
    else:
        y = xk * pc[:, None, None]
    return jnp.sum(y * y, axis=1)


def center_of(params: GMMParams) -> Array:
    """The mixture mean ``sum_k pi_k mu_k`` (D,): the expansion point of the quadratic forms."""
    return params.weights @ params.means


def _features(xc: Array, params: GMMParams, covariance_type: str) -> Array:
    """Features ``phi`` (F, B) of rows ``xc`` (D, B) centred on ``center_of(params)``."""
    d = xc.shape[0]
    if covariance_type == "full":
        i, j = np.triu_indices(d)
        return jnp.concatenate([xc[i] * xc[j], xc])
    if covariance_type == "tied":
        y = params.precisions_chol.T @ xc  # |U^T x|^2 = x^T P x, shared by all components
        return jnp.concatenate([jnp.sum(y * y, axis=0, keepdims=True), xc])
    if covariance_type == "diag":
        return jnp.concatenate([xc * xc, xc])
    return jnp.concatenate([jnp.sum(xc * xc, axis=0, keepdims=True), xc])


def _natural_params(params: GMMParams, covariance_type: str) -> tuple[Array, Array]:
    """``(theta (K, F), beta (K,))``: ``log pi_k N(x | k) = theta_k . phi(x - c) + beta_k``.

    With ``delta_k = mu_k - c`` and ``P_k = U_k U_k^T``: the quadratic term of ``-1/2 (x -
    delta_k)^T P_k (x - delta_k)`` gives the coefficients of ``x_i x_j`` (``-P_ii / 2`` on the
    diagonal, ``-P_ij`` off it), the linear term ``P_k delta_k``, the constant
    ``-|U_k^T delta_k|^2 / 2``.
    """
    k, d = params.means.shape
    pc = params.precisions_chol
    delta = params.means - center_of(params)
    if covariance_type == "full":
        yd = jnp.einsum("kd,kde->ke", delta, pc)  # U_k^T delta_k
        lin = jnp.einsum("kde,ke->kd", pc, yd)  # P_k delta_k
        i, j = np.triu_indices(d)
        P = jnp.einsum("kde,kfe->kdf", pc, pc)
        quad = -0.5 * P[:, i, j] * jnp.asarray(np.where(i == j, 1.0, 2.0), P.dtype)
        theta = jnp.concatenate([quad, lin], axis=1)
        const = jnp.sum(yd * yd, axis=1)
    elif covariance_type == "tied":
        yd = delta @ pc
        lin = yd @ pc.T
        theta = jnp.concatenate([jnp.full((k, 1), -0.5, pc.dtype), lin], axis=1)
        const = jnp.sum(yd * yd, axis=1)
    elif covariance_type == "diag":
        p = pc * pc
        theta = jnp.concatenate([-0.5 * p, p * delta], axis=1)
        const = jnp.sum(p * delta * delta, axis=1)
    else:
        p = (pc * pc)[:, None]
        theta = jnp.concatenate([-0.5 * p, p * delta], axis=1)
        const = p[:, 0] * jnp.sum(delta * delta, axis=1)
    beta = _log_norm_const(params, covariance_type) - 0.5 * const
    return theta.astype(pc.dtype), beta.astype(pc.dtype)


# A responsibility rule: (block columns xt (D, B), rows centred on the reference means (K, D, B),
# block index) -> (responsibilities (K, B), per-row log-normaliser (B,)).
RespFn = Callable[[Array, Array, Array], tuple[Array, Array]]


def log_prob_fn(
    params: GMMParams, covariance_type: str, centred: bool = False
) -> Callable[..., Array]:
    """``f(xt, xk=None)``: log pi_k + log N(x_b | mu_k, Sigma_k), shape (K, B).

    ``xt`` (D, B) are rows as columns; ``xk`` (K, D, B), the same rows centred on the means, is
    reused by float32 when the caller has it. float64 expands the quadratic forms about the
    mixture mean (one matrix product per block) unless ``centred``; float32 centres on every
    component. The module docstring says why.
    """
    if _expands(params) and not centred:
        theta, beta = _natural_params(params, covariance_type)
        c = center_of(params)[:, None]

        def expanded(xt, xk=None):
            return theta @ _features(xt - c, params, covariance_type) + beta[:, None]

        return expanded
    const = _log_norm_const(params, covariance_type)[:, None]

    def whitened(xt, xk=None):
        xk = centered(xt, params.means) if xk is None else xk
        return const - 0.5 * _mahalanobis_centered(xk, params, covariance_type)

    return whitened


def scaled_log_prob_fn(params: GMMParams, covariance_type: str) -> Callable[..., Array]:
    """``f(xt, r, t2) -> a`` (K, B) with ``log pi_k N(x_b | k) = t2_b * a[k, b]``: for scoring.

    Each row ``x_b`` comes scaled down by a power of two ``t_b >= 1`` (``xt = x / t``, ``r =
    1 / t``, ``t2 = t^2``, capped at the dtype's largest value), so that rows arbitrarily far
    from the means neither overflow nor lose the log-densities' order: ``a = const / t^2 -
    |U^T (x / t - mu / t)|^2 / 2``. Rows are always centred on every component (no expansion
    about one point, which cancels for far rows). Overflowing ``a`` is clamped to the dtype's
    most negative finite value; components of weight zero get ``-inf``.
    """
    const = _log_norm_const(params, covariance_type)[:, None]
    big = jnp.finfo(params.means.dtype).max
    positive = (params.weights > 0)[:, None]

    def scaled(xt, r, t2):
        xk = xt[None, :, :] - params.means[:, :, None] * r[None, None, :]
        a = const / t2[None, :] - 0.5 * _mahalanobis_centered(xk, params, covariance_type)
        return jnp.where(positive, jnp.maximum(a, -big), -jnp.inf)

    return scaled


def _expands(params: GMMParams) -> bool:
    """Whether the E-step expands the quadratic forms (float64) or centres (float32)."""
    return params.means.dtype == jnp.float64


def _responsibilities(lp: Array) -> tuple[Array, Array]:
    """Posterior probabilities (K, B) and the log-normaliser (B,) from log pi_k N(x | k)."""
    log_norm = logsumexp(lp, axis=0)
    return jnp.exp(lp - log_norm[None, :]), log_norm


def _responsibilities_one_exp(lp: Array) -> tuple[Array, Array]:
    """:func:`_responsibilities` with one exponential per element instead of two.

    ``e = exp(lp - max)`` gives both the normaliser ``max + log sum e`` and the responsibilities
    ``e / sum e``. A row whose log-densities are all ``-inf`` gets the normaliser ``-inf`` and
    zero responsibilities, as with :func:`logsumexp`.
    """
    top = jnp.max(lp, axis=0)
    top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0))
    e = jnp.exp(lp - top[None, :])
    total = jnp.sum(e, axis=0)
    safe = jnp.where(total > 0, total, 1)
    return e * (1 / safe)[None, :], top + jnp.log(total)


def _loglik(log_norm: Array, wb: Array) -> Array:
    # Zero-weight rows must not turn a -inf log-density into NaN.
    return jnp.sum(jnp.where(wb > 0, wb * log_norm, 0))


# --------------------------------------------------------------------------- statistics


def stats_from_resp(xk: Array, resp_w: Array, covariance_type: str) -> tuple[Array, Array, Array]:
    """(nk, s1, s2) of a block from centred rows (K, D, B) and weighted responsibilities (K, B)."""
    nk = jnp.sum(resp_w, axis=1)
    s1 = jnp.einsum("kdb,kb->kd", xk, resp_w)
    if covariance_type in ("full", "tied"):
        s2 = jnp.einsum("kdb,keb->kde", xk * resp_w[:, None, :], xk)
        s2 = jnp.sum(s2, axis=0) if covariance_type == "tied" else s2
    elif covariance_type == "diag":
        s2 = jnp.einsum("kdb,kb->kd", xk * xk, resp_w)
    else:
        s2 = jnp.einsum("kdb,kb->k", xk * xk, resp_w)
    return nk, s1, s2


def _stats_from_features(
    xc: Array, phi: Array, resp_w: Array, wb: Array, covariance_type: str
) -> tuple[Array, Array, Array]:
    """(nk, s1, s2) about the expansion point from the features: one product ``resp_w phi^T``.

    ``s2`` of a full covariance comes packed, its upper triangle (K, D (D + 1) / 2).
    """
    d = xc.shape[0]
    m = resp_w @ phi.T  # (K, F)
    nk = jnp.sum(resp_w, axis=1)
    s1 = m[:, -d:]
    if covariance_type == "full":
        s2 = m[:, :-d]
    elif covariance_type == "tied":  # the responsibilities of a row sum to one
        s2 = (xc * wb[None, :]) @ xc.T
    elif covariance_type == "diag":
        s2 = m[:, :d]
    else:
        s2 = m[:, 0]
    return nk, s1, s2


def _unpack_symmetric(packed: Array, d: int) -> Array:
    """(K, D (D + 1) / 2) upper triangles -> (K, D, D) symmetric matrices."""
    i, j = np.triu_indices(d)
    out = jnp.zeros(packed.shape[:-1] + (d, d), packed.dtype).at[..., i, j].set(packed)
    return out.at[..., j, i].set(packed)


def sum_blocks(
    Xt: Array,
    sample_weight: Array,
    block_size: int,
    block_fn: Callable[[Array, Array, Array], object],
    blocks: Array | None = None,
    compensated: bool = False,
):
    """Sum ``block_fn(xt, wb, i)`` (a pytree) over the row blocks of ``Xt``.

    A ``lax.scan`` over the blocks; data that fit in one block need no loop. ``blocks`` (int
    array), if given, are the indices of the blocks to sum; indices past the last block stand
    for empty blocks (all weights zero). ``compensated`` sums with Kahan's compensation, so the
    rounding error of the sum does not grow with the number of blocks (used in float32, where
    sequential sums over a thousand blocks would lose three digits).
    """
    if blocks is None:  # NumPy: concrete indices (see row_block)
        blocks = np.arange(n_blocks(Xt.shape[1], block_size), dtype=np.int32)

    def one(i):
        xt, wb = row_block(Xt, sample_weight, block_size, i)
        return block_fn(xt, wb, i)

    first = one(blocks[0])
    if blocks.shape[0] == 1:
        return first

    if not compensated:

        def body(acc, i):
            return jax.tree.map(jnp.add, acc, one(i)), None

        out, _ = jax.lax.scan(body, first, blocks[1:])
        return out

    def kahan(carry, i):
        total, comp = carry
        y = jax.tree.map(jnp.subtract, one(i), comp)
        new = jax.tree.map(jnp.add, total, y)
        # (new - total) - y is the part of y that the addition lost; XLA keeps the order of
        # floating-point operations, so this is not simplified away.
        comp = jax.tree.map(lambda n, t, y: (n - t) - y, new, total, y)
        return (new, comp), None

    zeros = jax.tree.map(jnp.zeros_like, first)
    (out, _), _ = jax.lax.scan(kahan, (first, zeros), blocks[1:])
    return out


def accumulate(
    Xt: Array,
    sample_weight: Array,
    block_size: int,
    ref_means: Array,
    resp_fn: RespFn,
    covariance_type: str,
    blocks: Array | None = None,
) -> SuffStats:
    """Sufficient statistics about ``ref_means`` of any responsibility rule (rows centred).

    Parameters
    ----------
    Xt : array of shape (n_features, n_samples)
        The data, one column per row.
    sample_weight : array of shape (n_samples,)
    block_size : int
        Rows per block, at most n_samples (see :func:`choose_block_size`).
    ref_means : array of shape (n_components, n_features)
        The reference points about which ``s1`` and ``s2`` are taken.
    resp_fn : callable
        Gives the responsibilities (K, B) and per-row log-normaliser (B,) of a block.
    covariance_type : str
    blocks : int array, optional
        Only these blocks (see :func:`sum_blocks`).
    """

    def block_fn(xt, wb, i) -> SuffStats:
        xk = centered(xt, ref_means)
        resp, log_norm = resp_fn(xt, xk, i)
        nk, s1, s2 = stats_from_resp(xk, resp * wb[None, :], covariance_type)
        return SuffStats(nk, s1, s2, _loglik(log_norm, wb), jnp.sum(wb))

    return sum_blocks(Xt, sample_weight, block_size, block_fn, blocks)


def e_step(
    Xt: Array,
    sample_weight: Array,
    block_size: int,
    params: GMMParams,
    covariance_type: str,
    blocks: Array | None = None,
    centred: bool | None = None,
) -> tuple[SuffStats, Array]:
    """The statistics of the responsibilities under ``params``, and the log-likelihood.

    ``blocks``, if given, restricts them to those row blocks (see :func:`sum_blocks`).
    ``centred``: True centres the rows on every component, False expands the quadratic forms
    about the mixture mean, None chooses by dtype (float64 expands, float32 centres). The
    fitting driver expands in both precisions and fits again, centred, when the components
    sit too far apart for the expansion's cancellation (see there).

    Returns
    -------
    stats : SuffStats
    ref_means : array of shape (n_components, n_features)
        The reference points of ``stats``: the current means (float32), or the mixture mean
        repeated (float64, whose statistics come from the expansion's features).
    """
    if centred is None:
        centred = not _expands(params)
    if centred:
        # Without the driver's check, float32 centres on every component: the expansion's
        # cancellation (eps |xbar_k - c|^2 in a variance) would hide variances as small as a
        # maximum-likelihood reg_covar floor. Either precision centres when asked.
        log_prob = log_prob_fn(params, covariance_type, centred=True)

        def resp_fn(xt, xk, i):
            return _responsibilities(log_prob(xt, xk))

        stats = accumulate(
            Xt, sample_weight, block_size, params.means, resp_fn, covariance_type, blocks
        )
        return stats, params.means

    theta, beta = _natural_params(params, covariance_type)
    c = center_of(params)

    def block_fn(xt, wb, i) -> SuffStats:
        # The barrier keeps the centring out of the feature loop, which XLA would otherwise
        # redo for every feature (2x slower).
        xc = jax.lax.optimization_barrier(xt - c[:, None])
        phi = _features(xc, params, covariance_type)
        resp, log_norm = _responsibilities_one_exp(theta @ phi + beta[:, None])
        nk, s1, s2 = _stats_from_features(xc, phi, resp * wb[None, :], wb, covariance_type)
        return SuffStats(nk, s1, s2, _loglik(log_norm, wb), jnp.sum(wb))

    compensated = jnp.finfo(Xt.dtype).bits < 64
    stats = sum_blocks(Xt, sample_weight, block_size, block_fn, blocks, compensated)
    if covariance_type == "full":
        stats = stats._replace(s2=_unpack_symmetric(stats.s2, c.shape[0]))
    return stats, jnp.broadcast_to(c, params.means.shape)


def map_blocks(fn: Callable[[Array], Array], Xt: Array, block_size: int) -> Array:
    """Apply a column-block function ``fn(xt (D, B)) -> (K, B)`` to all of ``Xt``: shape (n, K)."""
    n = Xt.shape[1]
    nb = n_blocks(n, block_size)
    ones = jnp.ones(n, Xt.dtype)

    def one(i):
        return fn(row_block(Xt, ones, block_size, i)[0])

    if nb == 1:
        return one(jnp.zeros((), jnp.int32)).T
    out = jax.lax.map(one, jnp.arange(nb, dtype=jnp.int32))  # (nb, K, B)
    rows = jnp.swapaxes(out, 1, 2)
    head = rows[:-1].reshape(-1, rows.shape[-1])
    tail = rows[-1][nb * block_size - n :]  # the last block's rows not already in ``head``
    return jnp.concatenate([head, tail])


def data_moments(Xt: Array, sample_weight: Array, block_size: int) -> tuple[Array, Array, Array]:
    """Weighted mean (D,), covariance (D, D) (divisor: the total weight) and total weight ().

    One blocked pass of :func:`accumulate` with all the responsibility on one component, its
    statistics taken about the weighted mean (a matrix-vector product) so that the scatter does
    not cancel. Computed in the dtype of ``Xt``.
    """
    total = jnp.sum(sample_weight)
    mean = (Xt @ sample_weight) / total

    def one_component(xt, xk, i):
        b = xt.shape[1]  # NumPy constants: no op-by-op programs while tracing
        return np.ones((1, b), xt.dtype), np.zeros(b, xt.dtype)

    stats = accumulate(Xt, sample_weight, block_size, mean[None, :], one_component, "full")
    s1 = stats.s1[0] / total  # the mean's residual offset from ``mean``, ~ eps
    cov = stats.s2[0] / total - jnp.outer(s1, s1)
    return mean + s1, cov, total
