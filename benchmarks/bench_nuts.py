"""Speed of ``Mixture.sample_posterior`` against NumPyro's own ``MCMC(NUTS(mix.model))``.

Old Faithful, K=2, full covariances, ``prior="default"``, float64, the defaults of
``sample_posterior`` (4 chains x (1000 warm-up + 1000 draws)). Each sampler runs in a fresh
Python process (so the first call pays for imports and compilation), twice:

- ``first``: wall time of the first call (including the internal MAP-EM reference fit);
- ``repeat``: a second call on the same data with another key, and its effective sample size
  per second.

Both wall and process CPU time are printed: on a shared machine the CPU time (all threads of the
process) is the steadier figure.

ESS is compared on permutation-invariant quantities, because NumPyro's own run is not relabelled
(its chains may switch labels): the total log-likelihood of the data and the log density ``lp``
(bulk ESS, ``arviz_stats.ess``); for bayesgmm the smallest bulk ESS over the relabelled weights
and means is printed too. The machine load (``os.getloadavg``) is printed beside the figures.

Usage::

    python benchmarks/bench_nuts.py             # both samplers
    python benchmarks/bench_nuts.py --which bayesgmm
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, os, sys, time
t_start = time.perf_counter()
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import bayesgmm as bg
from arviz_stats import ess

which, chains, warmup, samples = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
X = np.asarray(bg.datasets.load_faithful(), np.float64)
mix = bg.Mixture(2, "full", prior="default")


def invariant_ess(loglik, lp):
    return {
        "ess_loglik": float(ess(np.asarray(loglik), method="bulk")),
        "ess_lp": float(ess(np.asarray(lp), method="bulk")),
    }


def run_bayesgmm(key):
    t0, c0 = time.perf_counter(), time.process_time()
    post = mix.sample_posterior(
        X, rng_key=key, num_chains=chains, num_warmup=warmup, num_samples=samples,
        progress_bar=False,
    )
    wall = time.perf_counter() - t0
    ll = post["log_likelihood"]["obs"].values.sum(axis=-1)
    out = {"wall": wall, "cpu": time.process_time() - c0}
    out["sampling"] = float(post.attrs["sampling_time"])
    out.update(invariant_ess(ll, post["sample_stats"]["lp"].values))
    ds = post["posterior"]
    out["ess_params_min"] = float(min(
        np.min(ess(ds[name].values, method="bulk")) for name in ("weights", "means")
    ))
    return out


def run_numpyro(key):
    from numpyro.infer import MCMC, NUTS, log_likelihood

    t0, c0 = time.perf_counter(), time.process_time()
    mcmc = MCMC(
        NUTS(mix.model), num_warmup=warmup, num_samples=samples, num_chains=chains,
        chain_method="sequential", progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(key), X, extra_fields=("potential_energy",))
    draws = mcmc.get_samples(group_by_chain=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in draws.items()}
    ll = log_likelihood(mix.model, flat, X)["obs"].sum(axis=-1).reshape(chains, samples)
    lp = -mcmc.get_extra_fields(group_by_chain=True)["potential_energy"]
    out = {"wall": wall, "cpu": cpu}
    out.update(invariant_ess(ll, lp))
    return out


run = run_bayesgmm if which == "bayesgmm" else run_numpyro
first = run(0)
first["wall_including_import"] = time.perf_counter() - t_start
first["cpu_including_import"] = time.process_time()
repeat = run(1)
first["module"] = bg.__file__
print("RESULT " + json.dumps({"first": first, "repeat": repeat}))
"""


def bench(which: str, args) -> dict:
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # a cold process: no persistent cache
    env["BAYESGMM_NO_CACHE"] = "1"  # not bayesgmm's either: every program compiles
    if args.code:  # another copy of the package (e.g. an older commit, to compare)
        env["PYTHONPATH"] = os.pathsep.join([args.code, env.get("PYTHONPATH", "")])
    load_before = os.getloadavg()[0]
    cpu0 = os.times()
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            which,
            str(args.chains),
            str(args.warmup),
            str(args.samples),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        # Not the repository root: ``python -c`` puts the working directory first on sys.path,
        # which would shadow --code.
        cwd=tempfile.gettempdir(),
    )
    cpu1 = os.times()
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    res = json.loads(line[len("RESULT ") :])
    res["process_cpu_s"] = (cpu1.children_user - cpu0.children_user) + (
        cpu1.children_system - cpu0.children_system
    )
    res["load_before"] = load_before
    res["load_after"] = os.getloadavg()[0]
    return res


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--which", nargs="+", default=["bayesgmm", "numpyro"])
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--code", help="folder with the bayesgmm package to time (default: installed)")
    p.add_argument("--repeat", type=int, default=1, help="fresh processes per sampler")
    args = p.parse_args(argv)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()}")
    for which in [w for _ in range(args.repeat) for w in args.which]:
        t0 = time.perf_counter()
        res = bench(which, args)
        res["code"] = args.code or "installed"
        f, r = res["first"], res["repeat"]
        print(
            f"{which:9s} first call {f['wall']:.1f} s wall, {f['cpu']:.1f} s CPU "
            f"({f['cpu_including_import']:.1f} s CPU with imports); repeat {r['wall']:.1f} s "
            f"wall, {r['cpu']:.1f} s CPU; bulk ESS loglik {r['ess_loglik']:.0f} "
            f"-> {r['ess_loglik'] / r['cpu']:.0f} ESS per CPU-s, lp {r['ess_lp']:.0f} -> "
            f"{r['ess_lp'] / r['cpu']:.0f} per CPU-s"
            + (
                f", min ESS weights/means {r['ess_params_min']:.0f}"
                if "ess_params_min" in r
                else ""
            )
            + f"; process CPU {res['process_cpu_s']:.0f} s, load {res['load_before']:.1f}"
            f"->{res['load_after']:.1f}, {time.perf_counter() - t0:.0f} s in all",
            flush=True,
        )
        print("   ", json.dumps(res))


if __name__ == "__main__":
    main()
