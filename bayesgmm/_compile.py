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

Whole programs on disk. JAX's cache still traces and lowers a program in every process; the
programs of :func:`bounded_jit` are also kept as serialized executables in
``$XDG_CACHE_HOME/bayesgmm/programs`` (or ``$BAYESGMM_CACHE_DIR/programs``; off with
``BAYESGMM_NO_CACHE=1``, whatever JAX's own cache directory), which a later process loads
without tracing, lowering or compiling: see "compiled programs on disk" below.

In memory. :func:`bounded_jit` is ``jax.jit`` with at most ``max_programs()`` compiled
programs kept (least recently used first out, ``BAYESGMM_MAX_PROGRAMS``, default 64). Each
program is jitted from a function object of its own, so that evicting it frees the executable
from JAX's own caches too (they are keyed weakly on that function): a long-lived process that
fits many shapes keeps its memory bounded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import json
import logging
import os
import platform
import tempfile
import threading
import time
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


def _caching_off() -> bool:
    """``BAYESGMM_NO_CACHE`` set: neither JAX's cache nor bayesgmm's programs on disk."""
    return os.environ.get(ENV_NO_CACHE, "").strip() not in ("", "0")


def configure_persistent_cache() -> str | None:
    """Turn on the persistent compilation cache unless disabled or configured by the user.

    Returns
    -------
    str or None
        The cache directory JAX uses (the user's own if they set one), or None when off.
    """
    if _caching_off():
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


def _tag(fun: Callable, compiler_options: dict | None) -> tuple:
    return (fun.__module__, fun.__qualname__, tuple(sorted((compiler_options or {}).items())))


def _lookup_key(tag: tuple, args: tuple, static: dict) -> tuple:
    """A program's key: its function and options, static values, argument structure and types."""
    leaves, treedef = jax.tree.flatten(args)
    return (tag, tuple(sorted(static.items())), treedef, tuple(_signature(x) for x in leaves))


def bounded_jit(
    fun: Callable, static_argnames: tuple[str, ...] = (), compiler_options: dict | None = None
) -> Callable:
    """``jax.jit(fun, static_argnames=...)`` whose compiled programs live in the bounded cache.

    Static arguments are passed by keyword, the traced ones by position (arrays, NumPy scalars
    and pytrees of them). A program is looked up by the static values and the shapes and dtypes
    of the traced arguments.
    """
    tag = _tag(fun, compiler_options)

    def call(*args, **static):
        return get(args, static)(*args)

    def get(args, static):
        key = _lookup_key(tag, args, static)
        with _lock:
            program = _programs.get(key)
            if program is not None:
                _programs.move_to_end(key)
                _counts["hits"] += 1
        if program is None:
            program = _compile(fun, static, compiler_options, args, key)
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


def _compile(fun: Callable, static: dict, compiler_options: dict | None, args: tuple, key: tuple):
    # A new function object per program: JAX's tracing, lowering and compilation caches hold
    # it weakly, so the executable goes when this cache lets the program go.
    def program(*traced):
        return fun(*traced, **static)

    store = _program_store(key)
    if store is not None:
        found = store.load(args)
        if found is not None:
            return found
        # Named after its file: JAX's cache key starts with the module's name, so JAX's entry
        # changes with everything bayesgmm's file name hashes (its source above all). Otherwise
        # a new release whose programs lower the same would find them in JAX's cache, whose
        # executables cannot be kept (below), and no later process would load them whole.
        program.__name__ = program.__qualname__ = f"program_{store.name}"
    _jax_cache.hit = False
    compiled = jax.jit(program, compiler_options=compiler_options).lower(*args).compile()
    # An executable that JAX loaded from its own disk cache serializes without its kernels
    # (jaxlib 0.12): only a freshly compiled one is kept.
    if store is not None and not _jax_cache.hit:
        store.save(compiled)
    return compiled


# ------------------------------------------------------------------ compiled programs on disk
#
# JAX's persistent cache skips XLA's compilation in a later process, but not the tracing and
# lowering before it, which cost as much again for a fit on small data (and its first lowering
# starts MLIR). So each program is also kept whole: its executable, serialized after the first
# compilation, is loaded by a later process without tracing, lowering or compiling anything.
# The file name hashes everything the program depends on: bayesgmm's own source, the versions of
# JAX and NumPy, the configuration that changes lowering, the processor and XLA's flags (the
# code is compiled for this host), the static arguments and the shapes and dtypes of the traced
# ones. It assumes that a program's code is the package's source: patching a module's constants
# at run time is not seen. Only single-device processes keep programs; programs whose static
# arguments have no stable text (functions) are never kept. Loading a program runs native code
# from the cache directory, as JAX's own cache does: it must be the user's own.

ENV_CACHE_DIR = "BAYESGMM_CACHE_DIR"
# Recorded (jax.monitoring, with fun_name) for each program loaded from the disk store, as JAX
# records its own compilations and cache loads: whoever counts compilations can count these.
PROGRAM_LOAD_EVENT = "/bayesgmm/program_store/load_duration_secs"
_MAX_STORED_BYTES = 512 << 20
_STORED_SUFFIX = ".xla"
_FORMAT = b"bayesgmm-program-1\n"
_log = logging.getLogger(__name__)
# Set when the directory cannot be written: the process stops serializing programs for nothing.
_unwritable = False


def programs_dir() -> str | None:
    """Where compiled programs are kept for later processes, or None when caching is off.

    ``$BAYESGMM_CACHE_DIR/programs`` if set, else ``programs`` beside :func:`cache_dir`; off with
    ``BAYESGMM_NO_CACHE=1``.
    """
    if _unwritable or _caching_off():
        return None
    root = os.environ.get(ENV_CACHE_DIR)
    if root:
        return os.path.join(root, "programs")
    return os.path.join(os.path.dirname(cache_dir()), "programs")


def _stable_text(value) -> str | None:
    """A text for a static argument that is the same in every process, or None."""
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    if isinstance(value, tuple | list):
        parts = [_stable_text(v) for v in value]
        if any(p is None for p in parts):
            return None
        name = type(value).__qualname__ if hasattr(value, "_fields") else type(value).__name__
        return f"{name}({','.join(parts)})"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = [(f.name, _stable_text(getattr(value, f.name))) for f in dataclasses.fields(value)]
        if any(t is None for _, t in fields):
            return None
        return f"{type(value).__qualname__}({','.join(f'{n}={t}' for n, t in fields)})"
    if isinstance(value, np.dtype):
        return f"dtype({value.str})"
    return None


def _host_text() -> str:
    # The executables are compiled for this processor's instruction set.
    text = platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(("model name", "flags")):
                    text += "|" + line.strip()
                if line.strip() == "":  # the first processor is enough
                    break
    except OSError:
        text += "|" + platform.processor()
    return text


@functools.cache
def _environment_text() -> str:
    # bayesgmm's source: any edit to the package makes every kept program stale.
    digest = hashlib.sha256()
    package = os.path.dirname(os.path.abspath(__file__))
    for folder, dirs, files in sorted(os.walk(package)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, package).encode())
                with open(path, "rb") as handle:
                    digest.update(handle.read())
    import jaxlib

    return "|".join(
        (
            digest.hexdigest(),
            jax.__version__,
            getattr(jaxlib, "__version__", "?"),
            np.__version__,
            _host_text(),
        )
    )


