"""Streamed, multi-process and multi-device EM: throughput, memory and the cost of streaming.

Measures on this machine (every fit starts from the same parameters and runs ``--iters``
iterations with ``tol=0``; a pass is one read of the rows; a fit makes ``iters + 2`` passes:
the data moments, the iterations, and the last E-step that scores the result):

1. A ``--rows`` x ``--features`` float32 ``.npy`` file (10^8 x 16, 6.4 GB by default; written
   once into ``--dir``), K = ``--components`` full covariances, streamed: seconds per pass,
   rows per second, peak resident anonymous memory (RssAnon: what the fit holds, not the file
   pages the kernel caches), and the ratio to the time needed just to read the file once.
2. ``--mem-rows`` rows in memory against the same rows streamed (the cost of streaming).
3. 1 against 2 processes (``jax.distributed`` on 127.0.0.1, gloo), each streaming its half.
4. 1 against 4 forced host devices (``--xla_force_host_platform_device_count``), in memory.

Each fit runs in a subprocess of its own (its memory is its own; the device count is fixed at
JAX's start); a first, smaller fit in the same subprocess compiles the programs, so the timed
fit measures passes, not compilation.

    python benchmarks/bench_scale.py --quick
    python benchmarks/bench_scale.py --rows 10000000 --mem-rows 2000000 --iters 2
    python benchmarks/bench_scale.py                 # the full 10^8-row file (6.4 GB on disk)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_file(path: Path, n: int, d: int, k: int, seed: int = 0) -> None:
    """Rows of a mixture of K separated Gaussians, float32, written block by block."""
    if path.exists():
        arr = np.load(path, mmap_mode="r")
        if arr.shape == (n, d) and arr.dtype == np.float32:
            return
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 4.0, (k, d))
    out = np.lib.format.open_memmap(path, "w+", np.float32, (n, d))
    block = 1_000_000
    for a in range(0, n, block):
        b = min(a + block, n)
        labels = rng.integers(0, k, b - a)
        out[a:b] = centres[labels] + rng.standard_normal((b - a, d))
    out.flush()
    del out


def start_params(d: int, k: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 4.0, (k, d))
    return {
        "weights": np.full(k, 1.0 / k),
        "means": centres + rng.normal(0.0, 0.5, (k, d)),
        "covariances": np.stack([np.eye(d) * 1.5] * k),
    }


def drop_page_cache(path: Path) -> None:
    """Ask the kernel to drop the file's cached pages (written back first), so the next read
    comes from the disk: ``posix_fadvise(DONTNEED)``, a no-op where it is not available."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_once(path: Path, rows: int, chunk: int, cold: bool = False) -> float:
    """Seconds to read ``rows`` rows of the file once, chunk by chunk (no computation).

    ``cold``: the file's pages are dropped from the page cache first, so the rows come from the
    disk (the limit of a pass over a file larger than the memory); otherwise they may come from
    the page cache (the file was just written or read).
    """
    if cold:
        drop_page_cache(path)
    arr = np.load(path, mmap_mode="r")
    buf = np.empty((chunk, arr.shape[1]), arr.dtype)
    t = time.perf_counter()
    for a in range(0, rows, chunk):
        b = min(a + chunk, rows)
        buf[: b - a] = arr[a:b]
    return time.perf_counter() - t


# --------------------------------------------------------------------------- child processes


def _rss_anon_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(args) -> None:
    """One timed fit (``--child MODE``), printing a JSON line."""
    import jax

    if args.port:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{args.port}", 2, args.pid)
    import bayesgmm as bg

    arr = np.load(args.path, mmap_mode="r")
    n, d = args.rows, arr.shape[1]
    ip = start_params(d, args.components)
    mix = bg.Mixture(args.components, "full")
    kw = dict(init_params=ip, max_iter=args.iters, tol=0.0)
    if args.child == "stream":
        lo, hi = (0, n) if not args.port else ((0, n // 2) if args.pid == 0 else (n // 2, n))
        warm = arr[lo : lo + min(2 * (args.chunk or 500_000), hi - lo)]
        data = arr[lo:hi]
        if args.port:
            warm, data = bg.shard_rows(warm), bg.shard_rows(data)
        chunk = args.chunk or None  # 0: the default chunk size
        mix.fit_em(warm, chunk_size=chunk, **kw)
        run = lambda: mix.fit_em(data, chunk_size=chunk, **kw)  # noqa: E731
    elif args.child == "memory":
        X = np.array(arr[:n])
        mix.fit_em(X, **kw)  # compiles (the same shape as the timed fit)
        run = lambda: mix.fit_em(X, **kw)  # noqa: E731
    else:  # sharded in memory over the forced devices
        Xs = bg.shard_rows(np.array(arr[:n]))
        mix.fit_em(Xs, **kw)
        run = lambda: mix.fit_em(Xs, **kw)  # noqa: E731
    base, peak, running = _rss_anon_mib(), [0.0], [True]

    def watch():
        while running[0]:
            peak[0] = max(peak[0], _rss_anon_mib())
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    times = []
    for _ in range(args.repeats):  # warm repeats: the median is reported
        t = time.perf_counter()
        res = run()
        times.append(time.perf_counter() - t)
    seconds = float(np.median(times))
    running[0] = False
    out = {
        "mode": args.child,
        "rows": n,
        "seconds": seconds,
        "seconds_all": times,
        "passes": args.iters + 2,
        "n_iter": res.n_iter,
        "log_likelihood": res.log_likelihood,
        "rss_anon_before_mib": base,
        "rss_anon_peak_mib": peak[0],
        "devices": jax.device_count(),
    }
    print("RESULT " + json.dumps(out), flush=True)


def run_child(mode: str, args, env=None, extra=()) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--path", str(args.path), "--rows"]
    cmd += [str(args.child_rows), "--iters", str(args.iters), "--chunk", str(args.chunk)]
    cmd += ["--components", str(args.components), "--repeats", str(args.repeats), *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT)) | (env or {})
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def run_two_processes(args) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, __file__, "--child", "stream", "--path", str(args.path), "--rows"]
    cmd += [str(args.child_rows), "--iters", str(args.iters), "--chunk", str(args.chunk)]
    cmd += ["--components", str(args.components), "--repeats", str(args.repeats)]
    cmd += ["--port", str(port), "--pid"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(cmd + [str(p)], env=env, stdout=subprocess.PIPE, text=True)
        for p in range(2)
    ]
    outs = [p.communicate()[0] for p in procs]
    return [
        json.loads(next(x for x in o.splitlines() if x.startswith("RESULT "))[7:]) for o in outs
    ]


