"""The compiled EM driver: ``init_state`` / ``em_step`` / ``fit`` over a pytree state.

One iteration is an E-step (which also gives the objective of the current parameters) followed
by an M-step. The loop is a ``lax.while_loop`` inside one ``jax.jit``; restarts run together
under ``vmap``. Convergence follows scikit-learn: stop when the objective per unit of sample
weight changed by less than ``tol`` between two consecutive E-steps.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from .init import initial_params, with_given
from .mstep import m_step
from .numerics import tiny
from .params import GMMParams, make_params
from .priors import PriorParams, log_prior
from .stats import SuffStats, e_step, sum_blocks

# A covariance pivot below (this * eps)^2 times the data variance is numerically singular.
_SINGULAR_FACTOR = 100.0


class EMState(NamedTuple):
    """State of one EM run."""

    params: GMMParams  # the current parameters
    n_iter: Array  # shape=(), int32: iterations (E-step + M-step) done
    objective: Array  # shape=(): objective of the parameters before the last M-step
    history: Array  # shape=(max_iter + 1,): history[t] = objective after t iterations
    converged: Array  # shape=(), bool
    singular: Array  # shape=(), bool: the last M-step produced a singular covariance
    stop: Array  # shape=(), bool: iterating is over; the next E-step scores the result
    done: Array  # shape=(), bool: that last E-step is done
    log_likelihood: Array  # shape=(): log-likelihood of ``params`` once ``done``


class EMConfig(NamedTuple):
    """Dynamic (traced) settings of a fit."""

    tol: Array  # shape=()
    reg_covar: Array  # shape=()
    prior: PriorParams | None
    singular_threshold: Array  # shape=(D,): variances at or below this are singular
    active: Array  # shape=(K,), bool: components in use (a prefix; the rest are padding)


def objective(stats: SuffStats, params: GMMParams, cfg: EMConfig, covariance_type: str) -> Array:
    """Log-likelihood (from the E-step's statistics) plus the log-prior."""
    if cfg.prior is None:
        return stats.loglik
    return stats.loglik + log_prior(params, cfg.prior, covariance_type, cfg.active)


def cancellation_floor(stats: SuffStats, covariance_type: str) -> Array:
    """The smallest variances that statistics about a reference point resolve.

    The M-step's scatter about the new means, ``s2 - s1 s1^T / nk``, loses about
    ``eps nk shift^2`` to cancellation, ``shift = s1 / nk`` the distance from the reference to the
    new mean. That is nothing when the reference is the current mean (a small shift), but
    float64 statistics are taken about the mixture mean (:mod:`bayesgmm.stats`). Shape (K, D);
    tied (D,).
    """
    nk = stats.nk + tiny(stats.s1.dtype)
    shift2 = (stats.s1 / nk[:, None]) ** 2
    if covariance_type == "tied":
        shift2 = stats.nk @ shift2 / jnp.sum(nk)
    return _SINGULAR_FACTOR * jnp.finfo(stats.s1.dtype).eps * shift2


def is_singular(
    params: GMMParams, cfg: EMConfig, covariance_type: str, floor: Array | None = None
) -> Array:
    """True if any covariance is not (numerically) positive definite.

    ``threshold`` (D,) holds, per feature, the smallest variance that is still resolved at the
    data's precision; ``floor`` (K, D) (tied: (D,)), if given, what the statistics resolve (see
    :func:`cancellation_floor`). For full and tied covariances the squared Cholesky pivots are
    compared (``1 / diag(U)^2`` with ``U`` the precision Cholesky factor).
    """
    pc, threshold = params.precisions_chol, cfg.singular_threshold
    if floor is not None:
        threshold = jnp.maximum(threshold, floor)
    if covariance_type in ("full", "tied"):
        pivots, thr = 1.0 / jnp.diagonal(pc, axis1=-2, axis2=-1) ** 2, threshold
        pc_bad = ~jnp.all(jnp.isfinite(pc), axis=(-2, -1))
    elif covariance_type == "diag":
        pivots, thr = params.covariances, threshold
        pc_bad = ~jnp.all(jnp.isfinite(pc), axis=-1)
    else:
        pivots, thr = params.covariances[:, None], jnp.mean(threshold, axis=-1, keepdims=True)
        pc_bad = ~jnp.isfinite(pc)
    # Per component (tied: one flag); NaN pivots fail the comparison and count as singular.
    bad = jnp.any(~(pivots > thr), axis=-1) | pc_bad
    bad = bad | ~jnp.all(jnp.isfinite(params.means), axis=-1) if covariance_type != "tied" else bad
    if covariance_type != "tied":  # padding components never count
        bad = bad & cfg.active
    else:
        bad = bad | jnp.any(~jnp.isfinite(params.means) & cfg.active[:, None])
    return jnp.any(bad) | jnp.any(~(params.weights >= 0))


def init_state(params: GMMParams, max_iter: int) -> EMState:
    dtype = params.means.dtype
    history = jnp.full(max_iter + 1, jnp.nan, dtype)
    false = jnp.zeros((), bool)
    nan = jnp.array(jnp.nan, dtype)
    # max_iter=0 stops at once: the one E-step scores the starting parameters.
    return EMState(
        params,
        jnp.zeros((), jnp.int32),
        jnp.array(-jnp.inf, dtype),
        history,
        false,
        false,
        jnp.array(max_iter == 0),
        false,
        nan,
    )


def advance(
    state: EMState,
    stats: SuffStats,
    ref: Array,
    cfg: EMConfig,
    covariance_type: str,
    max_iter: int,
) -> EMState:
    """The rest of an iteration, given the E-step's statistics of ``state.params``.

    Records the objective and, unless ``state.stop``, takes the M-step. Once ``stop`` is set
    (converged, singular or ``max_iter`` reached) the next call only records the objective of
    the returned parameters: a loop body holds the one copy of the E-step.
    """
    obj = objective(stats, state.params, cfg, covariance_type)
    history = state.history.at[state.n_iter].set(obj)
    new = m_step(stats, ref, cfg.prior, cfg.reg_covar, covariance_type, cfg.active)
    singular = is_singular(new, cfg, covariance_type, cancellation_floor(stats, covariance_type))
    keep = state.stop | singular
    params = jax.tree.map(lambda a, b: jnp.where(keep, a, b), state.params, new)
    converged = jnp.abs(obj - state.objective) < cfg.tol * stats.weight
    n_iter = state.n_iter + jnp.where(state.stop, 0, 1).astype(jnp.int32)
    return EMState(
        params,
        n_iter,
        obj,
        history,
        jnp.where(state.stop, state.converged, converged & ~singular),
        jnp.where(state.stop, state.singular, singular),
        state.stop | converged | singular | (n_iter >= max_iter),
        state.stop,
        stats.loglik,
    )


def em_step(
    state: EMState,
    Xt: Array,
    sample_weight: Array,
    cfg: EMConfig,
    covariance_type: str,
    max_iter: int,
    block_size: int,
) -> EMState:
    """One E-step and, unless ``state.stop``, one M-step (see :func:`advance`)."""
    stats, ref = e_step(Xt, sample_weight, block_size, state.params, covariance_type)
    return advance(state, stats, ref, cfg, covariance_type, max_iter)


class FitOutput(NamedTuple):
    """What one compiled run returns (batched over restarts)."""

    params: GMMParams
    n_iter: Array  # int32
    converged: Array  # bool
    singular: Array  # bool
    objective: Array  # objective of the returned parameters
    log_likelihood: Array  # log-likelihood of the returned parameters
    history: Array  # (max_iter + 1,); history[1 : n_iter + 1] are the per-iteration objectives


def finish(state: EMState, cfg: EMConfig, covariance_type: str) -> FitOutput:
    # A start that is singular already (init) never iterates.
    singular = state.singular | is_singular(state.params, cfg, covariance_type)
    return FitOutput(
        state.params,
        state.n_iter,
        state.converged,
        singular,
        state.objective,
        state.log_likelihood,
        state.history,
    )


def _start(
    Xt: Array,
    sample_weight: Array,
    rng_key: Array,
    tol: Array,
    reg_covar: Array,
    prior: PriorParams | None,
    init_params: tuple[Array, Array, Array] | None,
    n_active: Array,
    *,
    n_components: int,
    covariance_type: str,
    init: str,
    max_iter: int,
    n_init: int,
    block_size: int,
) -> tuple[EMConfig, EMState]:
    """Settings and starting state of every fit: ``n_init`` starts for each size in ``n_active``.

    Parameters
    ----------
    Xt : array of shape (n_features, n_samples)
        The data as columns (the transpose of scikit-learn's ``X``), see :mod:`bayesgmm.stats`.
    sample_weight : array of shape (n_samples,)
    rng_key : PRNG key
        Split into ``n_init`` start keys, the same for every candidate.
    tol, reg_covar : scalars
    prior : PriorParams or None
        Batched like ``n_active``: every leaf has a leading (n_candidates,) axis.
    init_params : (weights, means, covariances) or None
        With it, the single start is those parameters.
    n_active : int array of shape (n_candidates,)
        Number of components of each candidate, at most ``n_components``; the first
        ``n_active`` components are used and the rest are padding. One compiled program thus
        serves a whole search over K, vectorised with ``vmap``.

    Returns
    -------
    (EMConfig, EMState)
        Every leaf has leading axes (n_candidates, n_init), except for a single fit
        (``_single``), which has none: no batch axes inside keeps its compiled program smaller
        and its block operations plain matrix products.
    """
    w = sample_weight / jnp.sum(sample_weight)
    mean = Xt @ w
    # Block by block: (Xt - mean)^2 of all the data would be a data-sized temporary.
    var = sum_blocks(Xt, w, block_size, lambda xt, wb, i: (xt - mean[:, None]) ** 2 @ wb)
    eps = jnp.finfo(Xt.dtype).eps
    threshold = (_SINGULAR_FACTOR * eps) ** 2 * var

    def one(k_active, prior, key):
        active = jnp.arange(n_components) < k_active
        cfg = EMConfig(tol, reg_covar, prior, threshold, active)
        if init_params is not None and all(a is not None for a in init_params):
            params0 = make_params(*init_params, covariance_type)
        else:  # no or some given parameters: the init method gives the rest
            params0 = initial_params(
                key,
                Xt,
                sample_weight,
                block_size,
                n_components,
                init,
                prior,
                reg_covar,
                covariance_type,
                active,
            )
            if init_params is not None:
                params0 = with_given(params0, init_params, covariance_type)
        return cfg, init_state(params0, max_iter)

    keys = jax.random.split(rng_key, n_init)
    if _single(n_active, n_init):
        return one(n_active[0], jax.tree.map(lambda a: a[0], prior), keys[0])
    per_candidate = jax.vmap(one, in_axes=(None, None, 0))
    return jax.vmap(per_candidate, in_axes=(0, 0, None))(n_active, prior, keys)


def _single(n_active, n_init: int) -> bool:
    return n_init == 1 and len(n_active) == 1


def _over_fits(fn, single: bool):
    """``fn`` of one fit mapped over the (candidate, restart) axes of a batch of fits."""
    return fn if single else jax.vmap(jax.vmap(fn))


def _fit(Xt: Array, sample_weight: Array, *args, **static) -> FitOutput:
    """Fit by EM (:func:`_start` for the arguments): one compiled ``while_loop`` per fit.

    Returns
    -------
    FitOutput
        Every leaf has leading axes (n_candidates, n_init).
    """
    cfg, state0 = _start(Xt, sample_weight, *args, **static)
    covariance_type, max_iter = static["covariance_type"], static["max_iter"]

    def run(cfg, state):
        state = jax.lax.while_loop(
            lambda s: ~s.done,
            lambda s: em_step(
                s, Xt, sample_weight, cfg, covariance_type, max_iter, static["block_size"]
            ),
            state,
        )
        return finish(state, cfg, covariance_type)

    single = _single(args[5], static["n_init"])
    out = _over_fits(run, single)(cfg, state0)
    return jax.tree.map(lambda a: a[None, None], out) if single else out


_STATIC = ("n_components", "covariance_type", "init", "max_iter", "n_init", "block_size")
_fit_optimized = jax.jit(_fit, static_argnames=_STATIC)
# LLVM's optimisations take a third of the compile time and buy nothing on tiny data, where a fit
# takes a millisecond either way: the first fit of Old Faithful compiles in 1.4 s instead of 2.
_fit_unoptimized = jax.jit(
    _fit, static_argnames=_STATIC, compiler_options={"xla_backend_optimization_level": 0}
)
# Up to this many row-component-feature products (n K D, times the candidates and restarts run
# together) a problem counts as tiny.
_TINY = 2**13

# ---------------------------------------------------------------------------------- threads
#
# XLA runs one compiled program on one core. Separate executions started from separate Python
# threads do run in parallel, so for large data the loop is driven from Python instead: every
# iteration, each thread computes the E-step statistics of its share of the row blocks (block
# s, s + T, s + 2 T, ... for thread s of T), the shares are summed and ``advance`` takes the
# M-step. The few milliseconds a Python iteration costs are nothing against the E-step there,
# and the E-step takes 1 / 1.7 of the time on two cores. Results equal the compiled loop's up to
# the order of the sums.
_THREADED = 2**21  # n K D (times the fits) from which the threads pay off
_start_jit = jax.jit(_start, static_argnames=_STATIC)


@partial(jax.jit, static_argnames=("covariance_type", "block_size", "n_threads", "single"))
def _share_e_step(
    Xt, sample_weight, params, thread, *, covariance_type, block_size, n_threads, single
):
    """E-step statistics (and reference points) of one thread's share of the row blocks."""
    n_blocks = -(-Xt.shape[1] // block_size)
    # Blocks past the end (when the threads' shares are not equal) have zero weight.
    blocks = thread + n_threads * jnp.arange(-(-n_blocks // n_threads), dtype=jnp.int32)

    def one(params):
        return e_step(Xt, sample_weight, block_size, params, covariance_type, blocks=blocks)

    return _over_fits(one, single)(params)


@partial(jax.jit, static_argnames=("covariance_type", "max_iter", "single"))
def _advance_all(state, shares, ref, cfg, *, covariance_type, max_iter, single):
    stats = jax.tree.map(lambda *a: sum(a), *shares)
    step = partial(advance, covariance_type=covariance_type, max_iter=max_iter)
    new = _over_fits(step, single)(state, stats, ref, cfg)
    return new, jnp.all(new.done)


@partial(jax.jit, static_argnames=("covariance_type", "single"))
def _finish_all(state, cfg, *, covariance_type, single):
    out = _over_fits(partial(finish, covariance_type=covariance_type), single)(state, cfg)
    return jax.tree.map(lambda a: a[None, None], out) if single else out


def _fit_threaded(Xt, sample_weight, *args, n_threads: int, **static) -> FitOutput:
    """:func:`_fit` with the E-step of every iteration shared among ``n_threads`` threads."""
    cfg, state = _start_jit(Xt, sample_weight, *args, **static)
    single = _single(args[5], static["n_init"])
    covariance_type = static["covariance_type"]
    share = partial(
        _share_e_step,
        Xt,
        sample_weight,
        covariance_type=covariance_type,
        block_size=static["block_size"],
        n_threads=n_threads,
        single=single,
    )
    with ThreadPoolExecutor(n_threads) as pool:
        done, first = False, True
        while not done:
            params = state.params
            # The first iteration runs in this thread: the threads must not all compile at once.
            mapper = map if first else pool.map
            run = partial(_run_share, share, params, bool(jax.config.jax_enable_x64))
            outs = list(mapper(run, range(n_threads)))
            first = False
            state, done = _advance_all(
                state,
                [o[0] for o in outs],
                outs[0][1],
                cfg,
                covariance_type=covariance_type,
                max_iter=static["max_iter"],
                single=single,
            )
            done = bool(done)
    return _finish_all(state, cfg, covariance_type=covariance_type, single=single)


def _run_share(share, params, x64, thread):
    # JAX's config contexts (``with jax.enable_x64(...)``) are thread-local: a worker thread
    # would see the global setting, not the caller's, and compute float64 data in float32.
    with jax.enable_x64(x64):
        return jax.block_until_ready(share(params, thread))


def _n_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fit(
    Xt: Array,
    sample_weight: Array,
    rng_key: Array,
    tol: Array,
    reg_covar: Array,
    prior: PriorParams | None,
    init_params: tuple[Array, Array, Array] | None,
    n_active: Array,
    *,
    n_components: int,
    n_init: int,
    block_size: int,
    **static,
) -> FitOutput:
    """Fit by EM (arguments of :func:`_start`), compiled once per shape and static arguments.

    Tiny problems compile without optimisations; large ones share each E-step among threads.
    """
    d, n = Xt.shape
    size = n * n_components * d * len(n_active) * n_init
    args = (Xt, sample_weight, rng_key, tol, reg_covar, prior, init_params, n_active)
    static |= dict(n_components=n_components, n_init=n_init, block_size=block_size)
    n_threads = min(_n_threads(), -(-n // block_size))
    if size >= _THREADED and n_threads > 1:
        return _fit_threaded(*args, n_threads=n_threads, **static)
    return (_fit_unoptimized if size <= _TINY else _fit_optimized)(*args, **static)
