"""Two processes, one fit: ``jax.distributed`` on one machine, each process with its own rows.

Each process joins JAX's multi-process runtime, takes its own share of the rows (here: half
of a data set each, of unequal sizes), lays them over its devices with ``bg.shard_rows`` and
calls ``fit_em``. The sufficient statistics are summed across the processes (gloo collectives
on CPUs, NCCL on GPUs), so every process returns the same, global fit, equal to a one-process
fit of all the rows. ``main()`` launches the two processes on 127.0.0.1 and prints process 0's
result.

On a cluster, start one process per host (or per GPU) with the same script; ``initialize()``
without arguments reads the launcher's environment:

- Slurm:   ``srun --nodes=4 --ntasks-per-node=1 python my_fit.py``
  (``jax.distributed.initialize()`` detects Slurm's variables)
- Open MPI: ``mpirun -np 4 python my_fit.py`` (detected likewise; or pass
  ``coordinator_address``, ``num_processes`` and ``process_id`` yourself)

where ``my_fit.py`` calls ``jax.distributed.initialize()``, reads the process's own rows (e.g.
``np.load(f"part-{jax.process_index()}.npy", mmap_mode="r")``, which is then streamed) and fits
``bg.Mixture(...).fit_em(bg.shard_rows(rows))``. ``heartbeat_timeout_seconds`` bounds how long
the others wait when a process dies: the runtime then ends them with a message.

    python examples/two_processes.py --out figures/
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np


def make_data(n_rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [5.0, 2.0]])
    return centres[rng.integers(0, 2, n_rows)] + rng.standard_normal((n_rows, 2))


def worker(process_id: int, port: int, n_rows: int) -> None:
    """One process: join the runtime, fit this process's rows, print the global fit."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"127.0.0.1:{port}", num_processes=2, process_id=process_id, heartbeat_timeout_seconds=30
    )
    import bayesgmm as bg

    X = make_data(n_rows)
    share = slice(0, n_rows * 2 // 3) if process_id == 0 else slice(n_rows * 2 // 3, n_rows)
    res = bg.Mixture(2, prior="default").fit_em(bg.shard_rows(X[share]))
    out = {"process": process_id, "rows": share.stop - share.start} | res.to_dict()
    print("RESULT " + json.dumps(out), flush=True)


def main(out_dir: str | Path | None = None, n_rows: int = 20_000, show: bool = False):
    """Launch two processes on this machine; returns process 0's result (a dict)."""
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", str(p), str(port), str(n_rows)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for p in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a process failed: return codes {[p.returncode for p in procs]}")
    results = [json.loads(o.split("RESULT ", 1)[1]) for o in outs]
    for r in results:
        print(f"process {r['process']} ({r['rows']} rows): log-likelihood {r['log_likelihood']}")
    same = results[0]["means"] == results[1]["means"]
    print("both processes hold the same parameters:", same)

    import bayesgmm as bg
    from bayesgmm.plotting import plot_mixture, save_figures

    X = make_data(n_rows)
    mix = bg.Mixture(2, prior="default")
    res = bg.FitResult.from_params(
        mix, results[0]["weights"], results[0]["means"], results[0]["covariances"]
    )
    figures = {"two_processes.png": plot_mixture(res, X[::5])}
    if out_dir is not None:
        print("wrote", ", ".join(save_figures(figures, out_dir)), "to", out_dir)
    elif show:
        import matplotlib.pyplot as plt

        plt.show()
    return results[0]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--rows", type=int, default=200_000)
        parser.add_argument("--out", help="folder for the figures (default: show them)")
        args = parser.parse_args()
        main(args.out, args.rows, show=args.out is None)
