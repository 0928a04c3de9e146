"""``bayesgmm demo``: the whole workflow on the embedded Old Faithful data.

The story in four steps: BIC selection with and without the prior, the two chosen mixtures,
maximum likelihood against MAP on the chosen model, and NUTS with the EM-versus-posterior
comparison. Each step prints its part of the summary and adds figures and tables to the report.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..params import COVARIANCE_TYPES
from . import console, interrupt, options, report
from .console import heading, short


@dataclass(frozen=True)
class DemoSettings:
    """What the demo fits: the candidates of the selection and the size of the NUTS run."""

    name: str
    n_components: tuple[int, ...]
    covariance_types: tuple[str, ...]
    num_chains: int
    num_warmup: int
    num_samples: int
    # Restarts from random data points find the degenerate maximum-likelihood solutions that a
    # single k-means start can miss; all restarts run at once under vmap.
    n_init: int = 10
    init: str = "random_from_data"


QUICK_DEMO = DemoSettings("--quick", (1, 2, 3, 4), ("full", "diag"), 2, 300, 300)
FULL_DEMO = DemoSettings("full", (1, 2, 3, 4, 5, 6), COVARIANCE_TYPES, 4, 1000, 1000)
NAMES = ["eruptions", "waiting"]


def register_parser(subparsers) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="the whole workflow on the embedded Old Faithful data",
        description=(
            "EM fits (maximum likelihood and MAP), BIC selection over K and covariance types "
            "with and without the prior, NUTS on the chosen model and the EM-versus-posterior "
            "comparison, on the embedded Old Faithful data. Prints summaries and writes figures "
            "and tables to --out."
        ),
    )
    demo.add_argument(
        "--out",
        type=Path,
        help="report folder (default: a fresh ./bayesgmm-demo, ./bayesgmm-demo-2, ...)",
    )
    demo.add_argument(
        "--quick", action="store_true", help="fewer candidates and draws: under a minute"
    )
    demo.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    options.add_seed(demo)
    demo.set_defaults(run=run)


@dataclass
class Report:
    """What the demo has to write: figures and tables (file name -> writer)."""

    figures: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)

    def write(self, folder: Path) -> list[str]:
        from ..plotting import save_figures

        files = save_figures(self.figures, folder)
        for name, write_table in self.tables.items():
            write_table(folder / name)
            files.append(name)
        return files


def run(args: argparse.Namespace) -> int:
    out = report.fresh_folder(Path("bayesgmm-demo")) if args.out is None else args.out
    if args.out is not None:
        report.check_out_dir(out, args.force)
    log = io.StringIO()
    with contextlib.redirect_stdout(console.Tee(sys.stdout, log)):
        result = demo(QUICK_DEMO if args.quick else FULL_DEMO, args.seed)

    def write(folder: Path) -> list[str]:
        files = result.write(folder)
        (folder / "summary.txt").write_text(log.getvalue(), encoding="utf-8")
        return [*files, "summary.txt"]

    files = report.write_report(out, args.force, write)
    print(f"\nFigures and tables written to {out}/: {', '.join(files)}")
    return 0


def demo(cfg: DemoSettings, seed: int) -> Report:
    """The demo's computations and printout; returns what to write."""
    import bayesgmm as bg

    t_start = time.perf_counter()
    X = bg.datasets.load_faithful()
    out = Report()
    heading("bayesgmm demo: the Old Faithful geyser")
    print(
        "272 eruptions: the eruption time and the waiting time until the next eruption, in\n"
        "minutes. 'waiting' holds whole minutes only, with many ties: a trap for maximum\n"
        f"likelihood. Settings: {cfg.name}."
    )
    ml, mp = select_with_and_without_prior(X, cfg, seed, out)
    interrupt.check()
    show_chosen(X, ml.best, mp.best, out)
    compare_ml_map(ml, mp.best, out)
    posterior(X, mp.best, cfg, seed, out)
    print(f"\nDemo finished in {time.perf_counter() - t_start:.1f} s.")
    return out


