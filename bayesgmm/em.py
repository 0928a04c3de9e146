"""The compiled EM loop: ``init_state`` / ``em_step`` / ``advance`` / ``_fit`` over a pytree state.

``_fit`` takes the traced settings of a batch of fits as one :class:`FitSettings` and the static
ones as one :class:`FitStatic`; :mod:`bayesgmm.driver` builds both from validated arguments and
runs them through :func:`bayesgmm.em_run.fit`.

One iteration is an E-step (which also gives the objective of the current parameters) followed
by an M-step. The loop is a ``lax.while_loop`` inside one ``jax.jit``; restarts run one after the
other for a few iterations (in one ``fori_loop``), then the best of them runs on. Compiled
programs live in the bounded cache of :mod:`bayesgmm._compile`. Convergence follows
scikit-learn: stop when the objective per unit of sample weight changed by less than ``tol``
between two consecutive E-steps.
"""

from __future__ import annotations

import os
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from ._compile import FAST_COMPILE, bounded_jit
from .init import initial_params, with_given
from .mstep import m_step
from .numerics import tiny
from .params import GMMParams, make_params
from .priors import PriorParams, log_prior
from .stats import SuffStats, e_step, sum_blocks

# A covariance pivot below (this * eps)^2 times the data variance is numerically singular.
SINGULAR_FACTOR = 100.0


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
    # shape=(), int: the covariance structure fitted as full matrices in a program that serves
    # every type of a search (bayesgmm.mstep.mixed_covariances); None: the program's own type
    kind: Array | None = None


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
    return SINGULAR_FACTOR * jnp.finfo(stats.s1.dtype).eps * shift2


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
    """The state before the first iteration of a fit starting from ``params``."""
    dtype = params.means.dtype
    false = jnp.zeros((), bool)
    # max_iter=0 stops at once: the one E-step scores the starting parameters.
    return EMState(
        params=params,
        n_iter=jnp.zeros((), jnp.int32),
        objective=jnp.array(-jnp.inf, dtype),
        history=jnp.full(max_iter + 1, jnp.nan, dtype),
        converged=false,
        singular=false,
        stop=jnp.array(max_iter == 0),
        done=false,
        log_likelihood=jnp.array(jnp.nan, dtype),
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
    new = m_step(stats, ref, cfg.prior, cfg.reg_covar, covariance_type, cfg.active, cfg.kind)
    singular = is_singular(new, cfg, covariance_type, cancellation_floor(stats, covariance_type))
    keep = state.stop | singular
    params = jax.tree.map(lambda a, b: jnp.where(keep, a, b), state.params, new)
    converged = jnp.abs(obj - state.objective) < cfg.tol * stats.weight
    # A cycle: the objective back at its value of two iterations ago, beyond round-off (the
    # M-step of ill-conditioned covariances can alternate). Stop unconverged; the driver warns.
    back = state.history[jnp.maximum(state.n_iter - 2, 0)]
    beyond_roundoff = jnp.abs(obj - state.objective) > 1e3 * jnp.finfo(obj.dtype).eps * jnp.abs(obj)
    cycling = (state.n_iter >= 2) & (obj == back) & beyond_roundoff
    converged = converged & ~cycling
    n_iter = state.n_iter + jnp.where(state.stop, 0, 1).astype(jnp.int32)
    return EMState(
        params,
        n_iter,
        obj,
        history,
        jnp.where(state.stop, state.converged, converged & ~singular),
        jnp.where(state.stop, state.singular, singular),
        state.stop | converged | singular | cycling | (n_iter >= max_iter),
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
    centred: bool | None = None,
) -> EMState:
    """One E-step and, unless ``state.stop``, one M-step (see :func:`advance`)."""
    stats, ref = e_step(Xt, sample_weight, block_size, state.params, covariance_type, None, centred)
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


class FitSettings(NamedTuple):
    """The traced settings of a batch of fits: arrays, so new values never recompile."""

    rng_key: Array  # PRNG key, split into ``n_init`` start keys shared by every candidate
    tol: Array  # shape=()
    reg_covar: Array  # shape=()
    # Batched like ``n_active``: every leaf has a leading (n_candidates,) axis; None for ML.
    prior: PriorParams | None
    # (weights, means, covariances) of the single start, or None to draw starts with ``init``;
    # entries left None come from ``init`` (whose starts then still differ by restart)
    init_params: tuple[Array | None, Array | None, Array | None] | None
    # shape=(n_candidates,), int: components of each candidate, at most ``n_components``; the
    # first ``n_active`` are used and the rest are padding, so one compiled program (the
    # candidates in turn, ``lax.map``) serves a whole search over K.
    n_active: Array
    # shape=(n_candidates,), int, or None: with ``covariance_type="full"`` and no prior, the
    # covariance structure of each candidate (an index into bayesgmm.params.COVARIANCE_TYPES),
    # held as full matrices, so that one program serves every type of a search.
    kinds: Array | None = None


class FitStatic(NamedTuple):
    """The static settings of a batch of fits: each new value compiles a new program."""

    n_components: int  # the largest K, to which every candidate is padded
    covariance_type: str
    init: str
    max_iter: int
    n_init: int
    block_size: int  # rows per block, see :func:`bayesgmm.stats.choose_block_size`
    n_candidates: int  # len(FitSettings.n_active)
    # True: restarts run together for SHORT_EM_ITERS iterations and only the best of each
    # candidate runs on (the fitting driver); False: every restart runs to the end and all are
    # returned (the sampler's reference fits want every mode).
    short_restarts: bool = False
    # True: centre the rows on every component; False: expand the quadratic forms about the
    # mixture mean (see bayesgmm.stats); None: by dtype (float64 expands, float32 centres).
    # The driver expands and fits again, centred, components too far apart for the expansion.
    centred: bool | None = None

    @property
    def single(self) -> bool:
        """One fit (no batch axes): a smaller program whose block operations are plain products."""
        return self.n_init == 1 and self.n_candidates == 1

    @property
    def one_run(self) -> bool:
        """The main loop runs one fit without batch axes (after any short restarts)."""
        return self.n_candidates == 1 and (self.n_init == 1 or self.short_restarts)


def _start(
    Xt: Array, sample_weight: Array, settings: FitSettings, static: FitStatic
) -> tuple[EMConfig, EMState]:
    """Per-fit configuration and starting state: ``n_init`` starts for each candidate.

    Parameters
    ----------
    Xt : array of shape (n_features, n_samples)
        The data as columns (the transpose of scikit-learn's ``X``), see :mod:`bayesgmm.stats`.
    sample_weight : array of shape (n_samples,)
    settings, static : FitSettings, FitStatic

    Returns
    -------
    (EMConfig, EMState)
        Every leaf has leading axes (n_candidates, n_init), except for a single fit
        (``static.single``), which has none.
    """
    threshold = _singular_threshold(Xt, sample_weight, static.block_size)

    def one(k_active, prior, kind, key):
        cfg = EMConfig(
            settings.tol, settings.reg_covar, prior, threshold, _active(static, k_active), kind
        )
        return cfg, _start_state(Xt, sample_weight, settings, static, cfg, key)

    keys = jax.random.split(settings.rng_key, static.n_init)
    if static.single:
        first = jax.tree.map(lambda a: a[0], (settings.prior, settings.kinds))
        return one(settings.n_active[0], *first, keys[0])
    per_candidate = jax.vmap(one, in_axes=(None, None, None, 0))
    return jax.vmap(per_candidate, in_axes=(0, 0, 0, None))(
        settings.n_active, settings.prior, settings.kinds, keys
    )


def _active(static: FitStatic, k_active: Array) -> Array:
    return jnp.arange(static.n_components) < k_active


def _singular_threshold(Xt: Array, sample_weight: Array, block_size: int) -> Array:
    """Per feature (D,), the smallest variance resolved at the data's precision."""
    w = sample_weight / jnp.sum(sample_weight)
    mean = Xt @ w
    # Block by block: (Xt - mean)^2 of all the data would be a data-sized temporary.
    var = sum_blocks(Xt, w, block_size, lambda xt, wb, i: (xt - mean[:, None]) ** 2 @ wb)
    eps = jnp.finfo(Xt.dtype).eps
    return (SINGULAR_FACTOR * eps) ** 2 * var


def _start_state(
    Xt, sample_weight, settings: FitSettings, static: FitStatic, cfg: EMConfig, key
) -> EMState:
    """The state before the first iteration of the fit of ``cfg`` started by ``key``."""
    covariance_type = static.covariance_type
    given = settings.init_params
    if given is not None and all(a is not None for a in given):
        params0 = make_params(*given, covariance_type)
    else:  # no or some given parameters: the init method gives the rest
        params0 = initial_params(
            key,
            Xt,
            sample_weight,
            static.block_size,
            static.n_components,
            static.init,
            cfg.prior,
            settings.reg_covar,
            covariance_type,
            cfg.active,
            cfg.kind,
        )
        if given is not None:
            params0 = with_given(params0, given, covariance_type)
    return init_state(params0, static.max_iter)


def over_fits(fn, single: bool):
    """``fn`` of one fit mapped over the (candidate, restart) axes of a batch of fits."""
    return fn if single else jax.vmap(jax.vmap(fn))


# Restarts run together for this many iterations (at most); the best of them per candidate
# then runs on alone ("short EM" restarts): most of the work of n_init restarts goes into the
# one that is kept, and a start from a poor basin rarely overtakes within a few dozen steps.
SHORT_EM_ITERS = 20


def _loop(
    Xt, sample_weight, cfg, state, covariance_type, max_iter, block_size, centred=None
) -> EMState:
    return jax.lax.while_loop(
        lambda s: ~s.done,
        lambda s: em_step(
            s, Xt, sample_weight, cfg, covariance_type, max_iter, block_size, centred
        ),
        state,
    )


# A variance at most this many times reg_covar sits on its floor (bayesgmm.select.FLOOR_FACTOR).
FLOOR_FACTOR = 2.0


def _on_floor(params: GMMParams, cfg: EMConfig, covariance_type: str) -> Array:
    """Whether a used component of a maximum-likelihood fit has a variance on reg_covar's floor."""
    if cfg.prior is not None:
        return jnp.array(False)
    cov = params.covariances
    var = jnp.diagonal(cov, axis1=-2, axis2=-1) if covariance_type in ("full", "tied") else cov
    low = var <= FLOOR_FACTOR * cfg.reg_covar
    low = jnp.any(low, axis=-1) if covariance_type in ("full", "diag") else low
    return jnp.any(low & (cfg.active if covariance_type != "tied" else True)) & (cfg.reg_covar > 0)


def _resume(state: EMState, max_iter: int) -> EMState:
    """The state of a run stopped by the short cap, ready to go on to ``max_iter``.

    ``objective`` goes back to the value before its last (scoring) E-step, so the convergence
    test compares two different iterates. Any leading batch axes.
    """
    finished = state.converged | state.singular | (state.n_iter >= max_iter)
    previous = jnp.take_along_axis(
        state.history, jnp.maximum(state.n_iter - 1, 0)[..., None], axis=-1
    )[..., 0]
    return state._replace(
        stop=finished,
        done=finished,
        objective=jnp.where(finished, state.objective, previous),
    )


def _restarts_in_turn(
    Xt: Array, sample_weight: Array, settings: FitSettings, static: FitStatic
) -> FitOutput:
    """:func:`_fit` with short restarts in turn: one copy of the initialisation and EM loop.

    The fits of :func:`prepare_restarts` and the main loop, in a program that compiles in half the
    time: a ``fori_loop`` over the restarts and the final run, whose body starts a restart (or
    resumes the best) and runs one ``while_loop`` to a traced iteration cap. Leading axes
    (n_candidates, 1).
    """
    threshold = _singular_threshold(Xt, sample_weight, static.block_size)
    keys = jax.random.split(settings.rng_key, static.n_init)
    covariance_type, n_init, max_iter = static.covariance_type, static.n_init, static.max_iter
    short = min(max_iter, SHORT_EM_ITERS)

    def candidate(k_active, prior, kind):
        cfg = EMConfig(
            settings.tol, settings.reg_covar, prior, threshold, _active(static, k_active), kind
        )

        def start(key):
            return _start_state(Xt, sample_weight, settings, static, cfg, key)

        def body(r, carry):
            best, best_score, best_sound = carry
            is_restart = r < n_init
            state = jax.lax.cond(
                is_restart,
                lambda: start(keys[jnp.minimum(r, n_init - 1)]),
                lambda: _resume(best, max_iter),
            )
            cap = jnp.where(is_restart, short, max_iter)
            state = _loop(
                Xt,
                sample_weight,
                cfg,
                state,
                covariance_type,
                cap,
                static.block_size,
                static.centred,
            )
            # prepare_restarts's pick: the first highest objective among finite, non-singular ends.
            # and, as there, a restart off the reg_covar floor before one on it.
            ok = ~state.singular & jnp.isfinite(state.objective)
            score = jnp.where(ok, state.objective, -jnp.inf)
            sound = ok & ~_on_floor(state.params, cfg, covariance_type)
            better = (sound & ~best_sound) | ((sound == best_sound) & (score > best_score))
            take = ~is_restart | (r == 0) | better
            best = jax.tree.map(lambda a, b: jnp.where(take, a, b), state, best)
            return best, jnp.where(take, score, best_score), jnp.where(take, sound, best_sound)

        blank = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(start, keys[0]))
        init = (blank, jnp.array(-jnp.inf, Xt.dtype), jnp.array(False))
        state, _, _ = jax.lax.fori_loop(0, n_init + 1, body, init)
        return finish(state, cfg, covariance_type)

    if static.n_candidates == 1:
        prior, kind = jax.tree.map(lambda a: a[0], (settings.prior, settings.kinds))
        out = candidate(settings.n_active[0], prior, kind)
        return jax.tree.map(lambda a: a[None, None], out)
    # One candidate after the other (see _fit).
    out = jax.lax.map(lambda c: candidate(*c), (settings.n_active, settings.prior, settings.kinds))
    return jax.tree.map(lambda a: a[:, None], out)


