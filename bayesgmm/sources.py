"""Array sources: data read from disk (or another store) in chunks of rows, with a prefetch thread.

A *source* is any array-like with ``.shape``, ``.dtype`` and row slicing (``source[a:b]``) that
is not an in-memory NumPy or JAX array: ``np.load(path, mmap_mode="r")`` (a ``np.memmap``),
``h5py.Dataset``, ``zarr.Array``, ``dask.array.Array``. Fits stream them: every pass reads the
rows chunk by chunk, and a background thread reads, checks and converts chunk ``i + 1`` while the
caller computes on chunk ``i``.

Memory budget of a pass, whatever the number of rows: the chunks being computed on (one per
worker thread of :class:`bayesgmm.passes.StreamRows`: one per core on a CPU), one chunk waiting
in the queue and one being read (each ``chunk_size`` rows of the working dtype, plus the raw
rows of the source's dtype while they are converted). By default a chunk holds about
``CHUNK_BYTES`` (32 MiB) of working-dtype data, so on 2 cores a pass keeps about 4 x 32 MiB of
rows resident, on top of the JAX runtime and the compiled programs.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from ._transform import centre_rows, split_shift

# Working-dtype bytes of one chunk (rows and weights) when chunk_size is not given: large enough
# that the per-chunk dispatch is nothing against the E-step, small enough for a fixed budget.
CHUNK_BYTES = 2**25


def is_source(X: Any) -> bool:
    """Whether ``X`` is streamed: a memory map or an array-like that is not an in-memory array."""
    if isinstance(X, np.memmap):
        return True
    if isinstance(X, np.ndarray) or _is_jax_array(X):
        return False
    if type(X).__module__.split(".")[0] == "pandas":
        return False
    return all(hasattr(X, a) for a in ("shape", "dtype", "__getitem__"))


def _is_jax_array(X: Any) -> bool:
    import jax

    return isinstance(X, jax.Array)


class Chunk(NamedTuple):
    """Rows ``[start, stop)`` of a source, as columns of the working dtype."""

    start: int
    stop: int
    xt: Any  # shape=(D, chunk_size): padded with zero columns past ``stop - start``
    w: Any  # shape=(chunk_size,): zero on the padding
    host: tuple[np.ndarray, np.ndarray]  # (xt, w) as NumPy arrays (``xt, w`` may be on a device)


class ArraySource:
    """A validated view of a source: its shape and dtype, checked again at every read.

    Parameters
    ----------
    source : array-like
        1-D (one feature) or 2-D, numeric.
    name : str
        The parameter's name in error messages.
    """

    def __init__(self, source: Any, name: str = "X") -> None:
        self.source, self.name = source, name
        shape = tuple(int(s) for s in source.shape)
        dtype = np.dtype(source.dtype)
        if len(shape) not in (1, 2):
            raise ValueError(
                f"{name} must be a 1-D (n_samples,) or 2-D (n_samples, n_features) source, got "
                f"shape {shape}."
            )
        if not (np.issubdtype(dtype, np.number) or dtype == np.bool_) or np.issubdtype(
            dtype, np.complexfloating
        ):
            raise ValueError(f"{name} must hold real numbers, got a source of dtype {dtype}.")
        if shape[0] == 0 or (len(shape) == 2 and shape[1] == 0):
            raise ValueError(f"{name} must have at least one row and one column, got {shape}.")
        self.shape, self.dtype = shape, dtype

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    @property
    def n_features(self) -> int:
        return self.shape[1] if len(self.shape) == 2 else 1

    def check_unchanged(self) -> None:
        """Refuse a source whose row count, width or dtype differs from when the fit started."""
        shape = tuple(int(s) for s in self.source.shape)
        dtype = np.dtype(self.source.dtype)
        if shape != self.shape or dtype != self.dtype:
            raise ValueError(
                f"{self.name} changed during the fit: it had shape {self.shape} and dtype "
                f"{self.dtype} when the fit started, and now has shape {shape} and dtype {dtype}. "
                "Do not write to a source while it is being fitted."
            )

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as a NumPy array (n, D) of the source's dtype."""
        self.check_unchanged()
        rows = np.asarray(self.source[start:stop])
        if rows.ndim == 1:
            rows = rows[:, None]
        if rows.shape != (stop - start, self.n_features) or rows.dtype != self.dtype:
            raise ValueError(
                f"{self.name} changed during the fit: rows {start} to {stop} came back with shape "
                f"{rows.shape} and dtype {rows.dtype}, expected {(stop - start, self.n_features)} "
                f"and {self.dtype}."
            )
        return rows


