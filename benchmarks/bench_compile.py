"""Compile time of the EM programs: LLVM -O1 (bayesgmm's FAST_COMPILE) against XLA's default -O2.

For the programs a first ``fit_em`` and a first ``select`` compile on Old Faithful (272 x 2) and a
select candidate of the 20,000 x 5 set, each in a fresh process without the persistent cache:
trace + lower (wall), XLA compile (wall and CPU seconds: CPU is the steadier figure on a shared
machine) and the median CPU time of a warm run. Also the cold ``import bayesgmm`` + first call of
``fit_em`` and ``select`` in fresh processes. The load average is printed: timings on a shared
machine are noisy.

    python benchmarks/bench_compile.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics

from _common import clean_env, load, run_child

# argv: json of {case, options}. Prints one JSON line.
PROGRAM_CHILD = r"""
import json, resource, sys, time
import jax, numpy as np
from bayesgmm import em
from bayesgmm.datasets import load_faithful, make_four_clusters
from bayesgmm.stats import choose_block_size
a = json.loads(sys.argv[1])
case, opts = a["case"], a["options"]
X = make_four_clusters() if case.startswith("four") else load_faithful()
dt = np.float64 if jax.config.jax_enable_x64 else np.float32
X = np.asarray(X, dt)
n, d = X.shape
if case == "faithful_fit_em":  # Mixture(3).fit_em: ten short k-means++ restarts
    active, n_init, init, cov = [3], 10, "kmeans++", "full"
elif case == "faithful_select_full":  # select's one program per covariance type
    active, n_init, init, cov = list(range(1, 10)), 1, "kmeans", "full"
else:  # four_clusters_k8: one candidate of select on 20,000 x 5
    active, n_init, init, cov = [8], 1, "kmeans", "full"
k = max(active)
settings = em.FitSettings(rng_key=np.array([0, 0], np.uint32), tol=dt(1e-6), reg_covar=dt(1e-6),
                          prior=None, init_params=None, n_active=np.array(active, np.int32))
static = em.FitStatic(n_components=k, covariance_type=cov, init=init, max_iter=1000,
                      n_init=n_init, block_size=choose_block_size(n, k, d),
                      n_candidates=len(active), short_restarts=True)
Xt, w = np.ascontiguousarray(X.T), np.ones(n, dt)
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t0 = time.perf_counter()
lowered = jax.jit(lambda *x: em._fit(*x, static=static), compiler_options=opts).lower(
    Xt, w, settings)
t1, c1 = time.perf_counter(), cpu()
program = lowered.compile()
t2, c2 = time.perf_counter(), cpu()
jax.block_until_ready(program(Xt, w, settings))
runs = []
for _ in range(5):
    s = time.process_time()
    jax.block_until_ready(program(Xt, w, settings))
    runs.append(time.process_time() - s)
print(json.dumps({"lower_s": t1 - t0, "compile_s": t2 - t1, "compile_cpu_s": c2 - c1,
                  "run_cpu_ms": 1e3 * sorted(runs)[2]}))
"""

# argv: what ("fit_em" or "select"). Prints one JSON line.
COLD_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import bayesgmm as bg
from bayesgmm.datasets import load_faithful
X = load_faithful()
if sys.argv[1] == "fit_em":
    float(bg.Mixture(3).fit_em(X).log_likelihood)
else:
    float(bg.select(X).best.log_likelihood)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def child(code: str, *args: str, x64: bool) -> dict:
    env = clean_env(BAYESGMM_NO_CACHE="1", JAX_ENABLE_X64="1" if x64 else "0")
    return run_child(code, *args, env=env)


def median_of(runs: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per figure")
    parser.add_argument("--float64", action="store_true", help="JAX_ENABLE_X64=1")
    args = parser.parse_args()
    print(f"load average before: {load()}")
    levels = {"O2 (XLA default)": None, "O1 (FAST_COMPILE)": {"xla_backend_optimization_level": 1}}
    for case in ("faithful_fit_em", "faithful_select_full", "four_clusters_k8"):
        for name, opts in levels.items():
            payload = json.dumps({"case": case, "options": opts})
            runs = [child(PROGRAM_CHILD, payload, x64=args.float64) for _ in range(args.repeats)]
            m = median_of(runs)
            print(
                f"{case:22s} {name:18s} lower {m['lower_s']:.2f} s  compile {m['compile_s']:.2f} s"
                f" (CPU {m['compile_cpu_s']:.2f} s)  warm run {m['run_cpu_ms']:.1f} ms CPU"
            )
    for what in ("fit_em", "select"):
        runs = [child(COLD_CHILD, what, x64=args.float64) for _ in range(args.repeats)]
        secs = sorted(r["seconds"] for r in runs)
        print(f"cold import + first {what} on faithful: median {statistics.median(secs):.2f} s"
              f" (runs {', '.join(f'{s:.2f}' for s in secs)})")  # fmt: skip
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