def _config_text() -> str:
    # Settings that change what a traced function compiles to (read at every lookup: they may
    # be switched inside a process, as ``jax.enable_x64`` does).
    cfg = jax.config
    names = (
        "jax_enable_x64",
        "jax_default_matmul_precision",
        "jax_default_prng_impl",
        "jax_threefry_partitionable",
    )
    return "|".join(
        [str(getattr(cfg, name, None)) for name in names]
        + [jax.default_backend(), os.environ.get("XLA_FLAGS", "")]
    )


def _program_store(key: tuple):
    """The file of the program that ``key`` (``bounded_jit``'s lookup key) names, or None."""
    folder = programs_dir()
    if folder is None or jax.process_count() != 1 or jax.device_count() != 1:
        return None
    tag, static_items, treedef, signatures = key
    static_text = _stable_text(static_items)
    if static_text is None:
        return None
    parts = (_environment_text(), _config_text(), repr(tag), static_text, str(treedef))
    text = "\n".join(parts + (repr(signatures),))
    return _Stored(folder, hashlib.sha256(text.encode()).hexdigest()[:40])


class _Leaf:
    pass


def _encode_tree(treedef) -> str:
    """A program's output structure as JSON: tuples, lists, dicts, None, bayesgmm's NamedTuples."""
    leaf = _Leaf()

    def encode(node):
        if node is leaf:
            return "*"
        if node is None:
            return None
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            cls = type(node)
            if not cls.__module__.startswith("bayesgmm."):
                raise TypeError(f"a NamedTuple outside bayesgmm: {cls}")
            return {"n": f"{cls.__module__}:{cls.__qualname__}", "c": [encode(c) for c in node]}
        if type(node) in (tuple, list):
            return {type(node).__name__: [encode(c) for c in node]}
        if type(node) is dict:
            return {"d": [[k, encode(v)] for k, v in node.items()]}
        raise TypeError(f"a pytree node that is not kept: {type(node)}")

    return json.dumps(encode(jax.tree.unflatten(treedef, [leaf] * treedef.num_leaves)))


