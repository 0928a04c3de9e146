"""The compiled-program caches: bounded in memory, persistent on disk (bayesgmm._compile)."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import weakref
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from test_compile import count_compiles

import bayesgmm as bg
from bayesgmm import _compile

ROOT = Path(__file__).resolve().parents[1]


def _sin_times(x, *, p):
    return jnp.sin(x) * p


def test_bounded_jit_keeps_at_most_max_programs_and_frees_the_rest(monkeypatch):
    monkeypatch.setenv(_compile.ENV_MAX_PROGRAMS, "3")
    f = _compile.bounded_jit(_sin_times, static_argnames=("p",))
    before = _compile.cache_info()
    refs = []
    for n in range(1, 9):  # eight shapes: eight programs, three kept
        x = np.linspace(0.0, 1.0, n, dtype=np.float32)
        np.testing.assert_allclose(np.asarray(f(x, p=2.0)), np.sin(x) * 2.0, rtol=1e-6)
        refs.append(weakref.ref(next(reversed(_compile._programs.values()))))
        assert _compile.cache_info().size <= 3
    gc.collect()
    assert sum(r() is not None for r in refs) <= 3
    info = _compile.cache_info()
    assert info.misses - before.misses == 8
    f(np.linspace(0.0, 1.0, 8, dtype=np.float32), p=2.0)  # the most recent one: a hit
    assert _compile.cache_info().hits == info.hits + 1
    try:  # JAX's own compilation cache, keyed weakly on each program's function, lets go too
        from jax._src.interpreters import pxla

        size = pxla._cached_compilation.cache_info().currsize
    except (ImportError, AttributeError):  # pragma: no cover - private API moved
        return
    for n in range(9, 15):
        f(np.zeros(n, np.float32), p=2.0)
    gc.collect()
    assert pxla._cached_compilation.cache_info().currsize <= size + 3


def test_fits_of_many_shapes_keep_the_cache_bounded(monkeypatch):
    monkeypatch.setenv(_compile.ENV_MAX_PROGRAMS, "4")
    rng = np.random.default_rng(0)
    mix = bg.Mixture(1, "spherical")
    for n in range(20, 29):
        X = rng.normal(size=(n, 2))
        res = mix.fit_em(X, n_init=1, max_iter=3)
        np.testing.assert_allclose(np.asarray(res.means)[0], X.mean(axis=0), rtol=1e-5, atol=1e-6)
        assert _compile.cache_info().size <= 4


def _cache_dir_in_child(env: dict) -> str:
    code = "import jax, bayesgmm._compile as c; print(jax.config.jax_compilation_cache_dir)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


def test_persistent_cache_default_opt_out_and_user_setting(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "BAYESGMM_"))}
    env |= {"XDG_CACHE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    assert _cache_dir_in_child(env) == str(tmp_path / "bayesgmm" / "jax")
    assert (tmp_path / "bayesgmm" / "jax").is_dir()
    assert _cache_dir_in_child(env | {"BAYESGMM_NO_CACHE": "1"}) == "None"
    own = str(tmp_path / "mine")
    assert _cache_dir_in_child(env | {"JAX_COMPILATION_CACHE_DIR": own}) == own


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _compile.cache_dir() == os.path.join(str(tmp_path), "bayesgmm", "jax")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _compile.cache_dir() == os.path.join(str(tmp_path), "home", ".cache", "bayesgmm", "jax")


def test_plan_batches_groups_small_searches_and_splits_large_ones():
    from bayesgmm.driver import k_bucket, plan_batches

    ks = list(range(1, 10))
    assert plan_batches(272, 2, ks, 1) == [(9, list(range(9)))]  # faithful: one padded batch
    plan = plan_batches(20000, 5, ks, 1)
    assert sorted(c for _, members in plan for c in members) == list(range(9))
    assert all(len(members) == 1 for _, members in plan)
    assert [ks[m[0]] for _, m in plan] == sorted(ks, reverse=True)  # largest first
    # Buckets k_max, k_max / 4, k_max / 16, ... rounded up: few programs, the large K unpadded.
    assert {b for b, _ in plan} == {1, 3, 9}
    for b, (c,) in plan:
        assert ks[c] <= b <= 4 * ks[c]
    assert plan_batches(20000, 5, [7], 1) == [(7, [0])]  # a single fit is never padded
    assert [k_bucket(k, 40) for k in (1, 2, 3, 4, 10, 11, 40)] == [1, 3, 3, 10, 10, 40, 40]
    assert k_bucket(13, 14) == 14 and k_bucket(1, 1) == 1


def test_split_search_keeps_each_candidate_in_its_row(x64):
    from scipy import stats

    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(0, 1, (3000, 2)), rng.normal(6, 1, (3000, 2))])
    # n * max(K) * D > 2^15: the candidates run apart (K=3 first), at K buckets 3 and 1.
    sel = bg.select(X, [3, 1], covariance_types=("spherical",))
    tab = sel.table.set_index("n_components")
    var = X.var(axis=0).mean() + 1e-6
    expected = stats.multivariate_normal(X.mean(axis=0), var * np.eye(2)).logpdf(X).sum()
    assert abs(tab.loc[1, "log_likelihood"] - expected) < 1e-8 * abs(expected)
    single = bg.Mixture(3, "spherical").fit_em(X, n_init=1, init="kmeans")
    assert abs(tab.loc[3, "log_likelihood"] - single.log_likelihood) < 1e-8 * abs(expected)


# ------------------------------------------------------------------ compiled programs on disk


def _unseen_max_iter() -> int:
    # A max_iter no earlier run compiled: the program is compiled here, not loaded from the
    # suite's shared JAX cache (bayesgmm keeps only freshly compiled executables).
    return 5000 + int.from_bytes(os.urandom(3), "little")


def _fit_arrays(res) -> list[np.ndarray]:
    return [np.asarray(a) for a in (res.weights, res.means, res.covariances)] + [
        np.asarray(res.log_likelihood)
    ]


def _fit_once(tmp_path, monkeypatch, covariance_type, **fit_args):
    """A fit whose program is compiled here and kept in tmp_path: the fit, its file, a refit."""
    monkeypatch.setenv(_compile.ENV_CACHE_DIR, str(tmp_path))
    X = np.random.default_rng(5).normal(size=(37, 3))
    mix = bg.Mixture(2, covariance_type)
    fit_args["max_iter"] = _unseen_max_iter()
    _compile.clear_programs()
    first = _fit_arrays(mix.fit_em(X, **fit_args))
    (path,) = (tmp_path / "programs").glob("*.xla")
    assert path.read_bytes().startswith(_compile._FORMAT)
    _compile.clear_programs()  # as in a later process: nothing in memory, the file on disk
    return first, path, lambda: _fit_arrays(mix.fit_em(X, **fit_args))


def test_stored_program_replaces_compiling_and_gives_the_same_fit(tmp_path, monkeypatch):
    first, path, refit = _fit_once(tmp_path, monkeypatch, "tied", n_init=2, rng_key=1)
    with count_compiles() as events:  # compiles, JAX cache loads and loads of stored programs
        refitted = refit()
    for a, b in zip(first, refitted, strict=True):
        np.testing.assert_array_equal(a, b)  # the same program: bit for bit
    assert events == [path.stem], (
        "the refit loads its program, recorded by name, and compiles nothing"
    )


def test_damaged_stored_program_is_compiled_and_written_again(tmp_path, monkeypatch):
    first, path, refit = _fit_once(tmp_path, monkeypatch, "diag", n_init=1)
    damaged = _compile._FORMAT + b"{}\nnot a module"
    path.write_bytes(damaged)
    for a, b in zip(first, refit(), strict=True):
        np.testing.assert_array_equal(a, b)
    # Removed, or written again when the program was compiled afresh (not found in JAX's cache).
    assert not path.exists() or path.read_bytes() != damaged


def test_stored_program_names_change_with_what_the_program_depends_on(monkeypatch, tmp_path):
    import jax

    monkeypatch.setenv(_compile.ENV_CACHE_DIR, str(tmp_path))
    x32 = (np.zeros(3, np.float32),)

    def store(fun, static, args, options=None):
        key = _compile._lookup_key(_compile._tag(fun, options), args, static)
        return _compile._program_store(key)

    def path(*args, **kwargs):
        return store(*args, **kwargs).path

    base = path(_sin_times, {"p": 2.0}, x32)
    assert path(_sin_times, {"p": 2.0}, x32) == base  # stable within (and across) processes
    assert path(_sin_times, {"p": 3.0}, x32) != base
    assert path(_sin_times, {"p": 2.0}, (np.zeros(4, np.float32),)) != base
    assert path(_sin_times, {"p": 2.0}, x32, {"xla_backend_optimization_level": 0}) != base
    with jax.enable_x64(True):
        assert path(_sin_times, {"p": 2.0}, x32) != base
    # Static values without a stable text (a function) and a switched-off cache keep no file.
    assert store(_sin_times, {"p": np.sin}, x32) is None
    monkeypatch.setenv(_compile.ENV_NO_CACHE, "1")
    assert store(_sin_times, {"p": 2.0}, x32) is None


def test_stored_programs_are_bounded_oldest_first(tmp_path, monkeypatch):
    for i in range(5):
        f = tmp_path / f"{i}{_compile._STORED_SUFFIX}"
        f.write_bytes(b"x" * 100)
        os.utime(f, (1000 + i, 1000 + i))
    (tmp_path / "other.txt").write_bytes(b"y" * 1000)  # not ours: left alone
    monkeypatch.setattr(_compile, "_MAX_STORED_BYTES", 250)
    _compile._bound(str(tmp_path))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [f"3{_compile._STORED_SUFFIX}", f"4{_compile._STORED_SUFFIX}", "other.txt"]


def test_unwritable_program_directory_only_costs_speed(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(_compile.ENV_CACHE_DIR, str(blocker))  # programs/ cannot be made in it
    monkeypatch.setattr(_compile, "_unwritable", False)
    X = np.random.default_rng(7).normal(size=(23, 2))
    _compile.clear_programs()
    res = bg.Mixture(1, "spherical").fit_em(X, n_init=1, max_iter=_unseen_max_iter())
    np.testing.assert_allclose(np.asarray(res.means)[0], X.mean(axis=0), rtol=1e-5, atol=1e-6)
    assert _compile._unwritable and _compile.programs_dir() is None


_CHILD = """
import numpy as np, bayesgmm as bg
from bayesgmm import _compile
saved = []
save = _compile._Stored.save
_compile._Stored.save = lambda self, *a: saved.append(1) or save(self, *a)
X = np.random.default_rng(8).normal(size=(41, 2))
res = bg.Mixture(2).fit_em(X)
print(len(saved), repr(float(res.log_likelihood)))
"""


def test_a_later_process_loads_the_program_an_earlier_one_compiled(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "BAYESGMM_"))}
    env |= {"BAYESGMM_CACHE_DIR": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)}
    env |= {"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}

    def start():
        return subprocess.Popen(
            [sys.executable, "-c", _CHILD], env=env, stdout=subprocess.PIPE, text=True
        )

    def result(proc):
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        return out.split()

    def child():
        return result(start())

    # Two first processes at once, on empty caches: each compiles (or, if the other got there
    # first, loads JAX's entry) and at least one writes the program; files appear whole.
    pair = [start(), start()]
    (saved_a, loglik_first), (saved_b, loglik_b) = [result(p) for p in pair]
    assert sorted([saved_a, saved_b]) in (["0", "1"], ["1", "1"])
    assert loglik_b == loglik_first
    # JAX's entry is named after bayesgmm's file, so both change with bayesgmm's source.
    (stored,) = (tmp_path / "programs").glob("*.xla")
    assert list((tmp_path / "bayesgmm" / "jax").glob(f"jit_program_{stored.stem}*"))
    saved_later, loglik_later = child()
    assert saved_later == "0"
    assert loglik_later == loglik_first
    # Without bayesgmm's file, JAX's own cache has the program: that executable is not kept
    # (it would be written without its kernels), and the next process still fits.
    shutil.rmtree(tmp_path / "programs")
    assert child() == ["0", loglik_first]
    assert not (tmp_path / "programs").exists()
    assert child() == ["0", loglik_first]


def test_output_structures_are_written_as_text_and_read_back():
    import jax

    from bayesgmm.em import FitStatic

    static = FitStatic(2, "full", "kmeans++", 10, 1, 8, 1)
    tree = jax.tree.structure(({"a": [1, None, (2, 3)], "b": 4}, static))
    assert _compile._decode_tree(_compile._encode_tree(tree)) == tree
    from collections import namedtuple

    import pytest

    foreign = namedtuple("Foreign", "x y")(1, 2)  # a NamedTuple from outside bayesgmm
    with pytest.raises(TypeError, match="outside bayesgmm"):
        _compile._encode_tree(jax.tree.structure(foreign))
