"""Several devices and several processes: ``shard_rows`` and the sums across processes.

Devices are JAX's own: :func:`shard_rows` lays this process's rows out over its local devices as
one global, row-sharded ``jax.Array`` over every device of every process (after
``jax.distributed.initialize``), and the fits sum their statistics over that axis with ``psum``
inside ``shard_map``. A source given to :func:`shard_rows` is not loaded: each process streams
its own rows and the statistics of every pass are summed across processes.

The sums across processes go through JAX's multi-process runtime (gloo collectives on CPUs,
NCCL on GPUs). Every process then adds the same numbers in the same order, so all of them hold
bit-identical statistics and take bit-identical M-steps. A process that dies stops sending
heartbeats; after ``heartbeat_timeout_seconds`` (an argument of ``jax.distributed.initialize``)
the runtime ends the others with a message naming the task, instead of leaving them waiting in
a collective.
"""

from __future__ import annotations

import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import _validation as v
from .numerics import float_dtype
from .sources import ArraySource, is_source

AXIS = "rows"


def n_processes() -> int:
    return jax.process_count()


def allgather(x: np.ndarray) -> np.ndarray:
    """``x`` (same shape on every process) from every process: shape (n_processes, *x.shape)."""
    x = np.asarray(x)
    if n_processes() == 1:
        return x[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=False))


def process_sum(tree):
    """A pytree of arrays summed over the processes, in process order (the same bits everywhere)."""
    if n_processes() == 1:
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    host = [np.asarray(a) for a in jax.device_get(leaves)]
    dtype = np.result_type(*host)
    flat = np.concatenate([a.astype(dtype).ravel() for a in host])
    gathered = allgather(flat)
    total = gathered[0].copy()
    for row in gathered[1:]:  # a fixed order, not a tree reduction whose shape might vary
        total += row
    out, at = [], 0
    for a in host:
        out.append(total[at : at + a.size].reshape(a.shape).astype(a.dtype))
        at += a.size
    return jax.tree.unflatten(treedef, out)


