"""Regenerate ``tests/data/mclust_reference.json`` from R's mclust.

R is never needed at test time: the tests read the JSON. To regenerate (Debian:
``apt-get install r-base-core r-cran-mclust``)::

    python benchmarks/mclust_reference.py [--out tests/data/mclust_reference.json]

The data sets are written to temporary CSV files with 17 significant digits, so R parses
exactly the doubles numpy holds; ``benchmarks/mclust_reference.R`` fits them and this script
adds the metadata (the R calls, data checksums, bayesgmm's names of the covariance types and
the covariances in bayesgmm's shapes).

Contents of the JSON (mclust's sign conventions: ``bic = 2 loglik - df log n``, higher is
better; ``df`` is the number of free parameters):

- ``ml[dataset][model]``: one entry per G = 1..9 with ``loglik``, ``loglik_data`` (the same
  recomputed from the parameters with ``dens``), ``df``, ``bic``, ``return_code``; singular
  fits have ``null`` values and a ``reason``. Named optima also carry ``params`` (weights,
  means, sigma and bayesgmm-shaped covariances) and ``loglik_tight`` / ``params_tight`` (the
  same EM continued to a relative tolerance of 1e-13; ``loglik_tight_data`` recomputed from
  ``params_tight``).
- ``map[dataset][model]``: the same with ``prior = priorControl()``; ``loglik`` is mclust's
  log-likelihood at the MAP estimate (what its BIC uses); faithful and iris keep ``params``
  and the tight ``loglik_tight`` / ``params_tight`` of every cell.
- ``default_prior[dataset][model]``: ``defaultPrior(X, G, modelName)`` for G = 1..9.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bayesgmm.datasets import (
    load_banknote,
    load_diabetes,
    load_faithful,
    load_iris,
    make_four_clusters,
)

ROOT = Path(__file__).resolve().parents[1]
R_SCRIPT = ROOT / "benchmarks" / "mclust_reference.R"
MODELS = {"VVV": "full", "EEE": "tied", "VVI": "diag", "VII": "spherical"}

DATASETS = {
    "faithful": ("bayesgmm.datasets.load_faithful()", load_faithful),
    "iris": ("bayesgmm.datasets.load_iris()", load_iris),
    "diabetes": ("bayesgmm.datasets.load_diabetes()", load_diabetes),
    "banknote": ("bayesgmm.datasets.load_banknote()", load_banknote),
    "four_clusters": ("bayesgmm.datasets.make_four_clusters()", make_four_clusters),
}
MAP_PARAMS = ("faithful", "iris")

# The optima named in issue 9 (mclust 6.0's best fits of these models).
NAMED_OPTIMA = [
    {"dataset": "faithful", "model": "EEE", "G": 3, "issue_loglik": -1126.326},
    {"dataset": "faithful", "model": "VVV", "G": 2, "issue_loglik": -1130.264},
    {"dataset": "iris", "model": "VVV", "G": 2, "issue_loglik": -214.355},
    {"dataset": "diabetes", "model": "VVV", "G": 3, "issue_loglik": -2303.496},
    {"dataset": "banknote", "model": "EEE", "G": 3, "issue_loglik": -698.121},
]

R_CALLS = {
    "data": "X <- as.matrix(read.csv(csv, header = FALSE))  # 17 significant digits",
    "ml_grid": 'bic <- mclustBIC(X, G = 1:9, modelNames = c("VVV", "EEE", "VVI", "VII"))',
    "ml_fit": "fit <- Mclust(X, G = k, modelNames = m, x = bic)  # same as Mclust(X, G = k, "
    "modelNames = m): the grid only shares the hierarchical clustering",
    "map_grid": 'bicP <- mclustBIC(X, G = 1:9, modelNames = c("VVV", "EEE", "VVI", "VII"), '
    "prior = priorControl())",
    "map_fit": "fit <- Mclust(X, G = k, modelNames = m, x = bicP)  # the prior comes "
    "from bicP: same as Mclust(X, G = k, modelNames = m, prior = priorControl())",
    "values": "fit$loglik, fit$df, fit$bic, fit$parameters$pro, fit$parameters$mean, "
    "fit$parameters$variance$sigma; attr(bic, 'returnCodes') for NA cells",
    "loglik_data": "sum(dens(data = X, modelName = m, parameters = fit$parameters, "
    "logarithm = TRUE))",
    "tight": "em(data = X, modelName = m, parameters = fit$parameters, "
    "control = emControl(tol = c(1e-13, 1e-13)))  # with prior = priorControl() for map",
    "default_prior": "defaultPrior(X, G = k, modelName = m)",
}


def bayesgmm_covariances(sigma: np.ndarray, model: str) -> list:
    """mclust's sigma (G, d, d) in bayesgmm's shape for the covariance type of ``model``."""
    if model == "VVV":
        return sigma.tolist()
    if model == "EEE":
        return sigma[0].tolist()
    if model == "VVI":
        return np.diagonal(sigma, axis1=1, axis2=2).tolist()
    return sigma[:, 0, 0].tolist()


def decode_numbers(value):
    """Turn the R script's ``"num:<%.17g>"`` strings back into ints and floats."""
    if isinstance(value, dict):
        return {key: decode_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_numbers(item) for item in value]
    if isinstance(value, str) and value.startswith("num:"):
        text = value[4:]
        return int(text) if text.lstrip("-").isdigit() else float(text)
    return value


