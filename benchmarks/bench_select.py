"""Model selection over 36 candidates: bayesgmm's ``select`` against R's ``Mclust``.

Both libraries fit maximum likelihood for K = 1..9 and four covariance structures (bayesgmm's
full, tied, diag, spherical = mclust's VVV, EEE, VVI, VII) on the same numbers (the data go to
R as CSV with 17 significant digits) and pick the best BIC. Reported per data set and library:

- cold s: bayesgmm: a fresh Python process, ``import bayesgmm`` plus the first ``select``,
  timed inside the process (interpreter start-up excluded; "process s" includes it).
  mclust: ``system.time`` around the first ``Mclust`` call of a fresh R process; "process s" is
  the wall time of the whole ``Rscript`` (R start-up, ``library(mclust)``, reading the CSV).
- cold fit_em s: a fresh process, ``import bayesgmm`` plus one default ``fit_em`` (K=2, full).
- disk-cache cold s / disk-cache fit_em s: the cold select (the cold fit_em) again in a fresh
  process, after an earlier process filled bayesgmm's caches on disk (a temporary
  ``XDG_CACHE_HOME``: JAX's compilation cache and bayesgmm's compiled programs); the plain cold
  figures run with ``BAYESGMM_NO_CACHE=1`` and without ``JAX_COMPILATION_CACHE_DIR``.
- warm median s: the median of ``--repeats`` later calls in the same process (bayesgmm) or in
  the same R session (mclust, ``system.time`` around ``Mclust`` only).
- the chosen model, its log-likelihood and its BIC in mclust's sign (2 loglik - df log n,
  higher is better), and whether bayesgmm's choice is at least as good as mclust's: its BIC at
  least mclust's best BIC (minus twice the slack), and, at mclust's chosen model, bayesgmm's
  log-likelihood at least mclust's (minus the slack: 1e-3 in float64; in float32 the larger of
  1e-3 and 1e-6 times the log-likelihood, the resolution of a float32 sum).

bayesgmm runs in float64 (``JAX_ENABLE_X64=1``) and float32. mclust rows are skipped, with a
note, when ``Rscript`` or the R package mclust is missing (Debian: ``r-cran-mclust``). The
machine's load average is printed before and after: timings on a shared machine are noisy.

    python benchmarks/bench_select.py            # faithful and the 20,000 x 5 set
    python benchmarks/bench_select.py --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import clean_env, load, machine, markdown_table, run_child

TYPES = ("full", "tied", "diag", "spherical")
MCLUST = {"full": "VVV", "tied": "EEE", "diag": "VVI", "spherical": "VII"}
TOL = 1e-3

# Runs in a fresh interpreter: argv = data.npy, repeats. Prints one JSON line.
BAYESGMM_CHILD = r"""
import json, statistics, sys, time
import numpy as np
X = np.load(sys.argv[1])
repeats = int(sys.argv[2])
t0 = time.perf_counter()
import bayesgmm as bg
t_import = time.perf_counter() - t0
if repeats < 0:  # only a first fit_em
    t1 = time.perf_counter()
    float(bg.Mixture(2, "full").fit_em(X).log_likelihood)
    print(json.dumps({"import_s": t_import, "cold_s": t_import + time.perf_counter() - t1}))
    raise SystemExit

def run():
    sel = bg.select(X, range(1, 10), covariance_types=("full", "tied", "diag", "spherical"))
    _ = float(sel.best.log_likelihood)
    return sel

t1 = time.perf_counter()
sel = run()
t_first = time.perf_counter() - t1
warm = []
for _ in range(repeats):
    t = time.perf_counter()
    sel = run()
    warm.append(time.perf_counter() - t)
