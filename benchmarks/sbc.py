"""Simulation-based calibration (Talts et al. 2018) of ``Mixture.sample_posterior``.

For each replicate: draw parameters theta* from an explicit proper prior (SciPy, independently of
the package), simulate ``n`` rows from the mixture theta*, sample the posterior, thin it to ``L``
draws and record, for each quantity f, the rank of f(theta*) among the f(theta_l). If the sampler
is right the ranks are uniform on 0..L. Quantities:

- permutation-invariant: ``loglik`` (total log-likelihood of the simulated data) and
  ``logdens_j`` (log mixture density at fixed points: the prior mean moved by -1, 0, +1 prior
  standard deviations along the first coordinate);
- relabelled by sorting the components on their first mean coordinate (a permutation-invariant
  function of theta too): ``weight_k``, ``mean_k`` (first coordinate), ``var_k`` (first variance).

Samplers: ``nuts`` (the package) and ``gibbs`` (the independent conjugate Gibbs sampler of
``tests/gibbs_reference.py``). Uniformity: Pearson's chi-square on ``--bins`` equal bins of the
ranks and a Kolmogorov-Smirnov test on (rank + U) / (L + 1), U uniform on [0, 1) (exactly uniform
under calibration). Writes ``ranks.csv``, ``uniformity.csv`` and one histogram PNG per setting and
sampler into ``--out``.

Usage::

    python benchmarks/sbc.py --replicates 200 --samplers nuts gibbs --out docs/sbc
    python benchmarks/sbc.py --settings K2-D1-full --replicates 600 --samplers nuts
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats
from scipy.special import logsumexp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from gibbs_reference import (  # noqa: E402
    draw_prior,
    gibbs_sample,
    log_component_densities,
    prior_dict,
    simulate,
)


@dataclass(frozen=True)
class Setting:
    n_components: int
    n_features: int
    covariance_type: str
    n_rows: int = 40

    weak: bool = False

    @property
    def name(self) -> str:
        weak = "-weak" if self.weak else ""
        return f"K{self.n_components}-D{self.n_features}-{self.covariance_type}{weak}"

    def prior(self) -> dict:
        """The explicit proper prior: alpha = 1, kappa = 0.1, m0 = 0, nu = D + 3, Psi = 2 I.

        E[Sigma] = Psi / (nu - D - 1) = I; the means spread sqrt(10) prior covariance scales
        around 0, so components range from well separated to overlapping. The ``-weak``
        settings use the package's default kappa = 0.01 and nu = D + 2 with m0 = 0, Psi = I
        (heavier-tailed covariances, means spread over 10 covariance scales).
        """
        d = self.n_features
        psi, kappa, nu = (1.0, 0.01, d + 2.0) if self.weak else (2.0, 0.1, d + 3.0)
        scale = psi * np.eye(d) if self.covariance_type == "full" else np.full(d, psi)
        return prior_dict(1.0, kappa, np.zeros(d), nu, scale)


SETTINGS = {
    s.name: s
    for s in [Setting(k, d, ct) for k in (2, 3) for d in (1, 2) for ct in ("full", "diag")]
    + [Setting(2, 1, "full", weak=True), Setting(2, 2, "full", weak=True)]
}


# --------------------------------------------------------------------------- quantities


def fixed_points(setting: Setting) -> np.ndarray:
    """Points where the mixture density is tracked: shape (3, D)."""
    pts = np.zeros((3, setting.n_features))
    pts[:, 0] = [-1.0, 0.0, 1.0]  # prior mean 0, prior sd of a row about 1
    return pts


def quantities(X: np.ndarray, params: dict, setting: Setting) -> dict[str, float]:
    """The tracked functions of one parameter set (all invariant to relabelling)."""
    ct = setting.covariance_type
    out = {"loglik": float(np.sum(logsumexp(log_component_densities(X, params, ct), axis=1)))}
    dens = logsumexp(log_component_densities(fixed_points(setting), params, ct), axis=1)
    for j, value in enumerate(dens):
        out[f"logdens_{j}"] = float(value)
    order = np.argsort(params["means"][:, 0], kind="stable")
    cov = params["covariances"]
    var0 = cov[:, 0, 0] if ct == "full" else cov[:, 0]
    for rank_k, k in enumerate(order):
        out[f"weight_{rank_k}"] = float(params["weights"][k])
        out[f"mean_{rank_k}"] = float(params["means"][k, 0])
        out[f"var_{rank_k}"] = float(var0[k])
    return out


def draw_list(draws: dict, n_keep: int) -> list[dict]:
    """``n_keep`` equally spaced draws (thinning) as a list of parameter dicts."""
    total = draws["weights"].shape[0]
    idx = np.linspace(0, total - 1, n_keep).round().astype(int)
    return [{name: np.asarray(a[i]) for name, a in draws.items()} for i in idx]


def ranks_of(truth: dict, sample: list[dict], rng: np.random.Generator) -> dict[str, int]:
    """Rank of each true quantity among the draws, ties split at random."""
    out = {}
    for name, value in truth.items():
        vals = np.array([s[name] for s in sample])
        below = int(np.sum(vals < value))
        ties = int(np.sum(vals == value))
        out[name] = below + int(rng.integers(0, ties + 1))
    return out


# --------------------------------------------------------------------------- samplers


def sampler_prior(X, setting: Setting, args) -> dict:
    """The prior the sampler is given: the simulating one, or (``--sampler-prior data``, a
    negative control) the same with the data-based defaults for m0 and Psi (the data mean and
    cov(X) / K^(2/D), as ``prior="default"``), which uses the data twice."""
    p = setting.prior()
    if args.sampler_prior == "data":
        d = setting.n_features
        cov = np.atleast_2d(np.cov(X.T, ddof=1)) / setting.n_components ** (2.0 / d)
        p["mean"] = X.mean(axis=0)
        p["scale"] = cov if setting.covariance_type == "full" else np.diagonal(cov).copy()
    return p


def run_gibbs(X, setting: Setting, rep: int, args) -> tuple[dict, dict]:
    rng = np.random.default_rng([args.seed, 7, rep])
    prior = sampler_prior(X, setting, args)
    draws = gibbs_sample(
        X,
        setting.n_components,
        prior,
        setting.covariance_type,
        n_iter=args.gibbs_burn + args.gibbs_iter,
        rng=rng,
        burn=args.gibbs_burn,
    )
    return draws, {}


def run_nuts(X, setting: Setting, rep: int, args) -> tuple[dict, dict]:
    import bayesgmm as bg

    p = setting.prior()
    data_based = args.sampler_prior == "data"
    prior = bg.Prior(
        weight_concentration=p["alpha"],
        mean_precision=p["kappa"],
        mean=None if data_based else p["mean"],
        degrees_of_freedom=p["dof"],
        scale=None if data_based else p["scale"],
    )
    mix = bg.Mixture(setting.n_components, setting.covariance_type, prior=prior)
    post = mix.sample_posterior(
        X,
        rng_key=rep,
        num_chains=args.nuts_chains,
        num_warmup=args.nuts_warmup,
        num_samples=args.nuts_samples,
        log_likelihood=False,
        progress_bar=False,
    )
    ds = post["posterior"]
    draws = {}
    for name in ("weights", "means", "covariances"):
        a = np.asarray(ds[name].values, np.float64)
        draws[name] = a.reshape((-1,) + a.shape[2:])
    info = {
        "divergences": int(post["sample_stats"]["diverging"].values.sum()),
        "relabeled": float(post["sample_stats"].attrs.get("relabeled_fraction", np.nan)),
        # whether the chains disagreed and tempered SMC weighed their basins
        "basin_weighting": str(ds.attrs.get("basin_weighting", "none")),
    }
    return draws, info


SAMPLERS = {"gibbs": run_gibbs, "nuts": run_nuts}


def replicate(setting: Setting, rep: int, sampler: str, args) -> dict:
    """One SBC replicate: the ranks, and diagnostics of the run."""
    rng = np.random.default_rng([args.seed, list(SETTINGS).index(setting.name), rep])
    truth = draw_prior(rng, setting.prior(), setting.n_components, setting.covariance_type)
    X = simulate(rng, truth, setting.n_rows, setting.covariance_type)
    t0 = time.perf_counter()
    draws, info = SAMPLERS[sampler](X, setting, rep, args)
    elapsed = time.perf_counter() - t0
    sample = [quantities(X, d, setting) for d in draw_list(draws, args.draws)]
    ranks = ranks_of(quantities(X, truth, setting), sample, rng)
    return {
        "ranks": ranks,
        "time": elapsed,
        "min_true_weight": float(truth["weights"].min()),
        **info,
    }


# --------------------------------------------------------------------------- uniformity


def uniformity(ranks: np.ndarray, n_draws: int, bins: int, rng) -> tuple[float, float]:
    """Chi-square p-value over ``bins`` equal bins of 0..L, and the KS p-value."""
    ranks = np.asarray(ranks)
    edges = np.linspace(0, n_draws + 1, bins + 1)
    counts, _ = np.histogram(ranks, bins=edges)
    expected = np.diff(edges) / (n_draws + 1) * len(ranks)
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    p_chi2 = float(stats.chi2.sf(chi2, bins - 1))
    u = (ranks + rng.random(len(ranks))) / (n_draws + 1)
    p_ks = float(stats.kstest(u, "uniform").pvalue)
    return p_chi2, p_ks


def uniformity_tests(per_q: dict, name: str, label: str, args, rng) -> list[dict]:
    """One row of uniformity tests per quantity of a setting and sampler."""
    rows = []
    for q, r in per_q.items():
        r = np.asarray(r)
        p_chi2, p_ks = uniformity(r, args.draws, args.bins, rng)
        rows.append(
            {
                "setting": name,
                "sampler": label,
                "quantity": q,
                "replicates": len(r),
                "chi2_p": p_chi2,
                "ks_p": p_ks,
                "mean_rank": float(np.mean(r)),
            }
        )
    return rows


def plot_histograms(table, setting: str, sampler: str, n_draws: int, bins: int, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table.keys())
    cols = 4
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    edges = np.linspace(0, n_draws + 1, bins + 1)
    for ax, name in zip(axes.ravel(), names, strict=False):
        r = np.asarray(table[name])
        ax.hist(r, bins=edges, color="C0", edgecolor="white")
        expected = len(r) / bins
        band = stats.binom.ppf([0.005, 0.995], len(r), 1.0 / bins)
        ax.axhspan(band[0], band[1], color="0.85", zorder=0)
        ax.axhline(expected, color="0.4", lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_yticks([])
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    fig.suptitle(f"SBC ranks, {setting}, {sampler} ({len(r)} replicates, L={n_draws})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- driver


def run(args) -> list[dict]:
    import pandas as pd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, tests = [], []
    for name in args.settings:
        setting = SETTINGS[name]
        for sampler in args.samplers:
            label = sampler if args.sampler_prior == "same" else f"{sampler}-dataprior"
            t0 = time.perf_counter()
            per_q: dict[str, list[int]] = {}
            failures = []
            for rep in range(args.replicates):
                try:
                    res = replicate(setting, rep, sampler, args)
                except ValueError as err:  # e.g. the reference EM fit on an emptied component
                    failures.append(rep)
                    print(f"{name} {label} replicate {rep} failed: {err}", flush=True)
                    continue
                for q, r in res["ranks"].items():
                    per_q.setdefault(q, []).append(r)
                    rows.append(
                        {
                            "setting": name,
                            "sampler": label,
                            "replicate": rep,
                            "quantity": q,
                            "rank": r,
                            "min_true_weight": res["min_true_weight"],
                            "divergences": res.get("divergences", 0),
                            "relabeled": res.get("relabeled", 0.0),
                            "basin_weighting": res.get("basin_weighting", "none"),
                            "seconds": res["time"],
                        }
                    )
                if (rep + 1) % 25 == 0:
                    # Partial ranks on disk, so that a run stopped mid-setting keeps its replicates
                    # (``--summarise`` turns them into tests and figures).
                    pd.DataFrame(rows).to_csv(out / "ranks.csv", index=False)
                    print(f"{name} {label}: {rep + 1} replicates", flush=True)
            elapsed = time.perf_counter() - t0
            found = uniformity_tests(
                per_q, name, label, args, np.random.default_rng([args.seed, 99])
            )
            tests.extend(found)
            worst = min(t["ks_p"] for t in found)
            print(
                f"{name:14s} {label:6s} {args.replicates} replicates ({len(failures)} failed: "
                f"{failures}) in {elapsed:.0f} s; "
                f"smallest KS p = {worst:.3g}",
                flush=True,
            )
            plot_histograms(
                per_q, name, label, args.draws, args.bins, out / f"sbc_{name}_{label}.png"
            )
            # Written after every setting, so that an interrupted run keeps what it finished.
            pd.DataFrame(rows).to_csv(out / "ranks.csv", index=False)
            pd.DataFrame(tests).to_csv(out / "uniformity.csv", index=False)
    pd.DataFrame(rows).to_csv(out / "ranks.csv", index=False)
    table = pd.DataFrame(tests)
    table.to_csv(out / "uniformity.csv", index=False)
    with pd.option_context("display.width", 120, "display.max_rows", 500):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    return tests


def summarise(sources: list[str], args) -> list[dict]:
    """Uniformity tests and figures from the ``ranks.csv`` of earlier (possibly partial) runs."""
    import pandas as pd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = [pd.read_csv(Path(src) / "ranks.csv") for src in sources]
    ranks = pd.concat(frames, ignore_index=True)
    tests = []
    rng = np.random.default_rng([args.seed, 99])
    for (name, label), group in ranks.groupby(["setting", "sampler"], sort=False):
        per_q = {q: g["rank"].to_numpy() for q, g in group.groupby("quantity", sort=False)}
        tests.extend(uniformity_tests(per_q, name, label, args, rng))
        plot_histograms(per_q, name, label, args.draws, args.bins, out / f"sbc_{name}_{label}.png")
    ranks.to_csv(out / "ranks.csv", index=False)
    table = pd.DataFrame(tests)
    table.to_csv(out / "uniformity.csv", index=False)
    with pd.option_context("display.width", 120, "display.max_rows", 500):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    return tests


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--settings",
        nargs="+",
        default=[name for name in SETTINGS if "weak" not in name],
        choices=list(SETTINGS),
    )
    p.add_argument("--samplers", nargs="+", default=["nuts"], choices=list(SAMPLERS))
    p.add_argument("--replicates", type=int, default=200)
    p.add_argument("--draws", type=int, default=99, help="L, thinned draws per replicate")
    p.add_argument("--bins", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nuts-chains", type=int, default=4)
    p.add_argument("--nuts-warmup", type=int, default=500)
    p.add_argument("--nuts-samples", type=int, default=250)
    p.add_argument("--gibbs-burn", type=int, default=100)
    p.add_argument("--gibbs-iter", type=int, default=600)
    p.add_argument(
        "--sampler-prior",
        choices=["same", "data"],
        default="same",
        help="'data': a negative control, sampling with the data-based m0 and Psi",
    )
    p.add_argument("--out", default=str(ROOT / "docs" / "sbc"))
    p.add_argument(
        "--summarise",
        nargs="+",
        metavar="DIR",
        help="only summarise the ranks.csv of earlier runs in these folders into --out",
    )
    return p


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.summarise:
        summarise(args.summarise, args)
        return
    os.environ.setdefault("JAX_ENABLE_X64", "1")
    run(args)


if __name__ == "__main__":
    main()