def check_chunk_size(chunk_size) -> int | None:
    """``chunk_size`` validated: None or a positive integer."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}.")
    return int(chunk_size)


def choose_chunk_size(
    chunk_size: int | None, n_rows: int, n_features: int, itemsize: int, n_workers: int = 1
) -> int:
    """Rows per chunk: ``chunk_size`` if given (at most ``n_rows``), else about CHUNK_BYTES.

    The default is balanced: the rows are cut into equal chunks (no chunk is mostly padding),
    as many as a multiple of ``n_workers`` (each worker gets the same number of chunks), none
    larger than CHUNK_BYTES. A given ``chunk_size`` is kept as it is (errors name its rows).
    """
    chunk_size = check_chunk_size(chunk_size)
    if chunk_size is not None:
        return int(min(chunk_size, n_rows))
    limit = max(CHUNK_BYTES // ((n_features + 1) * itemsize), 1)
    count = math.ceil(n_rows / limit)
    count = min(math.ceil(count / n_workers) * n_workers, n_rows)
    return math.ceil(n_rows / count)


# Rows transposed at a time while a chunk is laid out as columns: a tile that stays in the
# cache (a strided transpose of a whole chunk is several times slower).
_TRANSPOSE_ROWS = 4096
# Alignment of a chunk's buffer, so that the device can use it without a copy.
_ALIGN = 64


def _aligned_zeros(shape: tuple[int, int], dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    nbytes = shape[0] * shape[1] * dtype.itemsize
    raw = np.zeros(nbytes + _ALIGN, np.uint8)
    offset = -raw.ctypes.data % _ALIGN
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def _weights(weight: Any, start: int, stop: int) -> np.ndarray:
    if isinstance(weight, ArraySource):
        w = weight.read(start, stop)[:, 0]
    else:
        w = weight[start:stop]
    w = np.asarray(w, np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(
            f"sample_weight must be finite and non-negative; rows {start} to {stop - 1} are not."
        )
    return w


class Centring(NamedTuple):
    """``y = (x - shift) / scale``, applied to the rows on the host as they are read, before
    they are cast to the working dtype (see bayesgmm._transform): so rows far from the origin
    keep their digits."""

    shift: np.ndarray  # shape=(D,), float64
    scale: float  # a power of two: dividing by it is exact

    def split(self, dtype) -> tuple[np.ndarray, np.ndarray, Any]:
        """``(hi, lo, 1 / scale)`` in ``dtype`` with ``hi + lo`` the shift to about eps^2:
        ``(x - hi) - lo`` centres rows of ``dtype`` (near the shift ``x - hi`` is exact) as
        accurately as float64 arithmetic followed by the cast."""
        return split_shift(self.shift, self.scale, dtype)


def _tile_map(rows_dtype: np.dtype, dtype: np.dtype, centring: Centring | None):
    """The map applied to each tile of rows before the cast to ``dtype``."""
    if centring is None:
        return lambda r: r
    # Floating rows are centred in the more precise of their own and the working precision,
    # integers in float64.
    compute = np.promote_types(rows_dtype, dtype) if rows_dtype.kind == "f" else np.float64
    hi, lo, inv = centring.split(compute)
    buf = np.empty((_TRANSPOSE_ROWS, len(hi)), compute)  # in place: no temporaries per tile

    def centre(r):
        return centre_rows(r, hi, lo, inv, buf[: len(r)])

    return centre


def make_chunk(
    source: ArraySource,
    weight: Any,
    start: int,
    stop: int,
    chunk_size: int,
    dtype,
    centring: Centring | None = None,
) -> Chunk:
    """Rows ``[start, stop)`` checked for NaN and infinity, as padded columns of ``dtype``,
    centred and scaled by ``centring`` if given (then also checked against overflow)."""
    dtype = np.dtype(dtype)
    rows = source.read(start, stop)
    xt = _aligned_zeros((source.n_features, chunk_size), dtype)
    n = stop - start
    tile = _tile_map(rows.dtype, dtype, centring)
    for a in range(0, n, _TRANSPOSE_ROWS):
        b = min(a + _TRANSPOSE_ROWS, n)
        xt[:, a:b] = tile(rows[a:b]).T
    hi, lo = xt.max(), xt.min()  # NaN propagates
    if not (np.isfinite(hi) and np.isfinite(lo)):
        bad = np.flatnonzero(~np.all(np.isfinite(xt[:, : stop - start]), axis=0))
        raise ValueError(
            f"{source.name} contains NaN or infinite values in rows {start} to {stop - 1} "
            f"(first at row {start + int(bad[0]) if len(bad) else start}); remove or impute them "
            "first."
        )
    # Squares and their sums must stay finite (as for the in-memory fits, bayesgmm._transform).
    limit = np.sqrt(np.finfo(dtype).max / 1e4)
    if centring is not None and not max(hi, -lo) < limit:
        raise ValueError(
            f"{source.name} overflows {dtype.name}: after centring and scaling, rows {start} to "
            f"{stop - 1} hold a value {max(hi, -lo):.3g} (scaled) units from the data mean, "
            f"whose square exceeds the {dtype.name} range. Remove the outlier"
            + (" or use float64." if dtype == np.float32 else ".")
        )
    w = np.zeros(chunk_size, dtype)
    w[: stop - start] = 1.0 if weight is None else _weights(weight, start, stop)
    return Chunk(start, stop, xt, w, (xt, w))


def chunk_bounds(n_rows: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk_size, n_rows)) for a in range(0, n_rows, chunk_size)]


def n_chunks(n_rows: int, chunk_size: int) -> int:
    return math.ceil(n_rows / chunk_size)


_DONE = object()


def prefetch(
    source: ArraySource,
    weight: Any,
    chunk_size: int,
    dtype,
    depth: int = 1,
    transfer: Callable[[np.ndarray, np.ndarray], tuple[Any, Any]] | None = None,
    centring: Centring | None = None,
) -> Iterator[Chunk]:
    """The chunks of ``source`` in order, each read by a background thread ahead of its use.

    At most ``depth`` chunks wait in the queue (plus the one being read), which bounds the
    memory. An error while reading (NaN, a changed source) is raised here, at the chunk where it
    happened; closing the iterator early stops the thread. ``transfer(xt, w)``, if given, moves
    a chunk to the device in the thread too; ``centring`` centres and scales the rows.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for a, b in chunk_bounds(source.n_rows, chunk_size):
                chunk = make_chunk(source, weight, a, b, chunk_size, dtype, centring)
                if transfer is not None:
                    xt, w = transfer(*chunk.host)
                    chunk = chunk._replace(xt=xt, w=w)
                if not put(chunk):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(exc)

    thread = threading.Thread(target=work, name="bayesgmm-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
