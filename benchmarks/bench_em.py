"""EM speed and memory: bayesgmm against scikit-learn (and gmmx and mclust when installed).

Every library fits the same data from the same starting parameters for exactly ``--iters``
iterations (``tol=0``), in a subprocess of its own per configuration, so that its peak resident
memory (``ru_maxrss``) is its own. Reported per configuration and library:

- ms/iter: the median over ``--repeats`` fits of (fit time / iterations). For bayesgmm and gmmx
  the first call, which compiles, is timed apart ("first call"); the repeats are the second and
  later calls, as in any loop over data sets of one shape.
- speed-up: scikit-learn's ms/iter divided by the library's.
- cpu ms/iter: the median processor time (all threads of the process) per iteration: the work
  done, which other jobs on a shared machine inflate far less than the wall-clock time.
- peak MiB: the subprocess's peak resident memory during the timed fits after the first (Linux:
  VmHWM, reset after the first call, which may compile; elsewhere ru_maxrss, which includes the
  first call); "fit MiB" the part of it above the resident memory before those fits (library
  imported, X of size "data MiB" made, first fit done): what a fit adds. The JSON output also
  has the peak of the first call.
- ll/sample: the mean log-likelihood of the returned parameters (each library's own scorer), and
  whether it agrees with bayesgmm's (1e-6 per sample in float64, 1e-3 in float32).
- float32 against float64 (bayesgmm, when both dtypes ran): the speed ratio of the two and the
  relative error of float32's log-likelihood and parameters (largest difference over the largest
  entry) against float64's, from the same start and data.
- load: the 1-minute load average before and after each configuration (the machine may be
  shared; compare ratios measured side by side rather than absolute times).

The data are centred (each column's mean subtracted in float64, before any cast), as bayesgmm's
driver centres them before a fit; every library sees the same rows. ``--markdown`` also prints
the rows of the README's table.

scikit-learn computes in the dtype of X (it keeps float32). gmmx (float32 only, full and diag
covariances) needs ``pip install gmmx``. R's mclust (float64, full covariances: model VVV, its
``em`` with ``emControl(tol = 0)`` from the same parameters; no ``reg_covar``, which moves the
log-likelihood by far less than the agreement threshold) needs ``Rscript`` and the R package
mclust (Debian: ``r-cran-mclust``); its time is R's ``system.time`` around ``em``, its memory
the peak of the R process, data included. This is a benchmark, not a test: nothing here runs in CI.

    python benchmarks/bench_em.py --quick
    python benchmarks/bench_em.py --sizes 200000x16x16 --types full --dtypes float64 --iters 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

DEFAULT_SIZES = "1000x2x3,10000x8x4,100000x8x8,200000x16x16,1000000x16x16"
QUICK_SIZES = "1000x2x3,20000x8x4"
LIBRARIES = ("sklearn", "bayesgmm", "gmmx", "mclust")
MODULES = {"sklearn": "sklearn.mixture", "bayesgmm": "bayesgmm", "gmmx": "gmmx", "mclust": "numpy"}
MCLUST_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mclust_em.R")
AGREE = {"float64": 1e-6, "float32": 1e-3}


# --------------------------------------------------------------------------- shared set-up


def make_data(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    """Centred rows from a mixture of K well-separated, correlated Gaussians (float64)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (k, d))
    mixing = rng.normal(0.0, 0.4, (k, d, d)) + np.eye(d)
    labels = rng.integers(0, k, n)
    X = rng.standard_normal((n, d))
    for j in range(k):
        rows = labels == j
        X[rows] = centres[j] + X[rows] @ mixing[j]
    return X - X.mean(axis=0)


def start_params(X: np.ndarray, k: int, covariance_type: str, seed: int = 1) -> dict:
    """Starting parameters shared by all libraries: K random rows, the data (co)variance."""
    rng = np.random.default_rng(seed)
    d = X.shape[1]
    means = X[rng.choice(len(X), k, replace=False)]
    cov = np.cov(X.T).reshape(d, d)
    covariances = {
        "full": np.broadcast_to(cov, (k, d, d)).copy(),
        "tied": cov,
        "diag": np.broadcast_to(np.diag(cov), (k, d)).copy(),
        "spherical": np.full(k, np.trace(cov) / d),
    }[covariance_type]
    return {"weights": np.full(k, 1.0 / k), "means": means, "covariances": covariances}


