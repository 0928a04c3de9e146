"""Streamed, sharded and multi-process EM equal the in-memory one-device fit.

The reference is the in-memory fit from the same starting parameters (itself checked against
scikit-learn in test_em_sklearn.py). Sums over chunks, devices and processes only change the
order of the additions, so parameters agree to 1e-9 (relative) and log-likelihoods to 1e-11 in
float64 after a fixed number of iterations (``tol=0``). The device and process runs happen in
subprocesses: ``XLA_FLAGS`` must be set before JAX starts, and ``jax.distributed`` joins a
process for its lifetime.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bayesgmm as bg

WORKER = Path(__file__).with_name("scale_worker.py")
ROOT = Path(__file__).resolve().parents[1]
# Up to n K D = 8192 the in-memory reference compiles without optimisations (fast).
N = 1201
# Every covariance type, ML and MAP, with sample weights; one subprocess runs them all.
CASES = ("full/ml", "full/map", "tied/map", "diag/ml", "spherical/map")


def _data():
    rng = np.random.default_rng(7)
    X = np.concatenate(
        [
            rng.normal(size=(N // 3, 3)) * [1.0, 0.5, 2.0] + [6.0, 0.0, 1.0],
            rng.normal(size=(N - N // 3, 3)) @ np.array([[1, 0.3, 0], [0, 1, 0.2], [0, 0, 1]]),
        ]
    )
    return X, rng.uniform(0.2, 3.0, N)


def _start(cov: str):
    """Starting parameters away from the optimum (so that 8 iterations move them)."""
    weights = np.array([0.4, 0.6])
    means = np.array([[5.0, 0.5, 0.0], [0.5, -0.2, 0.3]])
    shape = {"full": (2, 3, 3), "tied": (3, 3), "diag": (2, 3), "spherical": (2,)}[cov]
    if cov in ("full", "tied"):
        covariances = np.broadcast_to(np.eye(3) * 1.5 + 0.1, shape).copy()
    else:
        covariances = np.full(shape, 1.5)
    return {"weights": weights, "means": means, "covariances": covariances}


def _reference(case: str, X, w, **kwargs):
    cov, prior = case.split("/")
    mix = bg.Mixture(2, cov, prior=None if prior == "ml" else "default")
    return mix.fit_em(X, sample_weight=w, init_params=_start(cov), max_iter=8, tol=0.0, **kwargs)


def _assert_same(res, got: dict, prefix: str):
    for name in ("weights", "means", "covariances"):
        ref = np.asarray(getattr(res, name))
        np.testing.assert_allclose(
            got[f"{prefix}/{name}"], ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max()
        )
    assert abs(float(got[f"{prefix}/ll"]) - res.log_likelihood) <= 1e-11 * abs(res.log_likelihood)
    assert int(got[f"{prefix}/n_iter"]) == res.n_iter


def _inputs(tmp_path: Path, cases, **extra) -> Path:
    X, w = _data()
    arrays = {"X": X, "w": w, "cases": np.array(cases), "bounds": np.array([0, 751, N])}
    for cov in ("full", "tied", "diag", "spherical"):
        arrays |= {f"{cov}_{k}": v for k, v in _start(cov).items()}
    path = tmp_path / "inputs.npz"
    np.savez(path, **arrays, **extra)
    return path


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu") | extra
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_processes(inp: Path, out: Path, n: int = 2, heartbeat: int = 30, timeout: float = 240):
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(inp), f"{out}{p}.npz", str(p), str(n), str(port)]
            + [str(heartbeat)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for p in range(n)
    ]
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
    return [p.returncode for p in procs], logs


# --------------------------------------------------------------------------- streamed


@pytest.mark.parametrize("chunk_size", [500, N])
def test_streamed_equals_in_memory(x64, tmp_path, chunk_size):
    X, w = _data()
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    cases = CASES if chunk_size == 500 else CASES[:1]
    for case in cases:
        ref = _reference(case, X, w)
        got = _reference(case, Xm, w, chunk_size=chunk_size)
        flat = {f"c/{k}": np.asarray(getattr(got, k)) for k in ("weights", "means", "covariances")}
        flat |= {"c/ll": got.log_likelihood, "c/n_iter": got.n_iter}
        _assert_same(ref, flat, "c")


def test_streamed_programs_live_in_the_bounded_cache(x64, tmp_path):
    """The pass and per-iteration programs of a streamed fit are held by bayesgmm._compile's
    bounded cache (so a long-lived process that streams many shapes keeps its memory bounded)."""
    from bayesgmm import _compile

    X, w = _data()
    np.save(tmp_path / "X.npy", X)
    _reference("full/ml", np.load(tmp_path / "X.npy", mmap_mode="r"), w, chunk_size=500)
    modules = {key[0][0] for key in _compile._programs}
    assert {"bayesgmm.passes", "bayesgmm.stream"} <= modules, modules


@pytest.mark.slow  # subprocesses that compile every case (still run by default)
def test_four_devices_equal_one(x64, tmp_path):
    inp = _inputs(tmp_path, [f"{c}/sharded" for c in CASES])
    out = tmp_path / "out.npz"
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(inp), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = dict(np.load(out))
    assert int(got["n_devices"]) == 4
    X, w = _data()
    for case in CASES:
        _assert_same(_reference(case, X, w), got, f"{case}/sharded")


@pytest.mark.slow  # subprocesses that compile every case (still run by default)
def test_two_processes_equal_one(x64, tmp_path):
    # The four types, ML and MAP, sharded in memory; two of them streamed (chunks of 500 rows).
    cases = [f"{c}/sharded" for c in ("full/ml", "tied/map", "diag/ml", "spherical/map")]
    cases += ["full/map/stream", "spherical/ml/stream", "full/map/default"]
    inp = _inputs(tmp_path, cases)
    codes, logs = _run_processes(inp, tmp_path / "out")
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    got = [dict(np.load(tmp_path / f"out{p}.npz")) for p in range(2)]
    # Every process holds the same bits (but for the scores of its own rows).
    for key in got[0]:
        if not key.startswith("own/"):
            np.testing.assert_array_equal(got[0][key], got[1][key], err_msg=key)
    X, w = _data()
    for case in cases[:-1]:
        cov, prior, _ = case.split("/")
        _assert_same(_reference(f"{cov}/{prior}", X, w), got[0], case)
    # Scoring sharded and streamed rows spread over the processes: each process scores its own
    # rows (joined in process order they are all the rows), score and BIC are over all the rows.
    ref = _reference("full/ml", X, w)
    for what in ("sharded", "stream"):
        own = np.concatenate([g[f"own/{what}/score_samples"] for g in got])
        np.testing.assert_allclose(own, ref.score_samples(X), rtol=1e-9)
        labels = np.concatenate([g[f"own/{what}/predict"] for g in got])
        np.testing.assert_array_equal(labels, ref.predict(X))
        score = float(got[0][f"full/ml/sharded/{what}/score"])
        assert abs(score - ref.score(X)) <= 1e-9 * abs(ref.score(X))
        bic = float(got[0][f"full/ml/sharded/{what}/bic"])
        assert abs(bic - ref.bic(X)) <= 1e-9 * abs(ref.bic(X))
    # The default start (k-means on a sample drawn across the processes) reaches the in-memory
    # optimum on well-separated data.
    ref = bg.Mixture(2, "full", prior="default").fit_em(X, sample_weight=w)
    assert abs(float(got[0]["full/map/default/ll"]) - ref.log_likelihood) <= 1e-6 * N


def test_different_widths_across_processes(x64, tmp_path):
    inp = _inputs(tmp_path, ["full/ml/sharded"], width=np.array(1))
    codes, logs = _run_processes(inp, tmp_path / "out")
    assert codes[0] != 0 and codes[1] != 0
    for log in logs:
        assert "same number of features on every process" in log
        assert "process 0: 3, process 1: 4" in log


def test_dying_process_fails_the_others(x64, tmp_path):
    inp = _inputs(tmp_path, ["full/ml/sharded"], die=np.array(1))
    codes, logs = _run_processes(inp, tmp_path / "out", heartbeat=3, timeout=120)
    assert codes[1] == 3
    assert codes[0] != 0  # ended by the runtime, with its message, instead of hanging
    assert "another task died" in logs[0] or "heartbeat" in logs[0], logs[0][-2000:]


# --------------------------------------------------------------------------- sources and errors


class _Changing:
    """An array-like whose row count (or dtype) changes after ``after`` reads."""

    def __init__(self, X, after: int, what: str):
        self.X, self.after, self.what, self.reads = X, after, what, 0

    @property
    def shape(self):
        grown = self.what == "rows" and self.reads >= self.after
        return (self.X.shape[0] + 10 * grown, self.X.shape[1])

    @property
    def dtype(self):
        return np.dtype(np.float32 if self.what == "dtype" and self.reads >= self.after else "f8")

    def __getitem__(self, item):
        self.reads += 1
        return self.X[item]


def test_array_stores_stream_like_memory(x64, tmp_path):
    """h5py, zarr and dask sources give the in-memory fit (the full/ml case, chunks of 500)."""
    h5py = pytest.importorskip("h5py")
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    X, w = _data()
    ref = _reference("full/ml", X, w)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["X"] = X
        f["w"] = w
    z = zarr.create_array(tmp_path / "x.zarr", shape=X.shape, chunks=(400, 3), dtype="f8")
    z[:] = X
    with h5py.File(tmp_path / "x.h5", "r") as f:
        for source in (f["X"], z, da.from_array(X, chunks=(300, 3))):
            got = _reference("full/ml", source, w, chunk_size=500)
            np.testing.assert_allclose(got.means, ref.means, rtol=1e-9)
            assert abs(got.log_likelihood - ref.log_likelihood) <= 1e-11 * abs(ref.log_likelihood)
        # The weights may be a source too.
        got = _reference("full/ml", f["X"], f["w"], chunk_size=500)
        np.testing.assert_allclose(got.covariances, ref.covariances, rtol=1e-9)
        # Scoring in chunks equals scoring in memory.
        np.testing.assert_allclose(ref.score_samples(f["X"]), ref.score_samples(X), rtol=1e-12)
        np.testing.assert_array_equal(ref.predict(z), ref.predict(X))
        assert abs(ref.score(f["X"]) - ref.score(X)) <= 1e-12 * abs(ref.score(X))


def test_streamed_errors(x64, tmp_path):
    X, w = _data()
    bad = X.copy()
    bad[777, 1] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    mix = bg.Mixture(2)
    with pytest.raises(ValueError, match="NaN or infinite values in rows 500 to 999"):
        mix.fit_em(np.load(tmp_path / "bad.npy", mmap_mode="r"), chunk_size=500)
    bad[777, 1] = 1e200  # finite, but its square is not: overflow named with its rows
    np.save(tmp_path / "huge.npy", bad)
    with pytest.raises(ValueError, match="X overflows float64: .* rows 500 to 999 hold"):
        mix.fit_em(np.load(tmp_path / "huge.npy", mmap_mode="r"), chunk_size=500)
    for what in ("rows", "dtype"):
        with pytest.raises(ValueError, match="X changed during the fit"):
            mix.fit_em(_Changing(X, 5, what), chunk_size=500, max_iter=5)
    for size in (0, -3):
        with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
            mix.fit_em(np.load(tmp_path / "bad.npy", mmap_mode="r"), chunk_size=size)
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        mix.fit_em(X, sample_weight=np.ones(N - 1), chunk_size=500)


def _rss_anon_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    pytest.skip("RssAnon needs Linux's /proc")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RssAnon needs Linux's /proc")
def test_streamed_memory_is_bounded_by_the_chunk(x64, tmp_path):
    """A 96 MiB memory map streams in chunks of 0.6 MiB with far less resident memory."""
    import threading

    rng = np.random.default_rng(0)
    n, chunk = 3_000_000, 20_000
    big = np.lib.format.open_memmap(tmp_path / "big.npy", "w+", np.float64, (n, 4))
    for a in range(0, n, 500_000):
        big[a : a + 500_000] = rng.normal(size=(500_000, 4)) + (a // 500_000) % 2 * 4
    big.flush()
    del big
    start = {
        "weights": np.array([0.5, 0.5]),
        "means": np.array([np.zeros(4), np.full(4, 4.0)]),
        "covariances": np.stack([np.eye(4)] * 2),
    }
    mix = bg.Mixture(2)
    small = np.load(tmp_path / "big.npy", mmap_mode="r")[: 2 * chunk]
    mix.fit_em(small, chunk_size=chunk, init_params=start, max_iter=2, tol=0)  # compiles
    base, peak, running = _rss_anon_mib(), [0.0], [True]

    def watch():
        while running[0]:
            peak[0] = max(peak[0], _rss_anon_mib())

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        source = np.load(tmp_path / "big.npy", mmap_mode="r")
        res = mix.fit_em(source, chunk_size=chunk, init_params=start, max_iter=2, tol=0)
    finally:
        running[0] = False
        thread.join()
    assert res.n_iter == 2
    # The budget: a few chunks (0.6 MiB each) plus the runtime's slack, against 92 MiB of data.
    assert peak[0] - base < 24, (base, peak[0])


def test_default_start_from_a_sample_reaches_the_in_memory_optimum(x64, tmp_path, monkeypatch):
    """k-means++ on a sample of 300 rows, Lloyd's iterations as passes, then EM: the optimum of
    the in-memory fit (well-separated data), within 1e-6 per row."""
    from bayesgmm import stream

    monkeypatch.setattr(stream, "SAMPLE_ROWS", 300)
    X, w = _data()
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    mix = bg.Mixture(2, "full")  # MAP: the two-process test
    ref = mix.fit_em(X, sample_weight=w)
    got = mix.fit_em(Xm, sample_weight=w, chunk_size=500)
    assert got.converged
    assert abs(got.log_likelihood - ref.log_likelihood) <= 1e-6 * N
    order = np.argsort(np.asarray(got.means)[:, 0]), np.argsort(np.asarray(ref.means)[:, 0])
    np.testing.assert_allclose(
        np.asarray(got.means)[order[0]], np.asarray(ref.means)[order[1]], atol=1e-4
    )


def test_select_on_a_source_shares_the_passes(x64, tmp_path):
    X, w = _data()
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    ref = bg.select(X, [1, 2], ("diag",), prior="default", sample_weight=w)
    got = bg.select(Xm, [1, 2], ("diag",), prior="default", sample_weight=w, chunk_size=500)
    np.testing.assert_allclose(got.table["bic"], ref.table["bic"], rtol=1e-9)
    assert got.best.n_components == ref.best.n_components == 2


# --------------------------------------------------------------------------- command line input


def test_cli_reads_npy_streamed_and_parquet(tmp_path, monkeypatch, capsys):
    from bayesgmm.cli.console import CLIError
    from bayesgmm.cli.read import read_data
    from bayesgmm.sources import is_source

    X, _ = _data()
    np.save(tmp_path / "x.npy", X)
    got, names = read_data(tmp_path / "x.npy", None)
    assert is_source(got) and names == ["x0", "x1", "x2"]  # a memory map: the fit streams it
    np.testing.assert_array_equal(got, X)
    picked, names = read_data(tmp_path / "x.npy", "x2,x0")
    np.testing.assert_array_equal(picked, X[:, [2, 0]])
    assert "memory-mapped" in capsys.readouterr().out
    np.save(tmp_path / "bad.npy", np.array(["a", "b"]))
    with pytest.raises(CLIError, match="needs numbers"):
        read_data(tmp_path / "bad.npy", None)
    with pytest.raises(CLIError, match="no such file"):
        read_data(tmp_path / "missing.npy", None)

    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(label="z")
    frame.to_parquet(tmp_path / "x.parquet")
    got, names = read_data(tmp_path / "x.parquet", None)
    assert names == ["a", "b", "c"] and "left out the non-numeric label" in capsys.readouterr().out
    np.testing.assert_array_equal(got, X)
    frame.assign(b=np.where(np.arange(N) == 5, np.nan, X[:, 1])).to_parquet(tmp_path / "n.parquet")
    with pytest.raises(CLIError, match="missing value"):
        read_data(tmp_path / "n.parquet", None)
    monkeypatch.setitem(__import__("sys").modules, "pyarrow.parquet", None)
    with pytest.raises(CLIError, match=r"bayesgmm\[io\]"):
        read_data(tmp_path / "x.parquet", None)


def test_default_chunks_are_balanced():
    """Equal default chunks, as many as a multiple of the workers, none over CHUNK_BYTES; a
    given chunk_size is kept (error messages name its rows)."""
    from bayesgmm.sources import CHUNK_BYTES, choose_chunk_size, n_chunks

    for n, d, workers in [(10**7, 16, 2), (10**6, 16, 2), (1201, 3, 2), (987_654, 5, 3)]:
        size = choose_chunk_size(None, n, d, 4, workers)
        count = n_chunks(n, size)
        assert count % workers == 0 or count == n
        assert size * (d + 1) * 4 <= CHUNK_BYTES
        assert count * size - n < count  # the last chunk is at most count rows short
    assert choose_chunk_size(500, 1201, 3, 8, 2) == 500


def test_streamed_moments_of_offset_rows_keep_their_digits(tmp_path):
    """Float64 rows near 1e8 streamed in float32: centred on the host before the cast, their
    moments keep float32's relative accuracy of the spread (the cast alone leaves steps of 8)."""
    from bayesgmm import passes, stream

    rng = np.random.default_rng(3)
    X = 1e8 + rng.normal(size=(3000, 3)) * [1.0, 2.0, 0.5]
    np.save(tmp_path / "X.npy", X)
    rows = passes.rows_of(np.load(tmp_path / "X.npy", mmap_mode="r"), None, 1000, np.float32)
    moments, _ = stream.data_moments(rows)
    np.testing.assert_allclose(moments.mean, X.mean(axis=0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(moments.covariance, np.cov(X.T, bias=True), rtol=0, atol=1e-5)


@pytest.mark.parametrize("covariance_type,prior", [("full", "default"), ("diag", None)])
def test_streamed_fit_of_rows_near_1e8_in_float32(f32, tmp_path, covariance_type, prior):
    """Float64 rows near 1e8 fitted in float32: the streamed fit is centred and scaled like the
    in-memory one (bayesgmm._transform) and equals it to the float32 tolerances of the in-memory
    equivariance tests (tests/test_trust.py: means to 1e-3 of a standard deviation, covariances
    and scores to 1e-3 and 1e-4 relative). Cast to float32 first, the rows would keep steps of 8."""
    rng = np.random.default_rng(1)
    X = 1e8 + np.concatenate(
        [rng.normal([0.71, -1.0], 0.2, (150, 2)), rng.normal([3.19, 0.5], 0.3, (150, 2))]
    )
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    cov = {"full": np.stack([np.eye(2) * 0.5] * 2), "diag": np.full((2, 2), 0.5)}[covariance_type]
    start = {
        "weights": np.array([0.5, 0.5]),
        "means": 1e8 + np.array([[0.5, -0.8], [3.0, 0.3]]),
        "covariances": cov,
    }
    mix = bg.Mixture(2, covariance_type, prior=prior)
    kw = dict(init_params=start, max_iter=20, tol=0.0)
    ref = mix.fit_em(X, **kw)
    got = mix.fit_em(Xm, chunk_size=128, **kw)  # 3 chunks, the last one short
    np.testing.assert_allclose(got.weights, ref.weights, atol=1e-4)
    np.testing.assert_allclose(got.means - 1e8, ref.means - 1e8, atol=1e-3)
    np.testing.assert_allclose(got.covariances, ref.covariances, rtol=1e-3)
    assert abs(got.log_likelihood - ref.log_likelihood) <= 1e-4 * abs(ref.log_likelihood)
    # Both recover the clusters (not merely agree).
    np.testing.assert_allclose(np.sort(got.means[:, 0] - 1e8), [0.71, 3.19], atol=0.06)
    # Scoring the source in chunks keeps its digits too.
    np.testing.assert_allclose(got.score_samples(Xm), ref.score_samples(X), rtol=1e-4, atol=1e-4)
