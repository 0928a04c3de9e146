"""One pass over data that is not one in-memory array: chunks of a source, or device shards.

A pass applies *jobs* to all the rows and returns their sums. A job is ``(fn, operand, static)``
with ``fn(xt, w, index, operand, static) -> (sums, keep)`` a pure JAX function of a piece of the
rows (columns ``xt`` (D, B) and weights ``w`` (B,), zero on padding): ``sums`` (a pytree) is
added over the pieces, ``keep`` (a pytree depending on ``operand`` only, or None) is taken from
any piece. Jobs are module-level functions, so each compiles once per shape.

- :class:`StreamRows` reads a source chunk by chunk (a prefetch thread reads the next chunk
  while the device computes on the current one), feeds every chunk to every job, adds the sums
  on the device and then across processes (:func:`bayesgmm.distributed.process_sum`).
- :class:`ShardedRows` holds a row-sharded global array; a job runs on every device's shard
  under ``shard_map`` and ``psum`` adds the shards over devices and processes.

Both also draw a uniform sample of the rows, the same on every process, for the starting values.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import distributed as dist
from ._compile import bounded_jit
from .sources import ArraySource, Centring, choose_chunk_size, prefetch


class Job(NamedTuple):
    fn: Callable[..., tuple[Any, Any]]
    operand: Any
    static: Hashable


def _add_piece(acc, xt, w, index, operand, fn, static):
    sums, keep = fn(xt, w, index, operand, static)
    return jax.tree.map(jnp.add, acc, sums), keep


# Pieces of up to this many elements take a millisecond either way: LLVM's optimisations would
# cost more compile time than they save (as for the compiled driver's tiny problems).
TINY_PIECE = 2**14
UNOPTIMIZED = {"xla_backend_optimization_level": 0}
# Under the bounded program cache (bayesgmm._compile): one program per job function, static
# settings and chunk shape, dropped least recently used first.
_add_piece_optimized = bounded_jit(_add_piece, static_argnames=("fn", "static"))
_add_piece_unoptimized = bounded_jit(
    _add_piece, static_argnames=("fn", "static"), compiler_options=UNOPTIMIZED
)


def _zeros_like_sums(job: Job, xt, w):
    shapes = jax.eval_shape(
        lambda xt, w, op: job.fn(xt, w, jnp.int32(0), op, job.static)[0], xt, w, job.operand
    )
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def _sample_indices(rng: np.random.Generator, n_local: int, n_total: int, m: int) -> np.ndarray:
    """A uniform sample of this process's rows, its share of ``m`` proportional to its rows."""
    if m >= n_total:
        return np.arange(n_local)
    share = min(int(round(m * n_local / n_total)), n_local)
    return np.sort(rng.choice(n_local, share, replace=False))