tab = sel.table
rows = [
    {"k": int(r.n_components), "type": r.covariance_type,
     "loglik": None if r.log_likelihood != r.log_likelihood else float(r.log_likelihood),
     "df": None if r.n_parameters != r.n_parameters else int(r.n_parameters)}
    for r in tab.itertuples()
]
best = sel.best
print(json.dumps({
    "import_s": t_import, "cold_s": t_import + t_first, "warm": warm,
    "dtype": str(np.asarray(best.means).dtype),
    "best": {"k": best.n_components, "type": best.covariance_type,
             "loglik": float(best.log_likelihood), "df": int(best.n_parameters)},
    "rows": rows,
}))
"""

# argv: data.csv, repeats. Prints one JSON line (jsonlite is a dependency of mclust's suggests
# on Debian; plain cat keeps the script free of it).
MCLUST_CHILD = r"""
args <- commandArgs(trailingOnly = TRUE)
suppressPackageStartupMessages(library(mclust))
X <- as.matrix(read.csv(args[1], header = FALSE))
repeats <- as.integer(args[2])
times <- numeric(0)
for (i in seq_len(max(repeats, 1))) {
  tm <- system.time(fit <- Mclust(X, G = 1:9, modelNames = c("VVV", "EEE", "VVI", "VII")))
  times <- c(times, tm[["elapsed"]])
}
bic <- fit$BIC
cells <- expand.grid(k = 1:9, m = c("VVV", "EEE", "VVI", "VII"), stringsAsFactors = FALSE)
cat(sprintf('{"times": [%s], "best": {"k": %d, "model": "%s", "loglik": %.17g, "df": %d, ',
            paste(sprintf("%.4f", times), collapse = ", "), fit$G, fit$modelName, fit$loglik,
            as.integer(fit$df)),
    sprintf('"bic": %.17g}, "bic": {%s}}\n', fit$bic,
            paste(sprintf('"%s,%d": %s', cells$m, cells$k,
                          ifelse(is.na(bic[cbind(cells$k, match(cells$m, colnames(bic)))]), "null",
                                 sprintf("%.17g", bic[cbind(cells$k, match(cells$m,
                                                                           colnames(bic)))]))),
                  collapse = ", ")), sep = "")
"""


def load_data(name: str) -> np.ndarray:
    from bayesgmm.datasets import load_faithful, make_four_clusters

    if name == "faithful":
        return load_faithful()
    if name == "four_clusters":
        return make_four_clusters()
    raise ValueError(f"unknown data set {name!r}")


def mclust_available(rscript: str) -> str | None:
    """None when Rscript and mclust work, else the reason they do not."""
    if shutil.which(rscript) is None:
        return f"{rscript} not found (install R and r-cran-mclust)"
    probe = subprocess.run(
        [rscript, "-e", "suppressPackageStartupMessages(library(mclust))"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return "the R package mclust is not installed (r-cran-mclust)"
    return None


def run_bayesgmm(npy: Path, repeats: int, dtype: str, cache_home: str | None = None) -> dict:
    """One child process; ``cache_home``: use bayesgmm's disk cache there, else none at all."""
    env = clean_env(JAX_ENABLE_X64="1" if dtype == "float64" else "0")
    if cache_home is None:
        env["BAYESGMM_NO_CACHE"] = "1"
    else:
        env["XDG_CACHE_HOME"] = cache_home
    start = time.perf_counter()
    res = run_child(BAYESGMM_CHILD, str(npy), str(repeats), env=env)
    res["process_s"] = time.perf_counter() - start
    return res


