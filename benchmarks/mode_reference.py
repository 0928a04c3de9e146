"""Independent references for the mode masses that ``sample_posterior`` reports (issue 10).

For a case (data, K, covariance type; ``prior="default"``, float64) and an rng key it

1. runs ``Mixture.sample_posterior`` once with the defaults and records what it reports: its EM
   reference configurations (best first), the mode masses (``posterior.attrs["mode_masses"]``,
   configurations that chains move between merged into one mode), the fraction of the returned
   draws nearest each configuration (``configuration_fractions``) and the warning text. The
   references and the internal classification are captured by wrapping
   ``bayesgmm.nuts.sample_posterior`` and ``bayesgmm.modes.classify`` (read only);
2. runs the conjugate Gibbs sampler of ``tests/gibbs_reference.py`` (NumPy/SciPy, nothing of
   bayesgmm): chains from random allocations and chains from each configuration's hard
   allocation, burnt in and thinned, with the prior written out here from mclust's
   ``defaultPrior`` (checked against ``Mixture.resolve_prior``);
3. classifies every Gibbs draw, and every NUTS draw, with its own rule (``classify`` below, not
   ``bayesgmm.modes``): the mean total-variation distance between the draw's allocation
   probabilities and each configuration's, over all data rows, minimised over the K! label
   permutations; a draw goes to the nearest configuration, and counts as *away* when even the
   nearest is more than ``AWAY_TV`` off;
4. reports both sets of masses and fractions, their largest absolute difference, the Gibbs
   run's Monte-Carlo error (the standard error of the mean over its chains, and the difference
   between its random-start and configuration-start chains), and the total log-likelihood's
   mean and quantiles under both samplers (a permutation-invariant check of the whole
   distribution).

    python benchmarks/mode_reference.py [--keys 0,1,2] [--stage nuts|gibbs|all]
        [--cache DIR] [--iters N] case ...

``--stage nuts`` runs only step 1 and stores it in ``--cache`` (one ``.npz`` per case and key),
``--stage gibbs`` runs steps 2-4 from the stored file; ``all`` (the default) does both. One
line of JSON per case and key is appended to ``benchmarks/mode_reference.jsonl``.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _common import commit  # noqa: E402  (this folder, run as a script)
from gibbs_reference import gibbs_chains  # noqa: E402

# A draw whose allocation probabilities are further than this (mean total variation per row)
# from every configuration is counted as away from all of them.
AWAY_TV = 0.1
# Gibbs settings: chains from random allocations, chains from each configuration.
RANDOM_CHAINS = 8
CHAINS_PER_CONFIGURATION = 4
BURN = 1000
THIN = 10


def _iris():
    from sklearn.datasets import load_iris

    return load_iris().data


def _faithful():
    import bayesgmm as bg

    return bg.datasets.load_faithful()


def _galaxies():
    import bayesgmm as bg

    return bg.datasets.load_galaxies()


CASES = {
    "faithful-full-3": (_faithful, 3, "full"),
    "galaxies-full-4": (_galaxies, 4, "full"),
    "iris-full-3": (_iris, 3, "full"),
    "galaxies-full-2": (_galaxies, 2, "full"),
    "faithful-diag-4": (_faithful, 4, "diag"),
}


def load(case: str) -> tuple[np.ndarray, int, str]:
    loader, k, ct = CASES[case]
    X = np.asarray(loader(), np.float64)
    return (X[:, None] if X.ndim == 1 else X), k, ct


def default_prior(X: np.ndarray, k: int, covariance_type: str = "full") -> dict:
    """mclust's defaultPrior (Fraley & Raftery 2007), by hand.

    Full: the scale is the data's covariance (ddof=1) times K^(-2/D). Diag: the mean over
    features of the data's variances (ddof=1) times K^(-2/D), the same for every feature.
    """
    n, d = X.shape
    shrink = float(k) ** (-2.0 / d)
    if covariance_type == "full":
        scale = np.atleast_2d(np.cov(X, rowvar=False, ddof=1)) * shrink
    elif covariance_type == "diag":
        scale = np.full(d, np.mean(np.var(X, axis=0, ddof=1)) * shrink)
    else:
        raise ValueError(f"covariance_type must be 'full' or 'diag', got {covariance_type!r}")
    return {"alpha": 1.0, "kappa": 0.01, "mean": X.mean(0), "dof": d + 2.0, "scale": scale}


# --------------------------------------------------------------------------- step 1: NUTS


def run_nuts(case: str, key: int) -> dict:
    """One ``sample_posterior`` call with the defaults; what it reports, as arrays."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import bayesgmm as bg
    from bayesgmm import modes, nuts

    X, k, ct = load(case)
    captured = {}
    inner_sample, inner_classify = nuts.sample_posterior, modes.classify

    def sample(X_, w_, prior, references, **kw):
        captured["references"] = references
        captured["prior"] = prior
        return inner_sample(X_, w_, prior, references, **kw)

    def classify(X_rows, samples, configurations, ct_, P=None):
        out = inner_classify(X_rows, samples, configurations, ct_, P)
        captured["raw"] = samples
        captured["classes"] = out
        return out

    nuts.sample_posterior, modes.classify = sample, classify
    try:
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", bg.MultimodalPosteriorWarning)
            post = bg.Mixture(k, ct, prior="default").sample_posterior(X, rng_key=key)
        seconds = time.perf_counter() - t0
    finally:
        nuts.sample_posterior, modes.classify = inner_sample, inner_classify
    message = [str(w.message) for w in caught if w.category is bg.MultimodalPosteriorWarning]
    attrs = post.posterior.attrs
    refs = captured["references"]
    prior = captured["prior"]
    _, _, chain_mode, outside, roots, nearest = captured["classes"]
    out = {"ref_" + name: np.stack([r[name] for r in refs]) for name in ("weights", "means")} | {
        "ref_covariances": np.stack([r["covariances"] for r in refs])
    }
    out |= {"post_" + name: post.posterior[name].values for name in ("weights", "means")}
    out["post_covariances"] = post.posterior["covariances"].values
    out |= {"raw_" + name: np.asarray(a) for name, a in captured["raw"].items()}
    out |= {
        "mode_masses": np.asarray(attrs["mode_masses"], np.float64),
        "configuration_fractions": np.asarray(attrs["configuration_fractions"], np.float64),
        "mode_is_ess": np.asarray(attrs["mode_is_ess"], np.float64),
        "roots": np.asarray(roots),
        "nearest": np.asarray(nearest),
        "chain_mode": np.asarray(chain_mode),
        "outside": np.asarray(outside),
        "prior_scale": np.asarray(prior.scale, np.float64),
        "prior_mean": np.asarray(prior.mean, np.float64),
        "meta": np.array(
            json.dumps(
                {
                    "commit": commit(ROOT),
                    "seconds": round(seconds, 1),
                    "load": round(os.getloadavg()[0], 1),
                    "warning": message[0] if message else "",
                    "max_rhat": float(attrs["max_rhat"]),
                    "min_ess_bulk": float(attrs["min_ess_bulk"]),
                    "chains_outside": int(attrs["chains_outside"]),
                    "prior_alpha": float(prior.alpha),
                    "prior_kappa": float(prior.kappa),
                    "prior_dof": float(prior.dof),
                }
            )
        ),
    }
    return out


