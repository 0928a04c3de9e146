"""Running a batch of EM fits: the compiled whole-fit program, or threads for large data.

:func:`fit` runs the program of :mod:`bayesgmm.em` (``_fit``) compiled for the problem's size,
or, for large data, drives the loop from Python: XLA runs one compiled program on one core, and
separate executions started from separate Python threads do run in parallel, so every
iteration each thread computes the E-step statistics of its share of the row blocks (block s,
s + T, s + 2 T, ... for thread s of T), the shares are summed and ``advance`` takes the M-step.
The cost of a Python-driven iteration is small against the E-step of large data, which the
threads divide among the cores. Results equal the compiled loop's up to the order of the sums.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial

import jax
import jax.numpy as jnp
from jax import Array

from . import em
from ._compile import bounded_jit
from .em import FitOutput, FitSettings, FitStatic, advance, finish, over_fits, prepare_restarts
from .stats import e_step

_prepare_restarts_jit = bounded_jit(prepare_restarts, static_argnames=("static",))


def _share_e_step(
    Xt, sample_weight, params, thread, *, covariance_type, block_size, n_threads, single, centred
):
    """E-step statistics (and reference points) of one thread's share of the row blocks."""
    n_blocks = -(-Xt.shape[1] // block_size)
    # Blocks past the end (when the threads' shares are not equal) have zero weight.
    blocks = thread + n_threads * jnp.arange(-(-n_blocks // n_threads), dtype=jnp.int32)

    def one(params):
        return e_step(
            Xt, sample_weight, block_size, params, covariance_type, blocks=blocks, centred=centred
        )

    return over_fits(one, single)(params)


_share_e_step_jit = bounded_jit(
    _share_e_step,
    static_argnames=("covariance_type", "block_size", "n_threads", "single", "centred"),
)


def _advance_all(state, shares, ref, cfg, *, covariance_type, max_iter, single):
    stats = jax.tree.map(lambda *a: sum(a), *shares)
    step = partial(advance, covariance_type=covariance_type, max_iter=max_iter)
    new = over_fits(step, single)(state, stats, ref, cfg)
    return new, jnp.all(new.done)


_advance_all_jit = bounded_jit(
    _advance_all, static_argnames=("covariance_type", "max_iter", "single")
)


def _finish_all(state, cfg, *, covariance_type, single):
    out = over_fits(partial(finish, covariance_type=covariance_type), single)(state, cfg)
    return jax.tree.map(lambda a: a[None, None], out) if single else out


_finish_all_jit = bounded_jit(_finish_all, static_argnames=("covariance_type", "single"))


def _fit_threaded(
    Xt: Array, sample_weight: Array, settings: FitSettings, static: FitStatic, n_threads: int
) -> FitOutput:
    """:func:`_fit` with the E-step of every iteration shared among ``n_threads`` threads."""
    cfg, state = _prepare_restarts_jit(Xt, sample_weight, settings, static=static)
    covariance_type, single = static.covariance_type, static.one_run
    # The compiled programs are looked up once, not every iteration; the E-step's is compiled
    # here, in this thread: the threads must not all compile the same program at once.
    share_program = _share_e_step_jit.program(
        Xt,
        sample_weight,
        state.params,
        0,
        covariance_type=covariance_type,
        block_size=static.block_size,
        n_threads=n_threads,
        single=single,
        centred=static.centred,
    )
    share = partial(share_program, Xt, sample_weight)
    advance = None
    with ThreadPoolExecutor(n_threads) as pool:
        done = False
        while not done:
            run = partial(_run_share, share, state.params, bool(jax.config.jax_enable_x64))
            outs = list(pool.map(run, range(n_threads)))
            args = (state, [o[0] for o in outs], outs[0][1], cfg)
            if advance is None:
                advance = _advance_all_jit.program(
                    *args, covariance_type=covariance_type, max_iter=static.max_iter, single=single
                )
            state, done = advance(*args)
            done = bool(done)
    return _finish_all_jit(state, cfg, covariance_type=covariance_type, single=single)


def _run_share(share, params, x64, thread):
    # JAX's config contexts (``with jax.enable_x64(...)``) are thread-local: a worker thread
    # would see the global setting, not the caller's, and compute float64 data in float32.
    with jax.enable_x64(x64):
        return jax.block_until_ready(share(params, thread))


def fit(
    Xt: Array,
    sample_weight: Array,
    settings: FitSettings,
    static: FitStatic,
    n_threads: int | None = None,
) -> FitOutput:
    """Fit by EM, compiled once per shape and ``static``.

    Parameters
    ----------
    Xt : array of shape (n_features, n_samples)
        The data as columns, see :mod:`bayesgmm.stats`.
    sample_weight : array of shape (n_samples,)
    settings : FitSettings
        Traced settings; ``prior`` leaves and ``n_active`` have a leading (n_candidates,) axis.
    static : FitStatic
        ``n_candidates`` must equal ``len(settings.n_active)``.
    n_threads : int, optional
        ``None`` chooses: tiny problems compile without optimisations, large ones share each
        E-step among the available cores. ``1`` forces the compiled loop, more forces the
        threaded loop with that many threads (at most one per row block).

    Returns
    -------
    FitOutput
        Every leaf has leading axes (n_candidates, n_init), or (n_candidates, 1) with
        ``static.short_restarts``: the restart that is best after :data:`bayesgmm.em.SHORT_EM_ITERS`
        iterations is the one run to convergence and returned.
    """
    threads, program = _driver(Xt, static, n_threads)
    if threads > 1:
        return _fit_threaded(Xt, sample_weight, settings, static, threads)
    return program(Xt, sample_weight, settings, static=static)


def _driver(Xt: Array, static: FitStatic, n_threads: int | None):
    """How :func:`fit` runs: (threads, the compiled whole-fit program when threads == 1)."""
    d, n = Xt.shape
    size = n * static.n_components * d * static.n_candidates * static.n_init
    threads = n_threads
    if threads is None:
        threads = em.available_threads() if size >= em.THREADED_SIZE else 1
    threads = min(threads, -(-n // static.block_size))
    # Short restarts run one after the other for a few iterations each (em._restarts_in_turn),
    # so they count as one. Candidates run in turn too, but each to convergence: a search's run
    # time grows with them, and LLVM's optimisations made a warm search on Old Faithful (36
    # candidates) 4-6x faster, so they still count.
    step = size // static.n_init if static.short_restarts else size
    return threads, (em._fit_unoptimized if step <= em._TINY else em._fit_optimized)


def precompile(
    Xt: Array,
    sample_weight: Array,
    settings: FitSettings,
    static: FitStatic,
    n_threads: int | None = None,
) -> None:
    """Compile (or load from the disk cache) the program :func:`fit` would run, not running it.

    Threaded fits (large data) compile their pieces when they run.
    """
    threads, fit_program = _driver(Xt, static, n_threads)
    if threads == 1:
        fit_program.program(Xt, sample_weight, settings, static=static)