def run_mclust(rscript: str, csv: Path, repeats: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as f:
        f.write(MCLUST_CHILD)
    try:
        # A process with a single call: its wall time is mclust's cold start.
        start = time.perf_counter()
        one = subprocess.run([rscript, f.name, str(csv), "1"], capture_output=True, text=True)
        wall = time.perf_counter() - start
        if one.returncode != 0:
            raise RuntimeError(f"Rscript failed:\n{one.stderr[-3000:]}")
        res = json.loads(one.stdout.strip().splitlines()[-1])
        res["process_s"] = wall
        res["cold_s"] = res["times"][0]
        if repeats > 1:
            more = subprocess.run(
                [rscript, f.name, str(csv), str(repeats)], capture_output=True, text=True
            )
            if more.returncode != 0:
                raise RuntimeError(f"Rscript failed:\n{more.stderr[-3000:]}")
            res["warm"] = json.loads(more.stdout.strip().splitlines()[-1])["times"]
        else:
            res["warm"] = res["times"]
    finally:
        os.unlink(f.name)
    return res


def bic_mclust_sign(loglik: float, df: int, n: int) -> float:
    return 2.0 * loglik - df * np.log(n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (2 and 1)")
    parser.add_argument("--data", default="faithful,four_clusters")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--repeats", type=int, default=None, help="warm calls per process")
    parser.add_argument("--rscript", default="Rscript")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    print(f"machine: {machine()}")
    print(f"load average before: {load()}")
    print("cold times include compilation (no persistent cache unless stated)")
    no_mclust = mclust_available(args.rscript)
    if no_mclust:
        print(f"NOTE: mclust rows skipped: {no_mclust}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.data.split(","):
            X = load_data(name)
            n = X.shape[0]
            small = n <= 5000
            repeats = args.repeats or ((3 if small else 2) if args.quick else (5 if small else 3))
            npy, csv = Path(tmp) / f"{name}.npy", Path(tmp) / f"{name}.csv"
            np.save(npy, X)
            np.savetxt(csv, X, delimiter=",", fmt="%.17g")
            mc = None
            if not no_mclust:
                r_repeats = repeats if small else (1 if args.quick else 2)
                mc = run_mclust(args.rscript, csv, r_repeats)
                results.append(
                    {
                        "data": name,
                        "library": "mclust",
                        "precision": "float64",
                        "cold_s": mc["cold_s"],
                        "process_s": mc["process_s"],
                        "warm_s": statistics.median(mc["warm"]),
                        "fit_cold_s": float("nan"),
                        "disk_cold_s": float("nan"),
                        "disk_fit_s": float("nan"),
                        "model": f"{mc['best']['model']} K={mc['best']['k']}",
                        "loglik": mc["best"]["loglik"],
                        "bic": mc["best"]["bic"],
                        "note": "",
                    }
                )
            for dtype in args.dtypes.split(","):
                bg = run_bayesgmm(npy, repeats, dtype)
                bg["fit_cold_s"] = run_bayesgmm(npy, -1, dtype)["cold_s"]
                with tempfile.TemporaryDirectory() as home:
                    run_bayesgmm(npy, 0, dtype, cache_home=home)  # fills the cache
                    bg["disk_cold_s"] = run_bayesgmm(npy, 0, dtype, cache_home=home)["cold_s"]
                    run_bayesgmm(npy, -1, dtype, cache_home=home)
                    bg["disk_fit_s"] = run_bayesgmm(npy, -1, dtype, cache_home=home)["cold_s"]
                best = bg["best"]
                bic = bic_mclust_sign(best["loglik"], best["df"], n)
                note = ""
                if mc is not None:
                    mbest = mc["best"]
                    at = next(
                        r
                        for r in bg["rows"]
                        if r["k"] == mbest["k"] and MCLUST[r["type"]] == mbest["model"]
                    )
                    # float32 resolves a log-likelihood sum to about 1e-7 relative.
                    tol = TOL if dtype == "float64" else max(TOL, 1e-6 * abs(mbest["loglik"]))
                    ok_bic = bic >= mbest["bic"] - 2 * tol
                    ok_ll = at["loglik"] is not None and at["loglik"] >= mbest["loglik"] - tol
                    gap = (
                        "n/a" if at["loglik"] is None else f"{at['loglik'] - mbest['loglik']:+.4f}"
                    )
                    note = (
                        f"best BIC >= mclust's: {'yes' if ok_bic else 'NO'}; "
                        f"loglik at {mbest['model']} K={mbest['k']} vs mclust: {gap} "
                        f"({'ok' if ok_ll else 'WORSE'})"
                    )
                results.append(
                    {
                        "data": name,
                        "library": "bayesgmm",
                        "precision": dtype,
                        "cold_s": bg["cold_s"],
                        "process_s": bg["process_s"],
                        "warm_s": statistics.median(bg["warm"]),
                        "fit_cold_s": bg["fit_cold_s"],
                        "disk_cold_s": bg["disk_cold_s"],
                        "disk_fit_s": bg["disk_fit_s"],
                        "model": f"{MCLUST[best['type']]} ({best['type']}) K={best['k']}",
                        "loglik": best["loglik"],
                        "bic": bic,
                        "note": note,
                    }
                )
                print(f"  done: {name} bayesgmm {dtype}", file=sys.stderr)

    print(f"load average after: {load()}")
    columns = [
        "data", "library", "precision", "cold s", "process s", "cold fit_em s",
        "disk-cache cold s", "disk-cache fit_em s", "warm median s", "chosen", "loglik",
        "BIC (mclust sign)", "at least as good as mclust",
    ]  # fmt: skip
    rows = [
        [
            r["data"],
            r["library"],
            r["precision"],
            f"{r['cold_s']:.2f}",
            f"{r['process_s']:.2f}",
            f"{r['fit_cold_s']:.2f}",
            f"{r['disk_cold_s']:.2f}",
            f"{r['disk_fit_s']:.2f}",
            f"{r['warm_s']:.2f}",
            r["model"],
            f"{r['loglik']:.3f}",
            f"{r['bic']:.3f}",
            r["note"],
        ]  # fmt: skip
        for r in results
    ]
    print(markdown_table(columns, rows))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