# --------------------------------------------------------------------------- classification


def log_joint(X: np.ndarray, w, mu, cov) -> np.ndarray:
    """log w_k + log N(x_i | mu_k, Sigma_k) of draws (S, K), (S, K, D), (S, K, D, D): (S, n, K).

    Diagonal covariances, (S, K, D) (as many axes as the means), are taken as diagonal matrices.
    """
    d = X.shape[1]
    cov = np.asarray(cov)
    if cov.ndim == np.ndim(mu):
        cov = cov[..., None] * np.eye(d)
    chol = np.linalg.cholesky(cov)
    r = X[None, None] - mu[:, :, None, :]  # (S, K, n, D)
    y = np.linalg.inv(chol) @ np.swapaxes(r, -1, -2)  # (S, K, D, n)
    log_det = np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), -1)  # (S, K)
    with np.errstate(divide="ignore"):
        lp = -0.5 * np.sum(y * y, axis=2) - (log_det + 0.5 * d * np.log(2 * np.pi))[..., None]
        lp = lp + np.log(w)[..., None]
    return np.swapaxes(lp, 1, 2)


def allocation(X: np.ndarray, w, mu, cov) -> np.ndarray:
    """Allocation probabilities (S, n, K) of draws (S, K), (S, K, D), (S, K, D, D) or (S, K, D)."""
    lp = log_joint(X, w, mu, cov)
    return np.exp(lp - logsumexp(lp, axis=2, keepdims=True))