# --------------------------------------------------------------------------- main


def row(name: str, r: dict, read_s: float | None = None) -> str:
    per_pass = r["seconds"] / r["passes"]
    ratio = f"{per_pass / read_s:.1f}" if read_s else ""
    return (
        f"| {name} | {r['rows']:,} | {per_pass:.2f} | {r['rows'] / per_pass / 1e6:.2f} | "
        f"{r['rss_anon_peak_mib']:.0f} | {ratio} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000_000)
    p.add_argument("--mem-rows", type=int, default=10_000_000)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--components", type=int, default=16)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--chunk", type=int, default=500_000, help="rows per chunk; 0: the default")
    p.add_argument("--repeats", type=int, default=1, help="timed fits per child (median)")
    p.add_argument("--dir", type=Path, default=Path("/tmp/bayesgmm-bench"))
    p.add_argument("--quick", action="store_true", help="2*10^5 rows, 10^5 in memory, K=4")
    p.add_argument("--skip", default="", help="comma-separated: big,memory,processes,devices")
    p.add_argument("--json", type=Path)
    # child-process options
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--pid", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    if args.quick:
        args.rows, args.mem_rows, args.components, args.chunk = 200_000, 100_000, 4, 20_000
    skip = set(filter(None, args.skip.split(",")))
    args.dir.mkdir(parents=True, exist_ok=True)
    args.path = args.dir / f"rows_{args.rows}x{args.features}.npy"
    t = time.perf_counter()
    make_file(args.path, args.rows, args.features, args.components)
    print(f"# data file {args.path} ({args.path.stat().st_size / 1e9:.2f} GB), "
          f"ready in {time.perf_counter() - t:.0f} s", flush=True)  # fmt: skip
    print(f"# load: {os.getloadavg()}; cores: {os.cpu_count()}", flush=True)
    results: dict = {}
    print("| fit | rows | s/pass | Mrows/s | peak RssAnon MiB | pass / read |")
    print("|---|---|---|---|---|---|", flush=True)
    results["load_start"] = os.getloadavg()
    if "big" not in skip:
        # The file may fit in the page cache: the ratio uses the cold read (from the disk), the
        # warm read (page cache) is reported beside it. The fit starts with a cold cache too.
        warm_s = read_once(args.path, args.rows, args.chunk or 500_000)
        cold_s = read_once(args.path, args.rows, args.chunk or 500_000, cold=True)
        drop_page_cache(args.path)
        args.child_rows = args.rows
        r = results["big_stream"] = run_child("stream", args)
        results["big_read_s"] = {"cold": cold_s, "page_cache": warm_s}
        print(row(f"streamed .npy, K={args.components} full", r, cold_s), flush=True)
        gbps = args.path.stat().st_size / cold_s / 1e9
        print(f"# read once: {cold_s:.1f} s cold (disk, {gbps:.2f} GB/s), {warm_s:.1f} s from "
              "the page cache; pass / read uses the cold read", flush=True)  # fmt: skip
    args.child_rows = min(args.mem_rows, args.rows)
    if "memory" not in skip:
        m = results["memory"] = run_child("memory", args)
        s = results["memory_stream"] = run_child("stream", args)
        read_s = read_once(args.path, args.child_rows, args.chunk or 500_000)
        print(row("in memory", m), flush=True)
        print(row("same rows streamed", s, read_s), flush=True)
        print(f"# streamed / in memory: {s['seconds'] / m['seconds']:.2f}x", flush=True)
    if "processes" not in skip:
        one = results.get("memory_stream") or run_child("stream", args)
        two = results["two_processes"] = run_two_processes(args)
        slowest = max(two, key=lambda r: r["seconds"])
        print(row("streamed, 2 processes (each half)", slowest | {"rows": one["rows"]}))
        print(f"# 1 / 2 processes time: {one['seconds'] / slowest['seconds']:.2f}x; "
              f"same log-likelihood: {two[0]['log_likelihood'] == two[1]['log_likelihood']}",
              flush=True)  # fmt: skip
    if "devices" not in skip:
        flags = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
        one = results["one_device"] = run_child("sharded", args)
        four = results["four_devices"] = run_child("sharded", args, env=flags)
        print(row("in memory, shard_rows, 1 device", one))
        print(row("in memory, shard_rows, 4 forced devices", four))
        print(f"# 1 / 4 devices time: {one['seconds'] / four['seconds']:.2f}x", flush=True)
    results["load_end"] = os.getloadavg()
    print(f"# load at start {results['load_start']}, at end {results['load_end']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