def _decode_tree(text: str):
    def decode(node):
        if node == "*":
            return 0
        if node is None:
            return None
        if "n" in node:
            module, qualname = node["n"].split(":")
            if not module.startswith("bayesgmm."):
                raise ValueError(f"a NamedTuple outside bayesgmm: {module}")
            cls = importlib.import_module(module)
            for part in qualname.split("."):
                cls = getattr(cls, part)
            return cls(*[decode(c) for c in node["c"]])
        if "tuple" in node:
            return tuple(decode(c) for c in node["tuple"])
        if "list" in node:
            return [decode(c) for c in node["list"]]
        return {k: decode(v) for k, v in node["d"]}

    return jax.tree.structure(decode(json.loads(text)))


# Whether the last compilation in this thread was a hit in JAX's persistent cache.
_jax_cache = threading.local()


def _note_jax_cache_hit(event: str, **kwargs) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _jax_cache.hit = True


jax.monitoring.register_event_listener(_note_jax_cache_hit)

# The custom-call targets of host callbacks (xla_python_cpu_callback, its FFI version): they
# call Python objects of the process that compiled the program.
_HOST_CALL = "python_cpu_callback"


def _initialize_lapack() -> None:
    # JAX loads its LAPACK kernels (Cholesky, triangular solves) when it lowers a program that
    # uses them; a program loaded without lowering would call them unloaded.
    from jaxlib import lapack

    lapack._lapack.initialize()


class _Stored:
    """One program's file: the output structure (JSON) and the serialized executable."""

    def __init__(self, folder: str, name: str):
        self.name = name
        self.path = os.path.join(folder, name + _STORED_SUFFIX)

    def load(self, args: tuple):
        start = time.perf_counter()
        try:
            with open(self.path, "rb") as handle:
                blob = handle.read()
        except OSError:
            return None
        try:
            from jax.experimental import serialize_executable

            if not blob.startswith(_FORMAT):
                raise ValueError("not a program of this version")
            _initialize_lapack()
            head, _, payload = blob[len(_FORMAT) :].partition(b"\n")
            out_tree = _decode_tree(head.decode())
            in_tree = jax.tree.structure((args, {}))
            compiled = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
        except Exception as error:  # damaged: compiled again (and kept again if compiled afresh)
            _log.debug("program %s not loaded: %r", self.path, error)
            with contextlib.suppress(OSError):
                os.remove(self.path)
            return None
        with contextlib.suppress(OSError):
            os.utime(self.path)  # most recently used, for the size bound
        jax.monitoring.record_event_duration_secs(
            PROGRAM_LOAD_EVENT, time.perf_counter() - start, fun_name=self.name
        )
        return compiled

    def save(self, compiled) -> None:
        try:
            from jax.experimental import serialize_executable

            if _HOST_CALL in compiled.as_text():
                raise ValueError("the program calls back into this process")
            payload, _, out_tree = serialize_executable.serialize(compiled)
            head = _encode_tree(out_tree)
            if _decode_tree(head) != out_tree:  # e.g. a NamedTuple defined inside a function
                raise ValueError("the output structure does not survive its text")
            blob = _FORMAT + head.encode() + b"\n" + payload
        except Exception as error:  # not serializable: later processes compile it again
            _log.debug("program %s not kept: %r", self.path, error)
            return
        _write(self.path, blob)


def _write(path: str, blob: bytes) -> None:
    # Write to a file of its own and rename: another process sees the whole file or none.
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(temporary)
            raise
        _bound(folder)
    except OSError as error:  # a full or read-only disk costs later processes only time
        global _unwritable
        _unwritable = True
        _log.debug("compiled programs not kept in %s: %r", folder, error)


def _bound(folder: str) -> None:
    """Remove the least recently used programs beyond ``_MAX_STORED_BYTES``."""
    entries = []
    for entry in os.scandir(folder):
        if entry.name.endswith(_STORED_SUFFIX):
            try:
                stat = entry.stat()
            except OSError:
                continue
            entries.append((stat.st_mtime, stat.st_size, entry.path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= _MAX_STORED_BYTES:
            break
        with contextlib.suppress(OSError):
            os.remove(path)
        total -= size