def classify(P: np.ndarray, Q: np.ndarray, chunk: int = 500) -> np.ndarray:
    """Distance (S, M) of each draw to each configuration.

    ``min_sigma mean_i 0.5 sum_k |P[s, i, sigma(k)] - Q[m, i, k]|``: the mean total variation
    between the rows' allocation probabilities, under the best relabelling of the draw.
    """
    k = P.shape[-1]
    perms = np.array(list(itertools.permutations(range(k))))  # (K!, K)
    out = np.empty((P.shape[0], Q.shape[0]))
    for s in range(0, P.shape[0], chunk):
        Pp = P[s : s + chunk][:, :, perms]  # (s, n, K!, K)
        for m in range(Q.shape[0]):
            tv = 0.5 * np.abs(Pp - Q[m][None, :, None, :]).sum(-1).mean(1)  # (s, K!)
            out[s : s + chunk, m] = tv.min(1)
    return out


def kl_classify(P: np.ndarray, Q: np.ndarray, max_rows: int = 256) -> np.ndarray:
    """Distance (S, M) by the sampler's own rule, rewritten here to isolate rule from sampler.

    ``min_sigma mean_i KL(p_s[i, sigma] || Q_m[i])`` over at most ``max_rows`` evenly spread rows
    (``bayesgmm.relabel.configuration_distance`` and ``row_subset``, as documented there).
    """
    n, k = P.shape[1], P.shape[2]
    rows = np.arange(n)
    if n > max_rows:
        rows = np.unique(np.linspace(0, n - 1, max_rows).round().astype(np.intp))
    P, Q = P[:, rows], Q[:, rows]
    tiny = 1e-300
    perms = np.array(list(itertools.permutations(range(k))))
    entropy = np.sum(P * np.log(np.maximum(P, tiny)), axis=1)  # (S, K)
    out = np.empty((P.shape[0], Q.shape[0]))
    for m in range(Q.shape[0]):
        cost = entropy[:, :, None] - np.einsum("sia,ij->saj", P, np.log(np.maximum(Q[m], tiny)))
        out[:, m] = cost[:, perms, np.arange(k)].sum(-1).min(1) / len(rows)
    return out


def fractions(dist: np.ndarray) -> tuple[np.ndarray, float]:
    """Fraction of draws nearest each configuration, and the fraction away from all."""
    nearest = np.argmin(dist, axis=1)
    frac = np.bincount(nearest, minlength=dist.shape[1]) / len(nearest)
    return frac, float(np.mean(dist.min(1) > AWAY_TV))


def total_log_likelihood(X: np.ndarray, w, mu, cov) -> np.ndarray:
    """Total log-likelihood (S,) of draws (S, K), (S, K, D), (S, K, D, D) or (S, K, D)."""
    return logsumexp(log_joint(X, w, mu, cov), axis=2).sum(1)


# --------------------------------------------------------------------------- step 2: Gibbs