def precisions(covariances: np.ndarray, covariance_type: str) -> np.ndarray:
    if covariance_type in ("full", "tied"):
        return np.linalg.inv(covariances)
    return 1.0 / covariances


# --------------------------------------------------------------------------- workers


MEMORY: dict[str, float] = {}


def _time(fn, repeats: int) -> tuple[float, list[float], object]:
    t = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t
    # The first call may compile, whose memory is no part of the fit's working set.
    MEMORY["first_peak_mib"] = _peak_rss()
    MEMORY["warm_base_mib"] = _reset_peak_rss()
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    MEMORY["cpu_times"] = cpu
    return first, times, out


def run_sklearn(X, p, covariance_type, iters, repeats):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    def fit():
        gm = GaussianMixture(
            len(p["weights"]),
            covariance_type=covariance_type,
            max_iter=iters,
            tol=0.0,
            reg_covar=1e-6,
            weights_init=p["weights"],
            means_init=p["means"],
            precisions_init=precisions(p["covariances"], covariance_type),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return gm.fit(X)

    first, times, gm = _time(fit, repeats)
    return {"first": first, "times": times, "ll": float(gm.score(X)), "n_iter": int(gm.n_iter_)}


def run_bayesgmm(X, p, covariance_type, iters, repeats):
    import bayesgmm as bg

    mix = bg.Mixture(len(p["weights"]), covariance_type)

    def fit():
        return mix.fit_em(X, init_params=p, max_iter=iters, tol=0.0)

    first, times, res = _time(fit, repeats)
    return {
        "first": first,
        "times": times,
        "ll": res.log_likelihood / len(X),
        "n_iter": res.n_iter,
        "params": {
            name: np.asarray(getattr(res, name), np.float64).tolist()
            for name in ("weights", "means", "covariances")
        },
    }


def run_gmmx(X, p, covariance_type, iters, repeats):
    import jax
    import jax.numpy as jnp
    from gmmx import EMFitter, GaussianMixtureModelJax

    if covariance_type not in ("full", "diag") or X.dtype != np.float32:
        return None
    gmm = GaussianMixtureModelJax.from_squeezed(
        means=jnp.asarray(p["means"], jnp.float32),
        covariances=jnp.asarray(p["covariances"], jnp.float32),
        weights=jnp.asarray(p["weights"], jnp.float32),
        covariance_type=covariance_type,
    )
    fitter = EMFitter(max_iter=iters, tol=0.0, reg_covar=1e-6)

    def fit():
        x = jnp.asarray(X)
        result = fitter.fit(x, gmm)
        jax.block_until_ready(result.gmm.means)
        return result

    first, times, result = _time(fit, repeats)
    return {
        "first": first,
        "times": times,
        "ll": float(result.gmm.score(jnp.asarray(X))),
        "n_iter": int(result.n_iter),
    }


def run_mclust(X, p, covariance_type, iters, repeats):
    import tempfile

    if covariance_type != "full" or X.dtype != np.float64:
        return None
    n, d = X.shape
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, f"{name}.bin") for name in ("X", "w", "m", "c")]
        arrays = (X, p["weights"], p["means"], p["covariances"])
        for path, a in zip(paths, arrays, strict=True):
            np.ascontiguousarray(a, np.float64).tofile(path)
        k = len(p["weights"])
        cmd = ["Rscript", MCLUST_SCRIPT, paths[0], str(n), str(d), str(k), *paths[1:]]
        out = subprocess.run(
            [*cmd, str(iters), str(repeats)], capture_output=True, text=True, check=True
        ).stdout
    words = [line.split() for line in out.splitlines()]
    rows = [w for w in words if w[:1] in (["first"], ["repeat"])]
    times = [float(r[1]) for r in rows[1:]]
    # The R process's own peak (data included), not this one's; R's time is its CPU time.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    MEMORY.update(first_peak_mib=peak, warm_base_mib=0.0, cpu_times=times)
    return {
        "first": float(rows[0][1]),
        "times": times,
        "ll": float(rows[-1][2]) / n,
        "n_iter": int(float(rows[-1][3])),
        "peak_mib": peak,
        "base_mib": 0.0,
    }


