"""``bayesgmm select``: every K from 1 to --max-components and every covariance type, by BIC."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import console, interrupt, options, report
from .console import CLIError
from .read import read_data


def register_parser(subparsers) -> None:
    sel = subparsers.add_parser(
        "select",
        help="choose K and the covariance type by BIC",
        description=(
            "Fit every number of components from 1 to --max-components and every covariance "
            "type by EM, rank them by BIC (or AIC) and write a report folder: selection.csv, "
            "the best fit's params.json, summary.csv, components.csv, memberships.csv and "
            "figures (PNG)."
        ),
    )
    options.add_data_arguments(sel)
    sel.add_argument(
        "--max-components",
        type=int,
        metavar="K",
        help="largest K to try (default: 9, or the number of rows if smaller)",
    )
    sel.add_argument(
        "--covariance",
        action="append",
        metavar="TYPE[,TYPE]",
        help="covariance types to try, repeated or comma-separated (default: all four)",
    )
    sel.add_argument("--criterion", choices=("bic", "aic"), default="bic", help="(default: bic)")
    options.add_fit_arguments(sel)
    sel.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import bayesgmm as bg

    X, names = read_data(args.csv, args.columns)
    report.check_out_dir(args.out, args.force)
    k_max = _largest_k(args.max_components, X.shape[0], args.csv)
    types = options.covariance_types(args.covariance)
    prior = options.prior(args.prior)
    interrupt.check()

    t0 = time.perf_counter()
    sel = bg.select(
        X,
        range(1, k_max + 1),
        covariance_types=types,
        prior=prior,
        criterion=args.criterion,
        n_init=args.n_init,
        rng_key=args.seed,
        init=args.init,
        max_iter=args.max_iter,
    )
    interrupt.check()
    what = "MAP-EM with the default prior" if prior else "maximum-likelihood EM"
    print(
        f"Fitted {len(sel.table)} candidates (K = 1..{k_max}; {', '.join(types)}) by {what} "
        f"in {time.perf_counter() - t0:.1f} s.\n"
    )
    print(console.selection_table(sel, X, top=10))
    best = sel.best
    print(f"\nBest by {args.criterion.upper()}: {console.describe_fit(best)}")
    console.warn_if_degenerate(best, X, names)
    print()
    print(console.fit_summary(best, X, names))

    def write(folder: Path) -> list[str]:
        from ..plotting import plot_selection, save_figures

        meta = {
            "command": "select",
            "data": report.data_meta(args.csv, names, X),
            "prior": args.prior,
            "criterion": args.criterion,
            "candidates": {"n_components": list(range(1, k_max + 1)), "covariance_types": types},
        }
        sel.table.to_csv(folder / "selection.csv", index=False)
        files = ["selection.csv"]
        files += report.write_fit_files(folder, best, X, names, meta, None)
        files += save_figures({"selection.png": plot_selection(sel)}, folder)
        return files

    files = report.write_report(args.out, args.force, write)
    print(f"\nReport written to {args.out}/: {', '.join(files)}")
    return 0


def _largest_k(max_components: int | None, n: int, path: Path) -> int:
    if max_components is None:
        return min(9, n)
    k_max = options.positive(max_components, "--max-components")
    if k_max > n:
        raise CLIError(
            f"--max-components {k_max} needs at least {k_max} rows (one per component), "
            f"but {path} has {n}"
        )
    return k_max