def add_shapes(result: dict) -> None:
    for part in ("ml", "map"):
        for by_model in result[part].values():
            for model, rows in by_model.items():
                for row in rows:
                    for key in ("params", "params_tight"):
                        if key in row:
                            # R unboxes a length-1 vector: G = 1 has a scalar weight.
                            row[key]["weights"] = np.atleast_1d(row[key]["weights"]).tolist()
                            sigma = np.asarray(row[key]["sigma"], dtype=np.float64)
                            row[key]["covariances"] = bayesgmm_covariances(sigma, model)


def checksum(X: np.ndarray) -> dict:
    return {
        "shape": list(X.shape),
        "sum": float(X.sum()),
        "first_row": X[0].tolist(),
        "sha256_float64": hashlib.sha256(np.ascontiguousarray(X, np.float64).tobytes()).hexdigest(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", default=str(ROOT / "tests" / "data" / "mclust_reference.json"))
    parser.add_argument("--rscript", default="Rscript")
    args = parser.parse_args(argv)
    if shutil.which(args.rscript) is None:
        print(f"{args.rscript} not found: install R and mclust (r-cran-mclust).", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        listing, meta = [], {}
        for name, (source, loader) in DATASETS.items():
            X = np.asarray(loader(), dtype=np.float64)
            np.savetxt(tmpdir / f"{name}.csv", X, delimiter=",", fmt="%.17g")
            listing.append({"name": name, "csv": f"{name}.csv", "params_map": name in MAP_PARAMS})
            meta[name] = {"source": source} | checksum(X)
        (tmpdir / "datasets.json").write_text(json.dumps(listing))
        (tmpdir / "optima.json").write_text(json.dumps(NAMED_OPTIMA))
        out_r = tmpdir / "out.json"
        start = time.perf_counter()
        subprocess.run([args.rscript, str(R_SCRIPT), str(tmpdir), str(out_r)], check=True)
        elapsed = time.perf_counter() - start
        result = decode_numbers(json.loads(out_r.read_text()))
    add_shapes(result)
    header = {
        "description": "Reference fits of R's mclust for bayesgmm's tests; see "
        "benchmarks/mclust_reference.py for the layout. bic = 2 loglik - df log n "
        "(mclust's sign, higher is better).",
        "generated_by": "benchmarks/mclust_reference.py + benchmarks/mclust_reference.R",
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "r_seconds": round(elapsed, 1),
        "model_names": MODELS,
        "r_calls": R_CALLS,
        "r_script": R_SCRIPT.read_text(),
        "datasets": meta,
        "named_optima": NAMED_OPTIMA,
    }
    out = header | result
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out) + "\n")
    print(f"wrote {args.out} (mclust {result['mclust_version']}, R took {elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