def select_with_and_without_prior(X, cfg: DemoSettings, seed: int, out: Report):
    """1. BIC selection by maximum likelihood and by MAP; returns both selections."""
    import matplotlib.pyplot as plt

    import bayesgmm as bg
    from bayesgmm.plotting import plot_selection

    ks, types = cfg.n_components, cfg.covariance_types
    heading(f"1. BIC over K = {', '.join(map(str, ks))} and {', '.join(types)} covariances")
    sels = []
    for label, prior in (("maximum likelihood", None), ("MAP, default prior", "default")):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            # Discarded singular restarts are expected here; the table below tells the story.
            warnings.simplefilter("ignore", RuntimeWarning)
            sel = bg.select(
                X,
                ks,
                covariance_types=types,
                prior=prior,
                n_init=cfg.n_init,
                rng_key=seed,
                init=cfg.init,
            )
        interrupt.check()
        sels.append(sel)
        print(f"\n{label} ({time.perf_counter() - t0:.1f} s), best five by BIC:")
        print(console.selection_table(sel, X, top=5))
    ml, mp = sels
    print()
    print(f"ML  picks {console.describe_fit(ml.best)}")
    if not console.warn_if_degenerate(ml.best, X, NAMES):
        print("    (no collapsed component this time: try more restarts or another seed)")
    print(f"MAP picks {console.describe_fit(mp.best)}")
    if not console.warn_if_degenerate(mp.best, X, NAMES):
        print(
            "    The prior's inverse-Wishart / inverse-gamma term keeps every variance away\n"
            "    from zero, so no component can sit on a single repeated value: BIC compares\n"
            "    honest fits."
        )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True, layout="constrained")
    plot_selection(ml, ax=axes[0], title="maximum likelihood")
    plot_selection(mp, ax=axes[1], title="MAP with the default prior")
    out.figures["selection.png"] = fig
    out.tables["selection_ml.csv"] = lambda p, t=ml.table: t.to_csv(p, index=False)
    out.tables["selection_map.csv"] = lambda p, t=mp.table: t.to_csv(p, index=False)
    return ml, mp


def show_chosen(X, ml_best, best, out: Report) -> None:
    """2. The two chosen mixtures side by side, and the MAP choice's components."""
    import matplotlib.pyplot as plt

    from bayesgmm.plotting import plot_mixture

    heading("2. The chosen mixtures")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    plot_mixture(ml_best, X, ax=axes[0], feature_names=NAMES, title="ML choice: " + short(ml_best))
    plot_mixture(best, X, ax=axes[1], feature_names=NAMES, title="MAP choice: " + short(best))
    out.figures["chosen_mixtures.png"] = fig
    print(console.fit_summary(best, X, NAMES))


def compare_ml_map(ml, best, out: Report) -> None:
    """3. Maximum likelihood against MAP on the chosen model."""
    from bayesgmm.plotting import plot_history

    heading(f"3. EM on the chosen model ({short(best)}): ML and MAP")
    ml_same = ml.fits.get((best.n_components, best.covariance_type))
    if ml_same is None:
        print("Maximum likelihood failed on this model (a singular covariance).")
    else:
        print(_ml_map_table(ml_same, best))
    out.figures["em_history.png"] = plot_history(best)


def posterior(X, best, cfg: DemoSettings, seed: int, out: Report) -> None:
    """4. NUTS on the chosen model, compared with its EM estimate."""
    import bayesgmm as bg
    from bayesgmm.plotting import plot_compare

    chains, warmup, draws = cfg.num_chains, cfg.num_warmup, cfg.num_samples
    heading(f"4. NUTS on the chosen model: {chains} chains x ({warmup} warm-up + {draws} draws)")
    t0 = time.perf_counter()
    post = best.mixture.sample_posterior(
        X,
        rng_key=seed,
        num_chains=chains,
        num_warmup=warmup,
        num_samples=draws,
        init=best,
        progress_bar=console.progress_bar(),
    )
    interrupt.check()
    print(f"NUTS took {time.perf_counter() - t0:.1f} s.")
    table = bg.compare(best, post)
    print(console.posterior_summary(post, table))
    out.figures["compare.png"] = plot_compare(best, post)
    out.tables["compare.csv"] = lambda p, t=table: t.to_csv(p, index_label="parameter")


def _ml_map_table(ml, mp) -> str:
    import pandas as pd

    rows = {}
    for label, res in (("ML", ml), ("MAP", mp)):
        w = np.asarray(res.weights)
        mu = np.asarray(res.means)
        order = np.lexsort(mu.T[::-1])  # same labelling for both: sort components by mean
        col = {}
        for i, k in enumerate(order):
            col[f"weight[{i}]"] = f"{w[k]:.4f}"
            for d, name in enumerate(NAMES):
                col[f"mean[{i}] {name}"] = f"{mu[k, d]:.4g}"
        col["log-likelihood"] = f"{res.log_likelihood:.2f}"
        col["log-likelihood + log-prior"] = f"{res.objective:.2f}"
        col["iterations"] = str(res.n_iter)
        rows[label] = col
    return pd.DataFrame(rows).to_string()