def prepare_restarts(
    Xt: Array, sample_weight: Array, settings: FitSettings, static: FitStatic
) -> tuple[EMConfig, EMState]:
    """The state the main loop starts from: with restarts, the best after the short runs.

    Returns
    -------
    (EMConfig, EMState)
        Leaves without batch axes for one run (``static.one_run``), else with leading axes
        (n_candidates, 1) after short restarts, (n_candidates, n_init) without.
    """
    cfg, state = _start(Xt, sample_weight, settings, static)
    if static.n_init > 1 and static.short_restarts:
        short = min(static.max_iter, SHORT_EM_ITERS)
        run = partial(
            _loop,
            Xt,
            sample_weight,
            covariance_type=static.covariance_type,
            max_iter=short,
            block_size=static.block_size,
            centred=static.centred,
        )
        states = jax.vmap(jax.vmap(run))(cfg, state)
        ok = ~states.singular & jnp.isfinite(states.objective)
        # Prefer a restart off the reg_covar floor (bayesgmm.select calls a fit on it
        # degenerate), as select prefers such candidates; the floor only when all are on it.
        on_floor = jax.vmap(jax.vmap(partial(_on_floor, covariance_type=static.covariance_type)))
        sound = ok & ~on_floor(states.params, cfg)
        ok = jnp.where(jnp.any(sound, axis=1, keepdims=True), sound, ok)
        best = jnp.argmax(jnp.where(ok, states.objective, -jnp.inf), axis=1)

        def pick(a):
            idx = best.reshape((-1, 1) + (1,) * (a.ndim - 2))
            return jnp.take_along_axis(a, idx, axis=1)

        state = _resume(jax.tree.map(pick, states), static.max_iter)
        cfg = jax.tree.map(lambda a: a[:, :1], cfg)
    if static.one_run and not static.single:
        cfg, state = jax.tree.map(lambda a: a[0, 0], (cfg, state))
    return cfg, state