def _status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> float:
    """Current resident memory (MiB); on Linux also resets the peak, so that the peak seen later
    is the fit's own and not the data generation's."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    now = _status_mib("VmRSS")
    return now if now is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss() -> float:
    peak = _status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args) -> None:
    """One library, one configuration: prints a JSON line."""
    os.environ["JAX_ENABLE_X64"] = "1" if args.dtype == "float64" else "0"
    __import__(MODULES[args.worker])  # imported before the baseline memory is taken
    n, d, k = args.size
    X = make_data(n, d, k).astype(args.dtype)
    p = start_params(X.astype(np.float64), k, args.type)
    run = {"sklearn": run_sklearn, "bayesgmm": run_bayesgmm, "gmmx": run_gmmx,
           "mclust": run_mclust}[args.worker]  # fmt: skip
    base = _reset_peak_rss()
    out = run(X, p, args.type, args.iters, args.repeats)
    if out is None:
        print(json.dumps(None))
        return
    out.setdefault("peak_mib", _peak_rss())
    out.setdefault("base_mib", base)
    out.update(MEMORY)
    out["data_mib"] = X.nbytes / 2**20
    print(json.dumps(out))


# --------------------------------------------------------------------------- driver


def parse_size(text: str) -> tuple[int, int, int]:
    try:
        n, d, k = (int(float(v)) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a size is NxDxK (rows x features x components), e.g. 100000x8x8; got {text!r}"
        ) from None
    return n, d, k


def available(library: str) -> bool:
    if library == "mclust":
        probe = ["Rscript", "-e", "suppressMessages(library(mclust))"]
        try:
            return subprocess.run(probe, capture_output=True).returncode == 0
        except OSError:
            return False
    probe = f"import {MODULES[library]}"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def run_worker(library, size, covariance_type, dtype, iters, repeats, timeout):
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        library,
        "--size",
        "x".join(map(str, size)),
        "--type",
        covariance_type,
        "--dtype",
        dtype,
        "--iters",
        str(iters),
        "--repeats",
        str(repeats),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=None, help=f"NxDxK,... (default {DEFAULT_SIZES})")
    parser.add_argument("--types", default="full,diag,tied", help="covariance types")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--iters", type=int, default=10, help="EM iterations per fit")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per library")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}, 5 iters")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--markdown", action="store_true", help="also print the README's rows")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=parse_size, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--type", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return []
    if args.quick:
        args.sizes = args.sizes or QUICK_SIZES
        args.iters, args.repeats = min(args.iters, 5), min(args.repeats, 2)
    sizes = [parse_size(s) for s in (args.sizes or DEFAULT_SIZES).split(",")]
    libraries = [lib for lib in args.libraries.split(",") if available(lib)]
    missing = sorted(set(args.libraries.split(",")) - set(libraries))
    print(f"# machine: {machine()}; python {platform.python_version()}")
    if missing:
        print(f"# not installed, skipped: {', '.join(missing)}")
    print(f"# {args.iters} EM iterations per fit from the same start, median of {args.repeats}")
    header = (
        f"{'n x D, K':>18} {'type':>5} {'dtype':>7} {'library':>9} {'ms/iter':>9} "
        f"{'speed-up':>8} {'cpu ms/it':>9} {'first call s':>12} {'peak MiB':>9} {'fit MiB':>8} "
        f"{'data MiB':>8} {'ll/sample':>12} agree"
    )
    print(
        "# peak MiB: resident memory of the process at its peak during the timed (warm) fits; "
        "fit MiB: that peak minus the memory before them (data and library loaded)"
    )
    print(header)
    rows, precision = [], []
    for n, d, k in sizes:
        for covariance_type in args.types.split(","):
            per_dtype = {}
            for dtype in args.dtypes.split(","):
                load_before = os.getloadavg()[0]
                results = {}
                for lib in libraries:
                    out = run_worker(
                        lib,
                        (n, d, k),
                        covariance_type,
                        dtype,
                        args.iters,
                        args.repeats,
                        args.timeout,
                    )
                    if out is not None:
                        results[lib] = out
                load = (load_before, os.getloadavg()[0])
                ref_ll = results.get("bayesgmm", {}).get("ll")
                sk = results.get("sklearn", {})
                for lib, out in results.items():
                    label = f"{n} x {d}, {k}"
                    if "error" in out:
                        print(
                            f"{label:>18} {covariance_type:>5} {dtype:>7} {lib:>9} {out['error']}"
                        )
                        continue
                    ms = 1e3 * float(np.median(out["times"])) / args.iters
                    cpu_ms = 1e3 * float(np.median(out.get("cpu_times", [np.nan]))) / args.iters
                    speedup = (
                        1e3 * float(np.median(sk["times"])) / args.iters / ms
                        if "times" in sk
                        else float("nan")
                    )
                    agree = (
                        "-"
                        if ref_ll is None or lib == "bayesgmm"
                        else ("yes" if abs(out["ll"] - ref_ll) <= AGREE[dtype] else "NO")
                    )
                    row = dict(
                        n=n,
                        d=d,
                        k=k,
                        type=covariance_type,
                        dtype=dtype,
                        library=lib,
                        ms_per_iter=ms,
                        cpu_ms_per_iter=cpu_ms,
                        speedup=speedup,
                        load=load,
                        **out,
                    )
                    rows.append(row)
                    if lib == "bayesgmm":
                        per_dtype[dtype] = row
                    print(
                        f"{label:>18} {covariance_type:>5} {dtype:>7} {lib:>9} {ms:9.2f} "
                        f"{speedup:8.1f} {cpu_ms:9.1f} {out['first']:12.2f} {out['peak_mib']:9.0f} "
                        f"{out['peak_mib'] - out['warm_base_mib']:8.0f} {out['data_mib']:8.1f} "
                        f"{out['ll']:12.6f} {agree}  load {load[0]:.1f}-{load[1]:.1f}",
                        flush=True,
                    )
            if "float64" in per_dtype and "float32" in per_dtype:
                precision.append(_compare_precisions(per_dtype["float64"], per_dtype["float32"]))
                print(_precision_line(precision[-1]), flush=True)
    if args.markdown:
        print(markdown(rows, precision))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"machine": machine(), "iters": args.iters, "rows": rows, "precision": precision},
                fh,
                indent=1,
            )
    return rows


def _compare_precisions(r64: dict, r32: dict) -> dict:
    """float32 against float64 (bayesgmm): speed ratio and relative errors."""

    def rel(a, b):
        a, b = np.asarray(a), np.asarray(b)
        return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))

    errors = {name: rel(r64["params"][name], r32["params"][name]) for name in r64["params"]}
    return {
        "size": f"{r64['n']} x {r64['d']}, {r64['k']}",
        "type": r64["type"],
        "speed_ratio": r64["ms_per_iter"] / r32["ms_per_iter"],
        "ll_rel_error": abs(r64["ll"] - r32["ll"]) / abs(r64["ll"]),
        **{f"{name}_rel_error": e for name, e in errors.items()},
    }


def _precision_line(c: dict) -> str:
    return (
        f"# {c['size']} {c['type']}: float32 {c['speed_ratio']:.2f}x faster than float64; "
        f"relative error against float64: log-likelihood {c['ll_rel_error']:.1e}, weights "
        f"{c['weights_rel_error']:.1e}, means {c['means_rel_error']:.1e}, covariances "
        f"{c['covariances_rel_error']:.1e}"
    )


def _short(n: int) -> str:
    return f"{n // 10**6}M" if n % 10**6 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def markdown(rows: list[dict], precision: list[dict]) -> str:
    """The README's table: one line per configuration, the libraries side by side."""
    lines = [
        "| n x D, K | type | dtype | scikit-learn | bayesgmm | speed-up | gmmx | mclust "
        "| bayesgmm cpu ms | bayesgmm peak MiB (data MiB) | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple, dict] = {}
    for r in rows:
        groups.setdefault((r["n"], r["d"], r["k"], r["type"], r["dtype"]), {})[r["library"]] = r
    for (n, d, k, covariance_type, dtype), libs in groups.items():
        bg, sk, gx = libs.get("bayesgmm"), libs.get("sklearn"), libs.get("gmmx")
        mc = libs.get("mclust")

        def ms(r):
            if r is None:
                return ""
            v = r["ms_per_iter"]
            return f"{v:.0f}" if v >= 100 else f"{v:.3g}"

        speedup = f"{bg['speedup']:.1f}x" if bg and sk else ""
        memory = f"{bg['peak_mib']:.0f} ({bg['data_mib']:.3g})" if bg else ""
        cpu = f"{bg['cpu_ms_per_iter']:.3g}" if bg else ""
        load = next(iter(libs.values()))["load"]
        lines.append(
            f"| {_short(n)} x {d}, {k} | {covariance_type} | {dtype} | {ms(sk)} | {ms(bg)} "
            f"| {speedup} | {ms(gx)} | {ms(mc)} | {cpu} | {memory} | {load[0]:.0f}-{load[1]:.0f} |"
        )
    lines += ["", *(_precision_line(c).lstrip("# ") for c in precision)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