class StreamRows:
    """A source streamed in chunks; the sums of a pass are over every process's source.

    Parameters
    ----------
    source : ArraySource
        This process's rows.
    weight : None, ndarray or ArraySource
        Row weights of the same length.
    chunk_size : int or None
    dtype : the working dtype
    """

    def __init__(self, source: ArraySource, weight, chunk_size: int | None, dtype) -> None:
        self.source, self.weight, self.dtype = source, weight, np.dtype(dtype)
        self.n_features = source.n_features
        # Worker threads: the cores on a CPU (see run), one per device otherwise.
        cpu = jax.default_backend() == "cpu"
        self.n_workers = min(_cores(), MAX_WORKERS) if cpu else 1
        self.chunk_size = choose_chunk_size(
            chunk_size, source.n_rows, self.n_features, self.dtype.itemsize, self.n_workers
        )
        self.n_local = source.n_rows
        self.n_total = dist.check_same_width(source.n_rows, self.n_features, source.name)
        # How the rows are centred and scaled as they are read (set by the driver).
        self.centring: Centring | None = None

    def first_row(self) -> np.ndarray:
        """Process 0's first row (the same on every process)."""
        return dist.allgather(self.source.read(0, 1)[0].astype(self.dtype))[0]

    def run(self, jobs: list[Job], take: np.ndarray | None = None):
        """Every job's sums over all the rows; and the rows ``take`` (local indices) if given,
        (n, D) in the working dtype, centred and scaled by ``centring`` as the jobs see them.

        Chunk ``i`` goes to worker thread ``i % n_workers``, which adds it to its own sums: XLA
        runs one program on one core, and programs started from separate threads run in
        parallel. The workers' sums are added in worker order, so a pass is deterministic.
        """
        n_workers = self.n_workers
        accs: list[list[Any]] = [[None] * len(jobs) for _ in range(n_workers)]
        keeps: list[Any] = [None] * len(jobs)
        taken_x, taken_w = [], []
        add = _add_piece_unoptimized if self.chunk_size * self.n_features <= TINY_PIECE else None
        add = add or _add_piece_optimized

        def work(t: int, xt, w, index: int) -> None:
            for j, job in enumerate(jobs):
                if accs[t][j] is None:
                    accs[t][j] = _zeros_like_sums(job, xt, w)
                accs[t][j], keeps[j] = add(
                    accs[t][j], xt, w, np.int32(index), job.operand, fn=job.fn, static=job.static
                )
            jax.block_until_ready(accs[t])

        pools = [ThreadPoolExecutor(1) for _ in range(n_workers)]
        pending: list[Any] = [None] * n_workers
        chunks = prefetch(
            self.source,
            self.weight,
            self.chunk_size,
            self.dtype,
            transfer=_to_device,
            centring=self.centring,
        )
        # closing: an error in a worker stops the prefetch thread too.
        with contextlib.closing(chunks), contextlib.ExitStack() as stack:
            for pool in pools:
                stack.callback(pool.shutdown, wait=True, cancel_futures=True)
            for index, chunk in enumerate(chunks):
                if take is not None:
                    x_host, w_host = chunk.host
                    lo, hi = np.searchsorted(take, [chunk.start, chunk.stop])
                    sel = take[lo:hi] - chunk.start
                    taken_x.append(x_host[:, sel].T)
                    taken_w.append(w_host[sel])
                t = index % n_workers
                # One chunk per worker in flight bounds the memory when reading is faster.
                if pending[t] is not None:
                    pending[t].result()
                pending[t] = pools[t].submit(work, t, chunk.xt, chunk.w, index)
                if index == 0:  # compile once, before the other workers start
                    pending[t].result()
            for p in pending:
                if p is not None:
                    p.result()
        used = [a for a in accs if a[0] is not None]
        local = [jax.tree.map(lambda *x: sum(x[1:], x[0]), *col) for col in zip(*used, strict=True)]
        sums = dist.process_sum(jax.device_get(local))
        out = list(zip(sums, jax.device_get(keeps), strict=True))
        if take is None:
            return out
        d = self.n_features
        rows = np.concatenate(taken_x) if taken_x else np.zeros((0, d), self.dtype)
        wts = np.concatenate(taken_w) if taken_w else np.zeros(0, self.dtype)
        return out, dist.gather_rows(rows, wts)

    def sample(self, rng: np.random.Generator, m: int) -> np.ndarray:
        """Local indices of this process's share of a uniform sample of ``m`` rows."""
        return _sample_indices(rng, self.n_local, self.n_total, m)


MAX_WORKERS = 8


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _to_device(xt: np.ndarray, w: np.ndarray):
    # Each chunk has buffers of its own that nothing writes to afterwards: a CPU device may use
    # them in place (aligned, see bayesgmm.sources) instead of copying the rows once more.
    return jax.device_put(xt, may_alias=True), jax.device_put(w, may_alias=True)


def _sharded_call(xt, w, operand, centre, fn, static, mesh, axis):
    def local(xt, w, operand, centre):
        if centre is not None:  # (hi, lo, 1 / scale): see Centring.split
            xt = ((xt - centre[0][:, None]) - centre[1][:, None]) * centre[2]
        sums, keep = fn(xt, w, jax.lax.axis_index(axis), operand, static)
        return jax.lax.psum(sums, axis), keep

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(None, axis), P(axis), P(), P()),
        out_specs=(P(), P()),
        check_vma=False,
    )(xt, w, operand, centre)


_STATIC = ("fn", "static", "mesh", "axis")
_sharded_optimized = bounded_jit(_sharded_call, static_argnames=_STATIC)
_sharded_unoptimized = bounded_jit(
    _sharded_call, static_argnames=_STATIC, compiler_options=UNOPTIMIZED
)


def _local_value(a):
    """The host value of a replicated global array (every process holds a copy)."""
    return np.asarray(a.addressable_data(0))


@partial(bounded_jit, static_argnames=("dtype", "mesh", "axis"))
def _columns(x, dtype, mesh, axis):
    """The rows as columns (see bayesgmm.stats), sharded by column, in the working dtype."""
    x = x[:, None] if x.ndim == 1 else x
    xt = x.T.astype(dtype)
    return jax.lax.with_sharding_constraint(xt, NamedSharding(mesh, P(None, axis)))


@partial(bounded_jit, static_argnames=("dtype", "mesh", "axis"))
def _masked(w, mask, dtype, mesh, axis):
    return jax.lax.with_sharding_constraint((w * mask).astype(dtype), NamedSharding(mesh, P(axis)))