def gather_rows(rows: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (n_p, D) and weights (n_p,) of every process, concatenated in process order."""
    if n_processes() == 1:
        return rows, w
    counts = allgather(np.array([rows.shape[0]], np.int64))[:, 0]
    m = int(counts.max())
    pad = np.zeros((m, rows.shape[1]), rows.dtype)
    pad[: rows.shape[0]] = rows
    wpad = np.zeros(m, w.dtype)
    wpad[: rows.shape[0]] = w
    all_rows, all_w = allgather(pad), allgather(wpad)
    keep = [slice(0, int(c)) for c in counts]
    return (
        np.concatenate([r[s] for r, s in zip(all_rows, keep, strict=True)]),
        np.concatenate([x[s] for x, s in zip(all_w, keep, strict=True)]),
    )


def check_same_width(n_rows: int, n_features: int, what: str) -> int:
    """The total row count over the processes; every process must have the same width."""
    info = allgather(np.array([n_rows, n_features], np.int64))
    widths = info[:, 1]
    if np.any(widths != widths[0]):
        per = ", ".join(f"process {p}: {int(d)}" for p, d in enumerate(widths))
        raise ValueError(
            f"{what} must have the same number of features on every process, got {per}."
        )
    return int(info[:, 0].sum())


# --------------------------------------------------------------------------- sharded arrays


class ShardedSource:
    """This process's rows of a data set spread over processes, streamed by the fits."""

    def __init__(self, source: Any) -> None:
        self.source = ArraySource(source)
        self.n_rows_total = check_same_width(
            self.source.n_rows, self.source.n_features, "The sources given to shard_rows"
        )

    @property
    def shape(self) -> tuple[int, ...]:
        return self.source.shape

    @property
    def dtype(self):
        return self.source.dtype


# The zero-weight padding of the arrays made by shard_rows: id(array) -> (weakref, row mask).
_MASKS: dict[int, tuple[weakref.ref, jax.Array]] = {}


def mesh() -> Mesh:
    """A one-axis mesh over every device of every process, process by process."""
    return Mesh(np.array(jax.devices()), (AXIS,))


def _global_rows(local: np.ndarray, per_device: int) -> jax.Array:
    """This process's rows, padded to ``per_device`` per local device, as one global array."""
    n_local = jax.local_device_count() * per_device
    padded = np.zeros((n_local,) + local.shape[1:], local.dtype)
    padded[: local.shape[0]] = local
    spec = P(AXIS) if local.ndim == 1 else P(AXIS, None)
    return jax.make_array_from_process_local_data(NamedSharding(mesh(), spec), padded)


def shard_rows(X: Any) -> jax.Array | ShardedSource:
    """This process's rows spread over its local devices, as part of one global data set.

    Parameters
    ----------
    X : array of shape (n_samples, n_features) or (n_samples,), or a source
        This process's rows. After ``jax.distributed.initialize``, every process calls
        ``shard_rows`` (a collective) on its own rows; the counts may differ, the widths may not.
        A source (a memory map, ``h5py.Dataset``, ``zarr.Array``, ``dask.array.Array``) is not
        read here: the fits stream it, each process its own rows.

    Returns
    -------
    jax.Array or ShardedSource
        For in-memory rows, a global array of shape (n_devices * m, n_features), sharded by rows
        over every device of every process (``m`` rows per device, the largest share rounded
        up), in the working dtype; rows that pad a share have weight zero in the fits.
        ``Mixture.fit_em`` and :func:`bayesgmm.select` sum over all the rows of all processes.

    Examples
    --------
    >>> import numpy as np, bayesgmm as bg
    >>> Xs = bg.shard_rows(np.random.default_rng(0).normal(size=(1000, 2)))
    >>> res = bg.Mixture(2).fit_em(Xs)  # the same fit as bg.Mixture(2).fit_em(X)
    """
    if is_source(X):
        return ShardedSource(X)
    Xa = v.check_X(X, dtype=float_dtype())
    is_weights = np.ndim(X) == 1
    check_same_width(
        Xa.shape[0], 1 if is_weights else Xa.shape[1], "The arrays given to shard_rows"
    )
    counts = allgather(np.array([Xa.shape[0]], np.int64))[:, 0]
    per_device = max(-(-int(counts.max()) // jax.local_device_count()), 1)
    local = Xa[:, 0] if is_weights else Xa
    out = _global_rows(np.asarray(local), per_device)
    ones = np.ones(Xa.shape[0], local.dtype)
    register(out, _global_rows(ones, per_device))
    return out


def register(arr: jax.Array, mask: jax.Array) -> None:
    key = id(arr)
    _MASKS[key] = (weakref.ref(arr, lambda _: _MASKS.pop(key, None)), mask)


def row_mask(arr: jax.Array) -> jax.Array:
    """1 for the rows of ``arr`` that hold data, 0 for the padding that shard_rows added."""
    entry = _MASKS.get(id(arr))
    if entry is not None and entry[0]() is arr:
        return entry[1]
    ones = jnp.ones(arr.shape[0], arr.dtype)
    return jax.device_put(ones, NamedSharding(arr.sharding.mesh, P(arr.sharding.spec[0])))


def is_sharded(X: Any) -> bool:
    """Whether ``X`` is a row-sharded global array (from shard_rows) rather than local data."""
    if not isinstance(X, jax.Array) or X.ndim not in (1, 2):
        return False
    sharding = X.sharding
    if not isinstance(sharding, NamedSharding) or len(sharding.mesh.devices.flat) < 2:
        return id(X) in _MASKS
    spec = tuple(sharding.spec) + (None,)
    return spec[0] is not None


def local_rows(arr: jax.Array) -> np.ndarray:
    """This process's rows of a sharded array that hold data (padding removed), in row order.

    On one process these are all the rows; with several, the rows this process passed to
    :func:`shard_rows` (its addressable shards, one copy of each).
    """
    mask = row_mask(arr)
    if n_processes() == 1:
        return np.asarray(arr)[np.asarray(mask) > 0]

    def pieces(a):
        shards = [s for s in a.addressable_shards if s.replica_id == 0]
        return [np.asarray(s.data) for s in sorted(shards, key=lambda s: s.index[0].start or 0)]

    rows = [x[m > 0] for x, m in zip(pieces(arr), pieces(mask), strict=True)]
    return np.concatenate(rows)


def _spread(X: Any) -> bool:
    """Whether ``X`` holds this process's share of rows spread over several processes."""
    return n_processes() > 1 and (isinstance(X, ShardedSource) or is_sharded(X))


def process_total(total: float, n: int, X: Any) -> tuple[float, int]:
    """A sum over rows and their count, over every process's rows when ``X`` is spread over
    processes (from :func:`shard_rows`; a collective that every process calls), else as given.
    The same bits on every process."""
    if not _spread(X):
        return total, n
    with np.errstate(over="ignore"):  # the caller clamps
        out = process_sum(np.array([total, n], np.float64))
    return float(out[0]), int(out[1])


def global_mean(mean: float, n: int, X: Any) -> float:
    """The mean over every process's rows of this process's ``mean`` of ``n`` rows, when ``X``
    is spread over processes (a collective), else ``mean``; each process's mean is weighted by
    its share of the rows (no sum that could overflow)."""
    if not _spread(X):
        return mean
    both = allgather(np.array([mean, n], np.float64))
    share = both[:, 1] / np.sum(both[:, 1])
    out = 0.0
    for m, f in zip(both[:, 0], share, strict=True):  # a fixed order: the same bits everywhere
        out += float(m * f) if f > 0 else 0.0
    return out