def run_gibbs(
    X: np.ndarray, k: int, prior: dict, Q: np.ndarray, key: int, n_iter: int, ct: str = "full"
):
    """Gibbs chains: RANDOM_CHAINS from random allocations, CHAINS_PER_CONFIGURATION from each
    configuration's hard allocation (its rows' most probable components), all advanced
    together. Returns the start labels and the draws (C, T, ...)."""
    rng = np.random.default_rng([1729, key])
    labels = ["random"] * RANDOM_CHAINS
    z0 = [rng.integers(k, size=len(X)) for _ in range(RANDOM_CHAINS)]
    for m in range(Q.shape[0]):
        labels += [f"config{m}"] * CHAINS_PER_CONFIGURATION
        z0 += [np.argmax(Q[m], axis=1)] * CHAINS_PER_CONFIGURATION
    draws = gibbs_chains(
        X, k, prior, np.stack(z0), n_iter, rng, burn=BURN, thin=THIN, covariance_type=ct
    )
    return labels, draws


def all_chains(X: np.ndarray, Q: np.ndarray, nuts_out: dict) -> dict:
    """Every NUTS chain (all runs, not only the returned ones): the mean and standard error over
    chains of the fractions by the sampler's rule and of the total log-likelihood."""
    raw = {name: nuts_out["raw_" + name] for name in ("weights", "means", "covariances")}
    r, c = raw["weights"].shape[:2]
    frac, ll = [], []
    for i in range(r):
        for j in range(c):
            w, mu, cov = (raw[name][i, j] for name in ("weights", "means", "covariances"))
            frac.append(fractions(kl_classify(allocation(X, w, mu, cov), Q))[0])
            ll.append(total_log_likelihood(X, w, mu, cov).mean())
    frac, ll = np.array(frac), np.array(ll)
    n = len(ll)
    return {
        "nuts_all_chains": n,
        "nuts_all_chains_fractions_kl_rule": [round(float(x), 3) for x in frac.mean(0)],
        "nuts_all_chains_fractions_kl_rule_se": [
            round(float(x), 3) for x in frac.std(0, ddof=1) / np.sqrt(n)
        ],
        "loglik_nuts_all_chains_mean_se": [
            round(float(ll.mean()), 2),
            round(float(ll.std(ddof=1) / np.sqrt(n)), 3),
        ],
    }


