"""A process of the device and multi-process tests (tests/test_scale.py runs it).

``python scale_worker.py INPUT.npz OUTPUT.npz [PROCESS_ID N_PROCESSES PORT]``

Without a process id it runs alone (on the devices that ``XLA_FLAGS`` forces); with one it joins
``jax.distributed`` on 127.0.0.1 and takes its own (uneven) share of the rows. It fits every
case of the input file from the given starting parameters and writes the parameters and
log-likelihoods, which the test compares with the in-memory one-device fit.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)


def main(argv: list[str]) -> None:
    inp, out = argv[0], argv[1]
    pid, n_proc = 0, 1
    if len(argv) > 2:
        pid, n_proc, port = int(argv[2]), int(argv[3]), int(argv[4])
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            f"127.0.0.1:{port}",
            n_proc,
            pid,
            initialization_timeout=60,
            heartbeat_timeout_seconds=int(argv[5]) if len(argv) > 5 else 30,
        )
    import bayesgmm as bg

    data = np.load(inp)
    X, w = data["X"], data["w"]
    # Uneven shares: process p takes rows [bounds[p], bounds[p + 1]).
    bounds = data["bounds"] if n_proc > 1 else np.array([0, len(X)])
    mine = slice(int(bounds[pid]), int(bounds[pid + 1]))
    Xp, wp = X[mine], w[mine]
    if "width" in data.files and pid == 1:  # the error case: another width on process 1
        Xp = np.concatenate([Xp, Xp[:, :1]], axis=1)
    results = {}
    Xs = bg.shard_rows(Xp)
    ws = bg.shard_rows(wp)
    streamed = None
    if n_proc > 1:
        path = f"{out}.rows{pid}.npy"
        np.save(path, Xp)
        streamed = bg.shard_rows(np.load(path, mmap_mode="r"))
    if "die" in data.files and pid == 1:
        import os

        os._exit(3)  # a process that dies after joining: the others must fail, not hang
    for case in [str(c) for c in data["cases"]]:
        cov, prior, mode = case.split("/")
        mix = bg.Mixture(2, cov, prior=None if prior == "ml" else "default")
        ip = {k: data[f"{cov}_{k}"] for k in ("weights", "means", "covariances")}
        kwargs = dict(init_params=ip, max_iter=8, tol=0.0)
        if mode == "sharded":
            res = mix.fit_em(Xs, sample_weight=ws, **kwargs)
        elif mode == "stream":
            res = mix.fit_em(streamed, sample_weight=wp, chunk_size=500, **kwargs)
        else:  # the default start on sharded rows
            res = mix.fit_em(Xs, sample_weight=ws)
        for name in ("weights", "means", "covariances"):
            results[f"{case}/{name}"] = np.asarray(getattr(res, name))
        results[f"{case}/ll"] = np.array(res.log_likelihood)
        results[f"{case}/n_iter"] = np.array(res.n_iter)
        if case == "full/ml/sharded" and n_proc > 1:
            # Scoring rows spread over processes: each process gets its own rows' values
            # ("own/", compared after joining them), ``score`` the mean over all the rows.
            for what, rows in (("sharded", Xs), ("stream", streamed)):
                results[f"own/{what}/score_samples"] = np.asarray(res.score_samples(rows))
                results[f"own/{what}/predict"] = np.asarray(res.predict(rows))
                results[f"{case}/{what}/score"] = np.array(res.score(rows))
                results[f"{case}/{what}/bic"] = np.array(res.bic(rows))
    results["n_devices"] = np.array(jax.device_count())
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1:])