class ShardedRows:
    """A row-sharded global array (from :func:`bayesgmm.shard_rows`) and its row weights."""

    def __init__(self, X: jax.Array, weight, dtype) -> None:
        self.dtype = np.dtype(dtype)
        sharding = X.sharding
        self.mesh, self.axis = sharding.mesh, sharding.spec[0]
        self.n_features = 1 if X.ndim == 1 else X.shape[1]
        self.Xt = _columns(X, dtype=self.dtype, mesh=self.mesh, axis=self.axis)
        mask = dist.row_mask(X)
        self.n_local = int(sum(np.sum(np.asarray(s.data)) for s in mask.addressable_shards))
        self.n_total = int(dist.allgather(np.array([self.n_local]))[:, 0].sum())
        if weight is None:
            w = mask
        elif isinstance(weight, jax.Array) and weight.shape == (X.shape[0],):
            w = weight
        else:
            w = self._local_weights(weight, X.shape[0])
        self.w = _masked(w, mask, dtype=self.dtype, mesh=self.mesh, axis=self.axis)
        self._mask = mask
        # Rows are centred and scaled on the devices, in every pass (set by the driver).
        self.centring: Centring | None = None

    def _local_weights(self, weight, n_global: int) -> jax.Array:
        w = np.asarray(weight, np.float64)
        if w.shape != (self.n_local,):
            raise ValueError(
                f"sample_weight must have this process's {self.n_local} rows (or come from "
                f"shard_rows like X), got shape {w.shape}."
            )
        per_device = n_global // len(self.mesh.devices.flat)
        return dist._global_rows(w.astype(self.dtype), per_device)

    def first_row(self) -> np.ndarray:
        shard = min(self.Xt.addressable_shards, key=lambda s: s.index[1].start or 0)
        return dist.allgather(np.asarray(shard.data[:, 0]))[0]

    def run(self, jobs: list[Job], take: np.ndarray | None = None):
        out = []
        per_device = self.Xt.shape[1] // len(self.mesh.devices.flat)
        tiny = per_device * self.n_features <= TINY_PIECE
        call = _sharded_unoptimized if tiny else _sharded_optimized
        centre = None if self.centring is None else self.centring.split(self.dtype)
        for job in jobs:
            sums, keep = call(
                self.Xt,
                self.w,
                job.operand,
                centre,
                fn=job.fn,
                static=job.static,
                mesh=self.mesh,
                axis=self.axis,
            )
            out.append((jax.tree.map(_local_value, sums), jax.tree.map(_local_value, keep)))
        if take is None:
            return out
        return out, self._take(take)

    def _shards(self):
        """This process's (column shard, weight shard, mask) in row order."""
        xs = sorted(self.Xt.addressable_shards, key=lambda s: s.index[1].start or 0)
        ws = sorted(self.w.addressable_shards, key=lambda s: s.index[0].start or 0)
        ms = sorted(self._mask.addressable_shards, key=lambda s: s.index[0].start or 0)
        return [(x.data, w.data, np.asarray(m.data)) for x, w, m in zip(xs, ws, ms, strict=True)]

    def _take(self, take: np.ndarray):
        """The rows ``take`` (indices among this process's rows that hold data), gathered."""
        rows, wts, offset = [], [], 0
        for xt, w, m in self._shards():
            valid = np.flatnonzero(m)
            lo, hi = np.searchsorted(take, [offset, offset + len(valid)])
            sel = valid[take[lo:hi] - offset]
            if len(sel):
                rows.append(np.asarray(xt[:, sel]).T)
                wts.append(np.asarray(w[sel]))
            offset += len(valid)
        d = self.n_features
        rows_a = np.concatenate(rows) if rows else np.zeros((0, d), self.dtype)
        w_a = np.concatenate(wts) if wts else np.zeros(0, self.dtype)
        if self.centring is not None:  # the rows as the passes see them
            hi, lo, inv = self.centring.split(self.dtype)
            rows_a = ((rows_a - hi) - lo) * inv
        return dist.gather_rows(rows_a, w_a)

    def sample(self, rng: np.random.Generator, m: int) -> np.ndarray:
        return _sample_indices(rng, self.n_local, self.n_total, m)


def rows_of(X, sample_weight, chunk_size: int | None, dtype) -> StreamRows | ShardedRows:
    """The pass engine for ``X``: a row-sharded array, or a source (or array) read in chunks.

    ``sample_weight`` is validated already: None, an array of this process's row count, a
    source of the same length, or (sharded ``X``) an array sharded like ``X``.
    """
    from .sources import is_source

    if dist.is_sharded(X):
        return ShardedRows(X, sample_weight, dtype)
    source = X.source if isinstance(X, dist.ShardedSource) else ArraySource(X)
    weight = sample_weight
    if weight is not None and is_source(weight):
        weight = ArraySource(weight, "sample_weight")
        if weight.shape != (source.n_rows,):
            raise ValueError(
                f"sample_weight must have shape ({source.n_rows},) like the rows of X, got a "
                f"source of shape {weight.shape}."
            )
    return StreamRows(source, weight, chunk_size, dtype)