def compare(case: str, key: int, nuts_out: dict, n_iter: int) -> dict:
    X, k, ct = load(case)
    meta = json.loads(str(nuts_out["meta"]))
    prior = default_prior(X, k, ct)
    # The sampler's resolved prior (captured in step 1) must be mclust's, written out above.
    np.testing.assert_allclose(prior["scale"], nuts_out["prior_scale"], rtol=1e-12)
    np.testing.assert_allclose(prior["mean"], nuts_out["prior_mean"], rtol=1e-12)
    assert (meta["prior_alpha"], meta["prior_kappa"], meta["prior_dof"]) == (
        prior["alpha"],
        prior["kappa"],
        prior["dof"],
    )
    Q = allocation(
        X, nuts_out["ref_weights"], nuts_out["ref_means"], nuts_out["ref_covariances"]
    )  # (M, n, K)
    m_conf = Q.shape[0]
    config_dist = classify(Q, Q)

    t0 = time.perf_counter()
    labels, draws = run_gibbs(X, k, prior, Q, key, n_iter, ct)
    gibbs_seconds = time.perf_counter() - t0
    per_chain, per_chain_kl, away, ll_gibbs = [], [], [], []
    for c in range(len(labels)):
        d = {name: a[c] for name, a in draws.items()}
        P = allocation(X, d["weights"], d["means"], d["covariances"])
        f, a = fractions(classify(P, Q))
        per_chain.append(f)
        per_chain_kl.append(fractions(kl_classify(P, Q))[0])
        away.append(a)
        ll_gibbs.append(total_log_likelihood(X, d["weights"], d["means"], d["covariances"]))
    per_chain = np.array(per_chain)  # (chains, M)
    per_chain_kl = np.array(per_chain_kl)
    ref_frac = per_chain.mean(0)
    n_chains = len(per_chain)
    ref_se = per_chain.std(0, ddof=1) / np.sqrt(n_chains)
    groups = {lab: per_chain[np.array(labels) == lab].mean(0) for lab in dict.fromkeys(labels)}
    group_spread = np.max([np.abs(g - ref_frac) for g in groups.values()], axis=0)

    # The NUTS run, classified by the same rule: the returned draws and each raw chain.
    post = {name: nuts_out["post_" + name] for name in ("weights", "means", "covariances")}
    flat = {name: a.reshape((-1,) + a.shape[2:]) for name, a in post.items()}
    P_post = allocation(X, flat["weights"], flat["means"], flat["covariances"])
    nuts_frac, nuts_away = fractions(classify(P_post, Q))
    nuts_frac_kl = fractions(kl_classify(P_post, Q))[0]
    n_out = post["weights"].shape[0]
    nuts_chain = np.array([fractions(d)[0] for d in np.split(classify(P_post, Q), n_out)])
    nuts_chain_kl = np.array([fractions(d)[0] for d in np.split(kl_classify(P_post, Q), n_out)])
    raw = {name: nuts_out["raw_" + name] for name in ("weights", "means", "covariances")}
    r, c, s = raw["weights"].shape[:3]
    raw_chain_frac = []
    for i in range(r):
        for j in range(c):
            P = allocation(X, raw["weights"][i, j], raw["means"][i, j], raw["covariances"][i, j])
            raw_chain_frac.append(fractions(classify(P, Q))[0])
    raw_chain_frac = np.array(raw_chain_frac).reshape(r, c, -1)

    # Reported masses: configurations merged into modes by the sampler's `roots`; the
    # reference's mass of a mode is the sum of its configurations' fractions.
    roots = nuts_out["roots"]
    reported_mass = nuts_out["mode_masses"]
    ref_mass = np.array([ref_frac[roots == m].sum() for m in range(m_conf)])
    ref_mass_se = np.array(
        [per_chain[:, roots == m].sum(1).std(ddof=1) / np.sqrt(n_chains) for m in range(m_conf)]
    )
    ref_kl = per_chain_kl.mean(0)
    ref_mass_kl = np.array([ref_kl[roots == m].sum() for m in range(m_conf)])
    ref_mass_kl_se = np.array(
        [per_chain_kl[:, roots == m].sum(1).std(ddof=1) / np.sqrt(n_chains) for m in range(m_conf)]
    )
    reported_frac = nuts_out["configuration_fractions"]
    ll_nuts = total_log_likelihood(X, flat["weights"], flat["means"], flat["covariances"])
    ll_g = np.concatenate(ll_gibbs)
    q = (0.05, 0.5, 0.95)

    def rnd(a, n=3):
        return [round(float(x), n) for x in np.ravel(a)]

    return {
        "case": case,
        "key": key,
        "commit": meta.get("commit", "unknown"),
        "nuts_seconds": meta["seconds"],
        "nuts_load": meta["load"],
        "nuts_max_rhat": round(meta["max_rhat"], 4),
        "nuts_min_ess_bulk": round(meta["min_ess_bulk"], 1),
        "warning": meta["warning"],
        "n_configurations": int(m_conf),
        "configurations": [
            {"weights": rnd(nuts_out["ref_weights"][m]), "means": rnd(nuts_out["ref_means"][m], 4)}
            for m in range(m_conf)
        ],
        "configuration_distance_tv": [rnd(row) for row in config_dist],
        "roots": [int(x) for x in roots],
        "reported_mode_masses": rnd(reported_mass),
        "reference_mode_masses": rnd(ref_mass),
        "reference_mode_masses_se": rnd(ref_mass_se),
        "max_abs_diff_mass": round(float(np.max(np.abs(reported_mass - ref_mass))), 3),
        "reference_mode_masses_kl_rule": rnd(ref_mass_kl),
        "reference_mode_masses_kl_rule_se": rnd(ref_mass_kl_se),
        "max_abs_diff_mass_kl_rule": round(float(np.max(np.abs(reported_mass - ref_mass_kl))), 3),
        "reported_fractions": rnd(reported_frac),
        "nuts_fractions_own_rule": rnd(nuts_frac),
        "nuts_away_own_rule": round(nuts_away, 3),
        "nuts_fractions_own_rule_se": rnd(nuts_chain.std(0, ddof=1) / np.sqrt(n_out)),
        "reference_fractions": rnd(ref_frac),
        "reference_fractions_se": rnd(ref_se),
        "reference_group_spread": rnd(group_spread),
        "reference_group_fractions": {g: rnd(v) for g, v in groups.items()},
        "reference_chain_fractions_range": [rnd(per_chain.min(0)), rnd(per_chain.max(0))],
        "reference_away": round(float(np.mean(away)), 3),
        "reference_chain_fractions_kl_rule_range": [
            rnd(per_chain_kl.min(0)),
            rnd(per_chain_kl.max(0)),
        ],
        "max_abs_diff_fraction": round(float(np.max(np.abs(reported_frac - ref_frac))), 3),
        "max_abs_diff_fraction_own_rule": round(float(np.max(np.abs(nuts_frac - ref_frac))), 3),
        "nuts_fractions_kl_rule": rnd(nuts_frac_kl),
        "reported_fractions_chain_se": rnd(nuts_chain_kl.std(0, ddof=1) / np.sqrt(n_out)),
        "reference_fractions_kl_rule": rnd(per_chain_kl.mean(0)),
        "reference_fractions_kl_rule_se": rnd(per_chain_kl.std(0, ddof=1) / np.sqrt(n_chains)),
        "max_abs_diff_fraction_kl_rule": round(
            float(np.max(np.abs(reported_frac - per_chain_kl.mean(0)))), 3
        ),
        "nuts_raw_chain_fractions": [[rnd(f, 2) for f in run] for run in raw_chain_frac],
        "loglik_nuts_mean_q": [round(float(ll_nuts.mean()), 2), *rnd(np.quantile(ll_nuts, q), 2)],
        "loglik_nuts_chain_mean_se": round(
            float(np.std([x.mean() for x in np.split(ll_nuts, n_out)], ddof=1) / np.sqrt(n_out)), 3
        ),
        "loglik_gibbs_mean_q": [round(float(ll_g.mean()), 2), *rnd(np.quantile(ll_g, q), 2)],
        "loglik_gibbs_chain_mean_se": round(
            float(np.std([x.mean() for x in ll_gibbs], ddof=1) / np.sqrt(n_chains)), 3
        ),
        **all_chains(X, Q, nuts_out),
        "gibbs": {
            "chains": n_chains,
            "random_chains": RANDOM_CHAINS,
            "chains_per_configuration": CHAINS_PER_CONFIGURATION,
            "iterations": n_iter,
            "burn": BURN,
            "thin": THIN,
            "draws_per_chain": int(len(ll_gibbs[0])),
            "seconds": round(gibbs_seconds, 1),
        },
        "away_tv": AWAY_TV,
        "load": round(os.getloadavg()[0], 1),
    }


