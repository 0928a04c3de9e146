"""Issue 10's posterior targets: R-hat, bulk ESS and mode reports of ``sample_posterior``.

For each case (data, K, covariance type) and rng_key 0, 1, 2, with the defaults (4 chains x 1000
warm-up + 1000 draws, float64), it records the largest R-hat and the smallest bulk ESS over the
relabelled weights and means and over the permutation-invariant quantities (total
log-likelihood, mixture log-density at three fixed points), whether
``MultimodalPosteriorWarning`` was raised, and the estimated mode masses. The target: R-hat <=
1.01 and ESS >= 400, or the warning with the masses.

    python benchmarks/posterior_targets.py [--keys 0,1,2] [case ...]   # cases: see CASES

One line of JSON per run is appended to ``benchmarks/posterior_targets.jsonl`` and a table is
printed at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from _common import commit  # noqa: E402  (this folder, run as a script)
from arviz_stats.base import array_stats  # noqa: E402

import bayesgmm as bg  # noqa: E402


def _iris():
    from sklearn.datasets import load_iris

    return load_iris().data


CASES = {
    "iris-full-3": (_iris, 3, "full"),
    "faithful-full-3": (bg.datasets.load_faithful, 3, "full"),
    "faithful-tied-3": (bg.datasets.load_faithful, 3, "tied"),
    "faithful-diag-4": (bg.datasets.load_faithful, 4, "diag"),
    "galaxies-full-2": (bg.datasets.load_galaxies, 2, "full"),
    "galaxies-full-3": (bg.datasets.load_galaxies, 3, "full"),
    "galaxies-full-4": (bg.datasets.load_galaxies, 4, "full"),
}


def diagnostics(post) -> dict:
    """Largest R-hat and smallest bulk ESS over the relabelled weights/means and invariants."""
    out = {}
    for group, names in (
        ("posterior", ("weights", "means")),
        ("posterior_invariant", ("log_likelihood_total", "log_density_at")),
    ):
        for name in names:
            x = post[group][name].values
            x = np.moveaxis(x.reshape(x.shape[:2] + (-1,)), -1, 0)
            out[f"rhat_{name}"] = float(np.max(array_stats.rhat(x, chain_axis=1, draw_axis=2)))
            out[f"ess_{name}"] = float(np.min(array_stats.ess(x, chain_axis=1, draw_axis=2)))
    return out


def run(case: str, key: int) -> dict:
    load, k, ct = CASES[case]
    X = np.asarray(load(), np.float64)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", bg.MultimodalPosteriorWarning)
        post = bg.Mixture(k, ct, prior="default").sample_posterior(X, rng_key=key)
    elapsed = time.perf_counter() - t0
    multimodal = [str(w.message) for w in caught if w.category is bg.MultimodalPosteriorWarning]
    d = diagnostics(post)
    attrs = post.posterior.attrs
    return {
        "case": case,
        "key": key,
        "commit": commit(),
        "load": round(os.getloadavg()[0], 1),
        "seconds": round(elapsed, 1),
        "rhat_max": max(v for n, v in d.items() if n.startswith("rhat")),
        "ess_min": min(v for n, v in d.items() if n.startswith("ess")),
        **d,
        "warning": bool(multimodal),
        "message": multimodal[0] if multimodal else "",
        "mode_masses": [round(float(m), 3) for m in np.atleast_1d(attrs["mode_masses"])],
        "relabeled_fraction": float(post.sample_stats.attrs["relabeled_fraction"]),
        "divergences": int(post.sample_stats["diverging"].sum()),
        "basin_weighting": str(attrs.get("basin_weighting", "none")),
        "chain_weights": [
            round(float(x), 3) for x in np.atleast_1d(attrs.get("chain_weights", []))
        ],
        "configuration_fractions": [
            round(float(x), 3) for x in np.atleast_1d(attrs["configuration_fractions"])
        ],
    }


def main(argv: list[str]) -> None:
    keys = (0, 1, 2)
    if argv[:1] == ["--keys"]:
        keys = tuple(int(k) for k in argv[1].split(","))
        argv = argv[2:]
    cases = argv or list(CASES)
    path = Path(__file__).with_name("posterior_targets.jsonl")
    rows = []
    for case in cases:
        for key in keys:
            row = run(case, key)
            rows.append(row)
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps({n: row[n] for n in row if n != "message"}), flush=True)
    print(f"\n{'case':18s} key  R-hat  ESS    warn  masses            s")
    for r in rows:
        ok = (r["rhat_max"] <= 1.01 and r["ess_min"] >= 400) or r["warning"]
        print(
            f"{r['case']:18s} {r['key']:3d}  {r['rhat_max']:.3f}  {r['ess_min']:6.0f} "
            f"{'yes' if r['warning'] else 'no ':4s} {str(r['mode_masses']):18s} "
            f"{r['seconds']:5.0f} {'ok' if ok else 'MISS'}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
