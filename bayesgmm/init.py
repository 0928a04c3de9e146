"""Starting parameters: k-means, k-means++ seeding, random responsibilities, random data points.

Every start ends in one M-step from (hard or soft) responsibilities, as scikit-learn does.
``"kmeans++"`` and ``"random_from_data"`` choose K centres (by D^2 seeding or uniformly among
the rows) and assign every row to its nearest centre; scikit-learn instead gives each chosen row
alone to its component, which starts every covariance at ``reg_covar``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from .mstep import m_step
from .params import GMMParams, make_params
from .priors import PriorParams
from .stats import accumulate, sum_blocks

INIT_METHODS = ("kmeans", "kmeans++", "random", "random_from_data")
# The default start (issue 9): ten k-means++ seedings, each followed by a short EM run, and the
# best of them run to convergence (bayesgmm.em.SHORT_EM_ITERS). On faithful, iris, diabetes and
# banknote it reaches mclust's optima where one k-means start (Lloyd's iterations after the
# seeding) does not; the seeding alone is cheaper and gave the better optima in our runs.
DEFAULT_INIT = "kmeans++"
DEFAULT_N_INIT = 10
# ``select``'s default: one k-means start per candidate. Ten short-EM restarts would multiply a
# search's cost several times (benchmarks/bench_select.py); with one start, select picks the
# true model (full, K=4) of the four-cluster set.
SEARCH_INIT = "kmeans"
SEARCH_N_INIT = 1
# scikit-learn's spelling of the D^2 seeding.
INIT_ALIASES = {"k-means++": "kmeans++"}
_KMEANS_MAX_ITER = 100


def _draw(rng_key: Array, log_p: Array) -> Array:
    """An index drawn with probability proportional to ``exp(log_p)``.

    The Gumbel-max trick: one pass and an argmax, where ``jax.random.choice`` would build a
    cumulative sum and search it (three times the compiled code).
    """
    return jnp.argmax(log_p + jax.random.gumbel(rng_key, log_p.shape, log_p.dtype))


def kmeans_plusplus(rng_key: Array, Xt: Array, w: Array, n_components: int) -> Array:
    """D^2 seeding (Arthur & Vassilvitskii 2007) of the columns of ``Xt``, weighted by ``w``.

    Returns the centres, shape (K, D).
    """
    keys = jax.random.split(rng_key, n_components)
    log_w = jnp.log(w)

    def body(k, carry):
        centers, d2 = carry
        log_p = log_w + jnp.log(d2)
        # All remaining mass at distance 0 (fewer distinct rows than K): fall back on w.
        log_p = jnp.where(jnp.max(log_p) > -jnp.inf, log_p, log_w)
        new = Xt[:, _draw(keys[k], log_p)]
        d2 = jnp.minimum(d2, jnp.sum((Xt - new[:, None]) ** 2, axis=0))
        return centers.at[k].set(new), d2

    # The first centre is drawn by weight alone: d2 = 1 everywhere.
    centers = jnp.zeros((n_components, Xt.shape[0]), Xt.dtype)
    centers, _ = jax.lax.fori_loop(0, n_components, body, (centers, jnp.ones_like(w)))
    return centers


def nearest(xt: Array, centers: Array, active: Array) -> Array:
    """One-hot (K, B) of the nearest active centre of each column of ``xt`` (D, B).

    ``|x - c_k|^2`` is ranked through ``2 c_k . x - |c_k|^2``, one matrix product per block, with
    everything centred on the centres' mean first.
    """
    ref = (active @ centers / jnp.sum(active))[:, None]
    cc = centers - ref.T
    scores = 2 * cc @ (xt - ref) - jnp.sum(cc * cc, axis=1)[:, None]
    labels = jnp.argmax(jnp.where(active[:, None], scores, -jnp.inf), axis=0)
    return jax.nn.one_hot(labels, centers.shape[0], dtype=xt.dtype, axis=0)


def nearest_resp_fn(centers: Array, active: Array):
    def resp_fn(xt, xk, i):
        del xk, i
        return nearest(xt, centers, active), jnp.zeros(xt.shape[1], xt.dtype)

    return resp_fn


def lloyd(Xt: Array, w: Array, block_size: int, centers: Array, active: Array) -> Array:
    """Weighted Lloyd iterations until the centres stop moving (at most 100)."""

    def cond(carry):
        it, _, shift = carry
        return (it < _KMEANS_MAX_ITER) & (shift > 0)

    def body(carry):
        it, c, _ = carry

        def block_fn(xt, wb, i):
            one_hot = nearest(xt, c, active) * wb[None, :]
            return jnp.sum(one_hot, axis=1), one_hot @ xt.T

        nk, sums = sum_blocks(Xt, w, block_size, block_fn)
        # Empty clusters keep their centre.
        new = jnp.where(nk[:, None] > 0, sums / jnp.where(nk > 0, nk, 1)[:, None], c)
        return it + 1, new, jnp.max(jnp.abs(new - c))

    _, centers, _ = jax.lax.while_loop(cond, body, (0, centers, jnp.array(jnp.inf, centers.dtype)))
    return centers


def initial_params(
    rng_key: Array,
    Xt: Array,
    w: Array,
    block_size: int,
    n_components: int,
    init: str,
    prior: PriorParams | None,
    reg_covar: Array,
    covariance_type: str,
    active: Array,
    kind: Array | None = None,
) -> GMMParams:
    """Starting parameters by ``init``; one M-step from the starting responsibilities.

    ``kind``: the covariance structure of a mixed-type program (see :func:`bayesgmm.mstep.m_step`).

    Only the ``active`` components (a prefix of the K) get data. The k-means seeding draws the
    same random numbers whatever ``active`` is, so a padded k-means start equals an unpadded one.
    """
    if init in ("kmeans", "kmeans++"):
        centers = kmeans_plusplus(rng_key, Xt, w, n_components)
        if init == "kmeans":
            centers = lloyd(Xt, w, block_size, centers, active)
        resp_fn = nearest_resp_fn(centers, active)
    elif init == "random_from_data":
        # K distinct rows among those with positive weight (Gumbel top-k).
        noise = jax.random.gumbel(rng_key, w.shape, w.dtype)
        _, idx = jax.lax.top_k(jnp.where(w > 0, noise, -jnp.inf), n_components)
        centers = Xt[:, idx].T
        resp_fn = nearest_resp_fn(centers, active)
    elif init == "random":
        centers = jnp.zeros((n_components, Xt.shape[0]), Xt.dtype)

        def resp_fn(xt, xk, i):
            b = xt.shape[1]
            u = jax.random.uniform(jax.random.fold_in(rng_key, i), (n_components, b), xt.dtype)
            u = jnp.where(active[:, None], u, 0)
            return u / jnp.sum(u, axis=0, keepdims=True), jnp.zeros(b, xt.dtype)

        # Statistics about the data mean keep the scatter accurate.
        centers = centers + Xt @ w / jnp.sum(w)
    else:  # pragma: no cover - validated at the surface
        raise ValueError(f"unknown init {init!r}")
    stats = accumulate(Xt, w, block_size, centers, resp_fn, covariance_type)
    return m_step(stats, centers, prior, reg_covar, covariance_type, active, kind)


def with_given(
    params: GMMParams,
    given: tuple[Array | None, Array | None, Array | None],
    covariance_type: str,
) -> GMMParams:
    """``params`` with the given (not None) weights, means or covariances put in their place.

    This is scikit-learn's partial initialisation: the starting M-step of the ``init`` method
    gives every parameter and the user's ones replace it (covariances are not recomputed about
    given means).
    """
    weights, means, covariances = (
        new if new is not None else old for new, old in zip(given, params[:3], strict=True)
    )
    if given[2] is None:
        return GMMParams(weights, means, covariances, params.precisions_chol)
    return make_params(weights, means, covariances, covariance_type)