def main(argv: list[str]) -> None:
    keys, stage, cache, n_iter = (0, 1, 2), "all", None, 21000
    while argv and argv[0].startswith("--"):
        opt, val, argv = argv[0], argv[1], argv[2:]
        if opt == "--keys":
            keys = tuple(int(x) for x in val.split(","))
        elif opt == "--stage":
            stage = val
        elif opt == "--cache":
            cache = Path(val)
        elif opt == "--iters":
            n_iter = int(val)
        else:
            raise SystemExit(f"unknown option {opt}")
    if stage != "all" and cache is None:
        raise SystemExit("--stage nuts|gibbs needs --cache DIR")
    out_path = Path(__file__).with_name("mode_reference.jsonl")
    for case in argv or ["faithful-full-3", "galaxies-full-4"]:
        for key in keys:
            path = None if cache is None else cache / f"{case}-key{key}.npz"
            if stage in ("nuts", "all"):
                nuts_out = run_nuts(case, key)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.savez(path, **nuts_out)
                print(case, key, str(nuts_out["meta"]), flush=True)
            if stage == "nuts":
                continue
            if stage == "gibbs":
                with np.load(path) as f:
                    nuts_out = {name: f[name] for name in f.files}
            row = compare(case, key, nuts_out, n_iter)
            with out_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
