"""Compiled programs: a persistent cache on disk and a bounded cache in memory.

On disk. Importing this module (every fitting module does) points JAX's persistent compilation
cache at ``$XDG_CACHE_HOME/bayesgmm/jax`` (default ``~/.cache/bayesgmm/jax``), so that a new
process loads the EM programs an earlier one compiled instead of compiling them again. It is
left alone when the user configured a cache directory of their own (``jax_compilation_cache_dir``
or ``JAX_COMPILATION_CACHE_DIR``) and switched off by ``BAYESGMM_NO_CACHE=1``. JAX must not
have compiled anything in this process before (it fixes its cache settings at the first
compilation); ``python -m bayesgmm`` and ``import bayesgmm`` followed by a fit satisfy this.
Several processes may share the directory: JAX takes a file lock around each read and write
with the ``filelock`` package, a dependency of bayesgmm (then the directory is also kept under
``_MAX_DISK_BYTES``); without it (an install that left it out), a process that reads an
entry while another is still writing it fails to decompress it, warns and compiles the program
itself.

In memory. :func:`bounded_jit` is ``jax.jit`` with at most ``max_programs()`` compiled
programs kept (least recently used first out, ``BAYESGMM_MAX_PROGRAMS``, default 64). Each
program is jitted from a function object of its own, so that evicting it frees the executable
from JAX's own caches too (they are keyed weakly on that function): a long-lived process that
fits many shapes keeps its memory bounded.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

ENV_NO_CACHE = "BAYESGMM_NO_CACHE"
ENV_MAX_PROGRAMS = "BAYESGMM_MAX_PROGRAMS"
_DEFAULT_MAX_PROGRAMS = 64
_MAX_DISK_BYTES = 1 << 30
# Programs that compile faster than this are not worth a file (JAX's default is 1 s, which
# would skip every EM program of a small data set).
_MIN_COMPILE_SECS = 0.1
# Compiler options of the whole-fit programs: LLVM's -O1 instead of -O2. The EM loops spend their
# time in matrix products and reductions that XLA emits the same way at either level, while -O2's
# extra passes over the hundreds of small kernels of a fit cost a third of its compile time.
FAST_COMPILE = {"xla_backend_optimization_level": 1}


def cache_dir() -> str:
    """The directory of bayesgmm's persistent compilation cache (it may not exist yet)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "bayesgmm", "jax")


def configure_persistent_cache() -> str | None:
    """Turn on the persistent compilation cache unless disabled or configured by the user.

    Returns
    -------
    str or None
        The cache directory JAX uses (the user's own if they set one), or None when off.
    """
    if os.environ.get(ENV_NO_CACHE, "").strip() not in ("", "0"):
        return None
    own = jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if own:
        return own
    path = cache_dir()
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:  # read-only home, no home: run without a cache
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_SECS)
    try:
        import filelock  # noqa: F401  (JAX needs it to bound the directory and lock entries)
    except ImportError:
        pass
    else:
        if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
            jax.config.update("jax_compilation_cache_max_size", _MAX_DISK_BYTES)
    return path


PERSISTENT_CACHE = configure_persistent_cache()


def max_programs() -> int:
    """How many compiled programs :func:`bounded_jit` functions keep, all together."""
    try:
        return max(1, int(os.environ.get(ENV_MAX_PROGRAMS, _DEFAULT_MAX_PROGRAMS)))
    except ValueError:
        return _DEFAULT_MAX_PROGRAMS


class CacheInfo(NamedTuple):
    size: int  # programs held now
    maxsize: int
    hits: int
    misses: int  # compilations (or loads from the persistent cache)


_programs: OrderedDict[tuple, Any] = OrderedDict()
_lock = threading.Lock()
_counts = {"hits": 0, "misses": 0}


def cache_info() -> CacheInfo:
    """Size and use of the in-memory program cache shared by every :func:`bounded_jit`."""
    with _lock:
        return CacheInfo(len(_programs), max_programs(), _counts["hits"], _counts["misses"])


def clear_programs() -> None:
    """Drop every compiled program held by :func:`bounded_jit` functions."""
    with _lock:
        _programs.clear()


def _signature(x) -> tuple:
    dtype = getattr(x, "dtype", None)
    if dtype is None:  # Python scalars are weakly typed in JAX
        a = np.asarray(x)
        return (a.shape, str(a.dtype), True)
    return (tuple(np.shape(x)), str(dtype), bool(getattr(x, "weak_type", False)))


def bounded_jit(
    fun: Callable, static_argnames: tuple[str, ...] = (), compiler_options: dict | None = None
) -> Callable:
    """``jax.jit(fun, static_argnames=...)`` whose compiled programs live in the bounded cache.

    Static arguments are passed by keyword, the traced ones by position (arrays, NumPy scalars
    and pytrees of them). A program is looked up by the static values and the shapes and dtypes
    of the traced arguments.
    """
    tag = (fun.__module__, fun.__qualname__, tuple(sorted((compiler_options or {}).items())))

    def call(*args, **static):
        return get(args, static)(*args)

    def get(args, static):
        leaves, treedef = jax.tree.flatten(args)
        key = (
            tag,
            tuple(sorted(static.items())),
            treedef,
            tuple(_signature(x) for x in leaves),
        )
        with _lock:
            program = _programs.get(key)
            if program is not None:
                _programs.move_to_end(key)
                _counts["hits"] += 1
        if program is None:
            program = _compile(fun, static, compiler_options, args)
            with _lock:
                _counts["misses"] += 1
                _programs[key] = program
                _programs.move_to_end(key)
                while len(_programs) > max_programs():
                    _programs.popitem(last=False)
        return program

    def program(*args, **static):
        """The compiled program for these arguments (compiled, or found in the caches, now).

        Call it with the traced arguments only. For precompiling, and for a loop that calls one
        program many times: it skips the lookup of every call."""
        return get(args, static)

    call.program = program
    call.__wrapped__ = fun
    call.__doc__ = fun.__doc__
    return call


def _compile(fun: Callable, static: dict, compiler_options: dict | None, args: tuple):
    # A new function object per program: JAX's tracing, lowering and compilation caches hold
    # it weakly, so the executable goes when this cache lets the program go.
    def program(*traced):
        return fun(*traced, **static)

    jitted = jax.jit(program, compiler_options=compiler_options)
    return jitted.lower(*args).compile()
