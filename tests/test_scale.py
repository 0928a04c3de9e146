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


def test_two_processes_equal_one(x64, tmp_path):
    # The four types, ML and MAP, sharded in memory; two of them streamed (chunks of 500 rows).
    cases = [f"{c}/sharded" for c in ("full/ml", "tied/map", "diag/ml", "spherical/map")]
    cases += ["full/map/stream", "spherical/ml/stream", "full/map/default"]
    inp = _inputs(tmp_path, cases)
    codes, logs = _run_processes(inp, tmp_path / "out")
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    got = [dict(np.load(tmp_path / f"out{p}.npz")) for p in range(2)]
    # Every process holds the same bits.
    for key in got[0]:
        np.testing.assert_array_equal(got[0][key], got[1][key], err_msg=key)
    X, w = _data()
    for case in cases[:-1]:
        cov, prior, _ = case.split("/")
        _assert_same(_reference(f"{cov}/{prior}", X, w), got[0], case)
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
