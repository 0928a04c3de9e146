"""EM with the E-step of every iteration shared among threads (large data).

XLA runs one compiled program on one core. Separate executions started from separate Python
threads do run in parallel, so for large data the loop is driven from Python instead: every
iteration, each thread computes the E-step statistics of its share of the row blocks (block
s, s + T, s + 2 T, ... for thread s of T), the shares are summed and ``advance`` takes the
M-step. The cost of a Python-driven iteration is small against the E-step of large data, which
the threads divide among the cores. Results equal the compiled loop's up to the order of the
sums. :func:`bayesgmm.em.fit` chooses this driver.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial

import jax
import jax.numpy as jnp
from jax import Array

from ._compile import bounded_jit
from .em import FitOutput, FitSettings, FitStatic, _over_fits, _prepare, advance, finish
from .stats import e_step

_prepare_jit = bounded_jit(_prepare, static_argnames=("static",))


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

    return _over_fits(one, single)(params)


_share_e_step_jit = bounded_jit(
    _share_e_step,
    static_argnames=("covariance_type", "block_size", "n_threads", "single", "centred"),
)


def _advance_all(state, shares, ref, cfg, *, covariance_type, max_iter, single):
    stats = jax.tree.map(lambda *a: sum(a), *shares)
    step = partial(advance, covariance_type=covariance_type, max_iter=max_iter)
    new = _over_fits(step, single)(state, stats, ref, cfg)
    return new, jnp.all(new.done)


_advance_all_jit = bounded_jit(
    _advance_all, static_argnames=("covariance_type", "max_iter", "single")
)


def _finish_all(state, cfg, *, covariance_type, single):
    out = _over_fits(partial(finish, covariance_type=covariance_type), single)(state, cfg)
    return jax.tree.map(lambda a: a[None, None], out) if single else out


_finish_all_jit = bounded_jit(_finish_all, static_argnames=("covariance_type", "single"))


def fit_threaded(
    Xt: Array, sample_weight: Array, settings: FitSettings, static: FitStatic, n_threads: int
) -> FitOutput:
    """:func:`_fit` with the E-step of every iteration shared among ``n_threads`` threads."""
    cfg, state = _prepare_jit(Xt, sample_weight, settings, static=static)
    covariance_type, single = static.covariance_type, static.one_run
    share = partial(
        _share_e_step_jit,
        Xt,
        sample_weight,
        covariance_type=covariance_type,
        block_size=static.block_size,
        n_threads=n_threads,
        single=single,
        centred=static.centred,
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
            state, done = _advance_all_jit(
                state,
                [o[0] for o in outs],
                outs[0][1],
                cfg,
                covariance_type=covariance_type,
                max_iter=static.max_iter,
                single=single,
            )
            done = bool(done)
    return _finish_all_jit(state, cfg, covariance_type=covariance_type, single=single)


def _run_share(share, params, x64, thread):
    # JAX's config contexts (``with jax.enable_x64(...)``) are thread-local: a worker thread
    # would see the global setting, not the caller's, and compute float64 data in float32.
    with jax.enable_x64(x64):
        return jax.block_until_ready(share(params, thread))
