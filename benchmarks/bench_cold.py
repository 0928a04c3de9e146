"""Cold start of a first fit: bayesgmm's ``fit_em`` beside the least any JAX EM can cost.

Every figure is a fresh Python process, timed inside it from before the first import to the
fitted log-likelihood on the host (interpreter start-up excluded), on Old Faithful (272 x 2),
K = 2, full covariance, float32 (JAX's default). Rows, run alternately ``--runs`` times each:

- ``import jax``: importing JAX and starting its CPU backend, nothing else.
- floor, minimal JAX EM: a 30-line EM written here (one ``while_loop`` of Cholesky E-steps and
  closed-form M-steps from a fixed start: no input checks, no k-means++ seeding, no restarts, no
  singularity checks), jitted without LLVM optimisation (``xla_backend_optimization_level=0``,
  as bayesgmm compiles programs this small). No JAX EM can start faster on this machine.
- bayesgmm ``fit_em``, no cache: ``BAYESGMM_NO_CACHE=1``, the first process on a machine.
- bayesgmm ``fit_em``, JAX's cache only: a later process whose JAX compilation cache holds the
  program but bayesgmm's compiled programs do not (the folder removed before each run): JAX
  still traces and lowers the fit, then loads the executable instead of compiling it.
- bayesgmm ``fit_em``, a later process: both caches filled by an earlier process (a temporary
  ``XDG_CACHE_HOME``); the program is loaded whole.

    python benchmarks/bench_cold.py              # 5 runs of each
    python benchmarks/bench_cold.py --runs 9 --markdown
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from _common import clean_env, load, machine, markdown_table, run_child

JAX_ONLY = r"""
import json, time
t0 = time.perf_counter()
import jax
jax.devices()
print(json.dumps({"s": time.perf_counter() - t0}))
"""

# The floor: the least a jitted JAX EM does, on the same data, K and covariance type.
MINIMAL_EM = r"""
import json, sys, time
t0 = time.perf_counter()
import jax, jax.numpy as jnp, numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular

X = np.load(sys.argv[1]).astype(np.float32)
n, d = X.shape

def e_step(X, means, covs, weights):
    chol = jnp.linalg.cholesky(covs)
    diff = X[None] - means[:, None]
    z = solve_triangular(chol, jnp.swapaxes(diff, 1, 2), lower=True)
    log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
    log_p = (-0.5 * jnp.sum(z * z, axis=1) - log_det[:, None] - 0.5 * d * jnp.log(2 * jnp.pi)
             + jnp.log(weights)[:, None])
    log_norm = jax.nn.logsumexp(log_p, axis=0)
    return jnp.exp(log_p - log_norm), log_norm.mean()

def m_step(X, resp):
    nk = resp.sum(axis=1) + 1e-10
    means = resp @ X / nk[:, None]
    diff = X[None] - means[:, None]
    covs = jnp.einsum("kn,kni,knj->kij", resp, diff, diff) / nk[:, None, None]
    return means, covs + 1e-6 * jnp.eye(d), nk / n

def fit(X, means, covs, weights):
    def cond(s):
        return (s[0] < 1000) & (jnp.abs(s[2] - s[3]) > 1e-6)
    def body(s):
        it, params, ll, _ = s
        resp, new_ll = e_step(X, *params)
        return it + 1, m_step(X, resp), new_ll, ll
    return lax.while_loop(cond, body, (0, (means, covs, weights), jnp.inf, 0.0))

# The start in NumPy: an operation on a JAX array outside the program would compile its own.
start = (X, X[[0, n // 2]], np.stack([np.cov(X.T)] * 2).astype(np.float32),
         np.full(2, 0.5, np.float32))
program = jax.jit(fit).lower(*start).compile({"xla_backend_optimization_level": 0})
out = program(*start)
float(out[2])
print(json.dumps({"s": time.perf_counter() - t0}))
"""

BAYESGMM_FIT = r"""
import json, sys, time
import numpy as np
X = np.load(sys.argv[1])
t0 = time.perf_counter()
import bayesgmm as bg
float(bg.Mixture(2, "full").fit_em(X).log_likelihood)
print(json.dumps({"s": time.perf_counter() - t0}))
"""


def child(code: str, npy: Path, env: dict) -> float:
    return run_child(code, str(npy), env=env)["s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per row")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from bayesgmm.datasets import load_faithful

    base = clean_env(JAX_PLATFORMS="cpu")
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        npy = Path(tmp) / "faithful.npy"
        import numpy as np

        np.save(npy, load_faithful())
        # Two cache homes, each filled by a first process: in one both caches stay; in the
        # other bayesgmm's programs are removed before every run (a process that finds the
        # program in JAX's cache does not write bayesgmm's file, so it stays JAX's only).
        cached = base | {"XDG_CACHE_HOME": str(Path(tmp) / "both")}
        jax_only = base | {"XDG_CACHE_HOME": str(Path(tmp) / "jax-only")}
        child(BAYESGMM_FIT, npy, cached)
        child(BAYESGMM_FIT, npy, jax_only)
        programs = Path(tmp) / "jax-only" / "bayesgmm" / "programs"
        no_cache = base | {"BAYESGMM_NO_CACHE": "1"}
        rows = {
            "import jax (and its CPU backend)": (JAX_ONLY, no_cache, False),
            "floor: minimal JAX EM, -O0, no cache": (MINIMAL_EM, no_cache, False),
            "bayesgmm fit_em, no cache (first process)": (BAYESGMM_FIT, no_cache, False),
            "bayesgmm fit_em, JAX's cache only": (BAYESGMM_FIT, jax_only, True),
            "bayesgmm fit_em, both caches (later process)": (BAYESGMM_FIT, cached, False),
        }
        print(f"machine: {machine()}")
        print(f"load average before: {load()}")
        for _ in range(args.runs):
            for name, (code, env, drop_programs) in rows.items():
                if drop_programs:
                    shutil.rmtree(programs, ignore_errors=True)
                times.setdefault(name, []).append(child(code, npy, env))
    print(f"load average after: {load()}")
    if args.markdown:
        columns = [
            "fresh process: import, then a first fit on faithful (K=2, full, float32)",
            "median s",
            "min s",
            "max s",
        ]
        rows = [
            [name, f"{statistics.median(ts):.2f}", f"{min(ts):.2f}", f"{max(ts):.2f}"]
            for name, ts in times.items()
        ]
        print(markdown_table(columns, rows))
    else:
        for name, ts in times.items():
            print(
                f"{name:48s} median {statistics.median(ts):.2f} s"
                f"  (min {min(ts):.2f}, max {max(ts):.2f}, {len(ts)} runs)"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(times, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
