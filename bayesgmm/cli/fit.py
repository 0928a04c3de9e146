"""``bayesgmm fit``: one K-component mixture by EM, optionally followed by NUTS."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..params import COVARIANCE_TYPES
from . import console, interrupt, options, report
from .console import CLIError
from .read import read_data


def register_parser(subparsers) -> None:
    fit = subparsers.add_parser(
        "fit",
        help="fit a K-component mixture to a CSV file",
        description=(
            "Fit a Gaussian mixture with K components to the numeric columns of a CSV file (with "
            "a header line) by EM, optionally followed by NUTS, and write a report folder: "
            "params.json, summary.csv, components.csv, memberships.csv, figures (PNG) and, with "
            "--nuts, posterior.nc."
        ),
    )
    options.add_data_arguments(fit)
    fit.add_argument(
        "-k", "--n-components", type=int, required=True, metavar="K", help="number of components"
    )
    fit.add_argument(
        "--covariance",
        choices=COVARIANCE_TYPES,
        default="full",
        help="covariance structure (default: full)",
    )
    options.add_fit_arguments(fit)
    nuts = fit.add_argument_group("posterior sampling")
    nuts.add_argument("--nuts", action="store_true", help="also sample the posterior with NUTS")
    nuts.add_argument("--num-chains", type=int, default=4, metavar="N", help="(default: 4)")
    nuts.add_argument("--num-warmup", type=int, default=1000, metavar="N", help="(default: 1000)")
    nuts.add_argument("--num-samples", type=int, default=1000, metavar="N", help="(default: 1000)")
    fit.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import bayesgmm as bg

    X, names = read_data(args.csv, args.columns)
    report.check_out_dir(args.out, args.force)
    k = options.positive(args.n_components, "-k/--n-components")
    if k > X.shape[0]:
        raise CLIError(
            f"-k {k} needs at least {k} rows (one per component), but {args.csv} has {X.shape[0]}"
        )
    if args.nuts:
        _check_nuts_arguments(args)
    interrupt.check()

    mix = bg.Mixture(k, args.covariance, prior=options.prior(args.prior))
    t0 = time.perf_counter()
    res = mix.fit_em(
        X, rng_key=args.seed, n_init=args.n_init, init=args.init, max_iter=args.max_iter
    )
    interrupt.check()
    print(f"EM: {console.describe_fit(res)} ({time.perf_counter() - t0:.1f} s)")
    post = table = None
    if args.nuts:
        print(
            f"NUTS: {args.num_chains} chain(s), {args.num_warmup} warm-up and "
            f"{args.num_samples} draws each"
        )
        post = mix.sample_posterior(
            X,
            rng_key=args.seed,
            num_chains=args.num_chains,
            num_warmup=args.num_warmup,
            num_samples=args.num_samples,
            init=res,
            progress_bar=console.progress_bar(),
        )
        interrupt.check()
        table = bg.compare(res, post)
    print()
    print(console.fit_summary(res, X, names))
    if table is not None:
        print()
        print(console.posterior_summary(post, table))

    def write(folder: Path) -> list[str]:
        meta = {
            "command": "fit",
            "data": report.data_meta(args.csv, names, X),
            "prior": args.prior,
        }
        files = report.write_fit_files(folder, res, X, names, meta, table)
        if post is not None:
            from ..plotting import plot_compare, save_figures

            post.to_netcdf(folder / "posterior.nc")
            files.append("posterior.nc")
            files += save_figures({"compare.png": plot_compare(res, post)}, folder)
        return files

    files = report.write_report(args.out, args.force, write)
    print(f"\nReport written to {args.out}/: {', '.join(files)}")
    return 0


def _check_nuts_arguments(args: argparse.Namespace) -> None:
    if args.prior == "none":
        raise CLIError(
            "--nuts needs a prior: without one (--prior none) the posterior is improper; "
            "use --prior default"
        )
    for name in ("num_chains", "num_warmup", "num_samples"):
        options.positive(getattr(args, name), "--" + name.replace("_", "-"))
    _check_netcdf_writer()  # before sampling, not after


def _check_netcdf_writer() -> None:
    """posterior.nc (netCDF-4 with groups) needs h5netcdf with h5py, or netCDF4."""
    import importlib.util

    if importlib.util.find_spec("h5py") is None and importlib.util.find_spec("netCDF4") is None:
        raise CLIError(
            "--nuts writes posterior.nc, which needs h5py (with h5netcdf) or netCDF4: "
            "pip install h5py"
        )