def _fit(Xt: Array, sample_weight: Array, settings: FitSettings, static: FitStatic) -> FitOutput:
    """Fit by EM: one compiled ``while_loop`` per fit.

    Returns
    -------
    FitOutput
        Every leaf has leading axes (n_candidates, 1) with ``static.short_restarts`` (the best
        restart of each candidate), else (n_candidates, n_init).
    """
    if static.n_init > 1 and static.short_restarts:
        return _restarts_in_turn(Xt, sample_weight, settings, static)
    cfg, state = prepare_restarts(Xt, sample_weight, settings, static)
    covariance_type, single = static.covariance_type, static.one_run

    def run(cfg, state):
        state = _loop(
            Xt,
            sample_weight,
            cfg,
            state,
            covariance_type,
            static.max_iter,
            static.block_size,
            static.centred,
        )
        return finish(state, cfg, covariance_type)

    if single:
        return jax.tree.map(lambda a: a[None, None], run(cfg, state))
    # The candidates one after the other, each in its own while_loop (their restarts together):
    # under vmap every candidate of a search would iterate until the slowest one converged.
    return jax.lax.map(lambda fits: jax.vmap(run)(*fits), (cfg, state))


# Compiled programs are kept in a bounded cache (bayesgmm._compile): a process that fits many
# shapes would otherwise keep every executable it ever compiled. FAST_COMPILE: see there.
_fit_optimized = bounded_jit(_fit, static_argnames=("static",), compiler_options=FAST_COMPILE)
# LLVM's optimisations take a large share of the compile time and buy nothing on tiny data, where
# the fit itself is short either way.
_fit_unoptimized = bounded_jit(
    _fit, static_argnames=("static",), compiler_options={"xla_backend_optimization_level": 0}
)
# Up to this many row-component-feature products (n K D, times the candidates and restarts run
# together) a problem counts as tiny.
_TINY = 2**13

# From this many row-component-feature products (times the fits) the E-step of every iteration
# is shared among threads (bayesgmm._em_threads).
THREADED_SIZE = 2**21


def available_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
