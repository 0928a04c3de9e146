"""The ``bayesgmm`` command line: ``demo``, ``fit`` and ``select``.

Every command reads its data, fits, and only then writes its report: into a hidden temporary
folder next to ``--out``, renamed into place at the end, so a failure never leaves a half-written
report. Bad input ends with a one-line message on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .init import INIT_METHODS
from .params import COVARIANCE_TYPES

# A variance this small relative to the data's variance marks a collapsed (degenerate) component.
DEGENERATE_RELATIVE_VARIANCE = 1e-4


class CLIError(Exception):
    """A problem with the command's input, reported as one line without a traceback."""


# ============================================================================== entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error (argparse prints the usage)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    _setup_libraries()
    try:
        with _one_line_warnings():
            return args.run(args)
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except (CLIError, ValueError, OSError, ImportError) as exc:
        _error(_one_line(exc))
        return 1
    except Exception as exc:  # a bug: still one line, with a way to see the traceback
        if os.environ.get("BAYESGMM_DEBUG"):
            raise
        _error(
            f"internal error ({type(exc).__name__}: {_one_line(exc)}); "
            "set BAYESGMM_DEBUG=1 to see the traceback"
        )
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayesgmm",
        description=(
            "Gaussian mixture models on JAX and NumPyro: MAP-EM fits, model selection by BIC, "
            "and full posteriors by NUTS from the same model."
        ),
        epilog=(
            "Examples:\n"
            "  bayesgmm demo --quick\n"
            "  bayesgmm fit data.csv -k 3 --out fit3\n"
            "  bayesgmm fit data.csv -k 2 --nuts --columns eruptions,waiting --out post2\n"
            "  bayesgmm select data.csv --max-components 6 --covariance full,diag --out sel\n"
            "Run 'bayesgmm COMMAND --help' for the options of a command."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
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
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.set_defaults(run=run_demo)

    fit = sub.add_parser(
        "fit",
        help="fit a K-component mixture to a CSV file",
        description=(
            "Fit a Gaussian mixture with K components to the numeric columns of a CSV file (with "
            "a header line) by EM, optionally followed by NUTS, and write a report folder: "
            "params.json, summary.csv, components.csv, memberships.csv, figures (PNG) and, with "
            "--nuts, posterior.nc."
        ),
    )
    _add_data_arguments(fit)
    fit.add_argument(
        "-k", "--n-components", type=int, required=True, metavar="K", help="number of components"
    )
    fit.add_argument(
        "--covariance",
        choices=COVARIANCE_TYPES,
        default="full",
        help="covariance structure (default: full)",
    )
    _add_fit_arguments(fit)
    nuts = fit.add_argument_group("posterior sampling")
    nuts.add_argument("--nuts", action="store_true", help="also sample the posterior with NUTS")
    nuts.add_argument("--num-chains", type=int, default=4, metavar="N", help="(default: 4)")
    nuts.add_argument("--num-warmup", type=int, default=1000, metavar="N", help="(default: 1000)")
    nuts.add_argument("--num-samples", type=int, default=1000, metavar="N", help="(default: 1000)")
    fit.set_defaults(run=run_fit)

    sel = sub.add_parser(
        "select",
        help="choose K and the covariance type by BIC",
        description=(
            "Fit every number of components from 1 to --max-components and every covariance "
            "type by EM, rank them by BIC (or AIC) and write a report folder: selection.csv, "
            "the best fit's params.json, summary.csv, components.csv, memberships.csv and "
            "figures (PNG)."
        ),
    )
    _add_data_arguments(sel)
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
    _add_fit_arguments(sel)
    sel.set_defaults(run=run_select)
    return parser


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("csv", type=Path, metavar="CSV", help="data file with a header line")
    p.add_argument(
        "--columns",
        metavar="A,B,...",
        help="comma-separated columns to use (default: every numeric column)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="report folder")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")


def _add_fit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prior",
        choices=("default", "none"),
        default="default",
        help=(
            "'default': MAP with the data-based conjugate prior of Fraley & Raftery (2007), which "
            "keeps covariances away from singular solutions; 'none': maximum likelihood "
            "(default: default)"
        ),
    )
    p.add_argument("--n-init", type=int, default=1, metavar="N", help="EM restarts (default: 1)")
    p.add_argument(
        "--init", choices=INIT_METHODS, default="kmeans", help="EM start (default: kmeans)"
    )
    p.add_argument(
        "--max-iter", type=int, default=1000, metavar="N", help="EM iterations (default: 1000)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


# ============================================================================== fit


def run_fit(args: argparse.Namespace) -> int:
    import bayesgmm as bg

    X, names = read_csv(args.csv, args.columns)
    check_out_dir(args.out, args.force)
    k = _positive(args.n_components, "-k/--n-components")
    if k > X.shape[0]:
        raise CLIError(
            f"-k {k} needs at least {k} rows (one per component), but {args.csv} has {X.shape[0]}"
        )
    if args.nuts:
        if args.prior == "none":
            raise CLIError(
                "--nuts needs a prior: without one (--prior none) the posterior is improper; "
                "use --prior default"
            )
        for name in ("num_chains", "num_warmup", "num_samples"):
            _positive(getattr(args, name), "--" + name.replace("_", "-"))
        _check_netcdf_writer()  # before sampling, not after
    prior = _prior(args.prior)
    mix = bg.Mixture(k, args.covariance, prior=prior)
    t0 = time.perf_counter()
    res = mix.fit_em(
        X, rng_key=args.seed, n_init=args.n_init, init=args.init, max_iter=args.max_iter
    )
    print(f"EM: {_describe_fit(res)} ({time.perf_counter() - t0:.1f} s)")
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
            progress_bar=_progress_bar(),
        )
        table = bg.compare(res, post)
    print()
    print(_fit_summary(res, X, names))
    if table is not None:
        print()
        print(_posterior_summary(post, table))

    def write(folder: Path) -> list[str]:
        meta = {"command": "fit", "data": _data_meta(args.csv, names, X), "prior": args.prior}
        files = _write_fit_files(folder, res, X, names, meta, table)
        if post is not None:
            from .plotting import plot_compare, save_figures

            post.to_netcdf(folder / "posterior.nc")
            files.append("posterior.nc")
            files += save_figures({"compare.png": plot_compare(res, post)}, folder)
        return files

    files = write_report(args.out, args.force, write)
    print(f"\nReport written to {args.out}/: {', '.join(files)}")
    return 0


# ============================================================================== select


def run_select(args: argparse.Namespace) -> int:
    import bayesgmm as bg

    X, names = read_csv(args.csv, args.columns)
    check_out_dir(args.out, args.force)
    n = X.shape[0]
    if args.max_components is None:
        k_max = min(9, n)
    else:
        k_max = _positive(args.max_components, "--max-components")
        if k_max > n:
            raise CLIError(
                f"--max-components {k_max} needs at least {k_max} rows (one per component), "
                f"but {args.csv} has {n}"
            )
    types = _covariance_types(args.covariance)
    prior = _prior(args.prior)
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
    what = "MAP-EM with the default prior" if prior else "maximum-likelihood EM"
    print(
        f"Fitted {len(sel.table)} candidates (K = 1..{k_max}; {', '.join(types)}) by {what} "
        f"in {time.perf_counter() - t0:.1f} s.\n"
    )
    print(_selection_table(sel, X, top=10))
    best = sel.best
    print(f"\nBest by {args.criterion.upper()}: {_describe_fit(best)}")
    _warn_if_degenerate(best, X, names)
    print()
    print(_fit_summary(best, X, names))

    def write(folder: Path) -> list[str]:
        from .plotting import plot_selection, save_figures

        meta = {
            "command": "select",
            "data": _data_meta(args.csv, names, X),
            "prior": args.prior,
            "criterion": args.criterion,
            "candidates": {"n_components": list(range(1, k_max + 1)), "covariance_types": types},
        }
        sel.table.to_csv(folder / "selection.csv", index=False)
        files = ["selection.csv"]
        files += _write_fit_files(folder, best, X, names, meta, None)
        files += save_figures({"selection.png": plot_selection(sel)}, folder)
        return files

    files = write_report(args.out, args.force, write)
    print(f"\nReport written to {args.out}/: {', '.join(files)}")
    return 0


# ============================================================================== demo


def run_demo(args: argparse.Namespace) -> int:
    out = args.out
    if out is None:
        out = _fresh_folder(Path("bayesgmm-demo"))
    else:
        check_out_dir(out, args.force)
    log = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, log)):
        figures, tables = _demo(QUICK_DEMO if args.quick else FULL_DEMO, args.seed)

    def write(folder: Path) -> list[str]:
        from .plotting import save_figures

        files = save_figures(figures, folder)
        for name, write_table in tables.items():
            write_table(folder / name)
            files.append(name)
        (folder / "summary.txt").write_text(log.getvalue(), encoding="utf-8")
        return [*files, "summary.txt"]

    files = write_report(out, args.force, write)
    print(f"\nFigures and tables written to {out}/: {', '.join(files)}")
    return 0


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


def _demo(cfg: DemoSettings, seed: int):
    """The demo's computations and printout; returns the figures and tables to write."""
    import matplotlib.pyplot as plt

    import bayesgmm as bg
    from bayesgmm.plotting import plot_compare, plot_history, plot_mixture, plot_selection

    t_start = time.perf_counter()
    X = bg.datasets.load_faithful()
    names = ["eruptions", "waiting"]
    figures: dict = {}
    tables: dict[str, Callable[[Path], None]] = {}
    ks, types = cfg.n_components, cfg.covariance_types
    chains, warmup, draws = cfg.num_chains, cfg.num_warmup, cfg.num_samples

    _heading("bayesgmm demo: the Old Faithful geyser")
    print(
        "272 eruptions: the eruption time and the waiting time until the next eruption, in\n"
        "minutes. 'waiting' holds whole minutes only, with many ties: a trap for maximum\n"
        f"likelihood. Settings: {cfg.name}."
    )

    # --- 1. selection, with and without the prior ---------------------------------------------
    _heading(f"1. BIC over K = {', '.join(map(str, ks))} and {', '.join(types)} covariances")
    sels = {}
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
        sels[label] = sel
        print(f"\n{label} ({time.perf_counter() - t0:.1f} s), best five by BIC:")
        print(_selection_table(sel, X, top=5))
    ml, mp = sels["maximum likelihood"], sels["MAP, default prior"]
    print()
    print(f"ML  picks {_describe_fit(ml.best)}")
    if not _warn_if_degenerate(ml.best, X, names):
        print("    (no collapsed component this time: try more restarts or another seed)")
    print(f"MAP picks {_describe_fit(mp.best)}")
    if not _warn_if_degenerate(mp.best, X, names):
        print(
            "    The prior's inverse-Wishart / inverse-gamma term keeps every variance away\n"
            "    from zero, so no component can sit on a single repeated value: BIC compares\n"
            "    honest fits."
        )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True, layout="constrained")
    plot_selection(ml, ax=axes[0], title="maximum likelihood")
    plot_selection(mp, ax=axes[1], title="MAP with the default prior")
    figures["selection.png"] = fig
    tables["selection_ml.csv"] = lambda p, t=ml.table: t.to_csv(p, index=False)
    tables["selection_map.csv"] = lambda p, t=mp.table: t.to_csv(p, index=False)

    # --- 2. the chosen models, side by side --------------------------------------------------
    _heading("2. The chosen mixtures")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    plot_mixture(ml.best, X, ax=axes[0], feature_names=names, title="ML choice: " + _short(ml.best))
    plot_mixture(
        mp.best, X, ax=axes[1], feature_names=names, title="MAP choice: " + _short(mp.best)
    )
    figures["chosen_mixtures.png"] = fig
    best = mp.best
    print(_fit_summary(best, X, names))

    # --- 3. ML against MAP on the same model -------------------------------------------------
    _heading(f"3. EM on the chosen model ({_short(best)}): ML and MAP")
    k, cov = best.n_components, best.covariance_type
    ml_same = ml.fits.get((k, cov))
    if ml_same is None:
        print("Maximum likelihood failed on this model (a singular covariance).")
    else:
        print(_ml_map_table(ml_same, best, names))
    figures["em_history.png"] = plot_history(best)

    # --- 4. NUTS and the comparison ----------------------------------------------------------
    _heading(f"4. NUTS on the chosen model: {chains} chains x ({warmup} warm-up + {draws} draws)")
    t0 = time.perf_counter()
    post = best.mixture.sample_posterior(
        X,
        rng_key=seed,
        num_chains=chains,
        num_warmup=warmup,
        num_samples=draws,
        init=best,
        progress_bar=_progress_bar(),
    )
    print(f"NUTS took {time.perf_counter() - t0:.1f} s.")
    table = bg.compare(best, post)
    print(_posterior_summary(post, table))
    figures["compare.png"] = plot_compare(best, post)
    tables["compare.csv"] = lambda p, t=table: t.to_csv(p, index_label="parameter")

    print(f"\nDemo finished in {time.perf_counter() - t_start:.1f} s.")
    return figures, tables


def _ml_map_table(ml, mp, names) -> str:
    import pandas as pd

    rows = {}
    for label, res in (("ML", ml), ("MAP", mp)):
        w = np.asarray(res.weights)
        mu = np.asarray(res.means)
        order = np.lexsort(mu.T[::-1])  # same labelling for both: sort components by mean
        col = {}
        for i, k in enumerate(order):
            col[f"weight[{i}]"] = f"{w[k]:.4f}"
            for d, name in enumerate(names):
                col[f"mean[{i}] {name}"] = f"{mu[k, d]:.4g}"
        col["log-likelihood"] = f"{res.log_likelihood:.2f}"
        col["log-likelihood + log-prior"] = f"{res.objective:.2f}"
        col["iterations"] = str(res.n_iter)
        rows[label] = col
    return pd.DataFrame(rows).to_string()


# ============================================================================== data input


def read_csv(path: Path, columns: str | None) -> tuple[np.ndarray, list[str]]:
    """The numeric columns of a CSV file with a header: ``(X, column_names)``.

    Without ``columns``, columns with no numeric value at all (labels) and columns without a
    header (a saved row index) are left out with a note; a column with some numeric and some
    other values, a missing value or an infinite value is an error that names the column and
    the row.
    """
    import pandas as pd

    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        df = pd.read_csv(path, skipinitialspace=True)
    except FileNotFoundError:
        raise CLIError(f"cannot read {path}: no such file") from None
    except IsADirectoryError:
        raise CLIError(f"cannot read {path}: it is a folder, not a CSV file") from None
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CLIError(f"cannot read {path}: it is not a text (UTF-8) CSV file") from None
    except pd.errors.EmptyDataError:
        raise CLIError(f"{path} is empty: expected a header line and rows of numbers") from None
    except pd.errors.ParserError as exc:
        if _is_binary(head):
            raise CLIError(f"cannot read {path}: it is not a text (UTF-8) CSV file") from None
        raise CLIError(f"cannot parse {path} as CSV: {_one_line(exc)}") from None
    if _is_binary(head):
        raise CLIError(f"cannot read {path}: it is not a text (UTF-8) CSV file")
    header = [str(c) for c in df.columns]
    if all(_is_number(c) for c in header):
        raise CLIError(
            f"the first line of {path} holds numbers ({', '.join(header[:4])}), not column "
            "names: add a header line"
        )
    if len(df) == 0:
        raise CLIError(f"{path} has a header but no data rows")
    notes: list[str] = []  # what was left out, for the summary line
    if columns is not None:
        wanted = [c.strip() for c in columns.split(",") if c.strip()]
        if not wanted:
            raise CLIError("--columns is empty: give comma-separated column names")
        missing = [c for c in wanted if c not in header]
        if missing:
            raise CLIError(
                f"--columns: no column {', '.join(map(repr, missing))} in {path}; "
                f"its columns are {', '.join(header)}"
            )
        if len(set(wanted)) < len(wanted):
            raise CLIError(f"--columns names a column twice: {columns}")
    else:
        # A header cell left empty (pandas calls it "Unnamed: 0") is almost always a saved row
        # index, not a measurement.
        unnamed = [c for c in header if re.fullmatch(r"Unnamed: \d+", c)]
        wanted = [c for c in header if c not in unnamed] or header
        if len(wanted) < len(header):
            notes.append("the column without a name (a row index)")
    data, skipped = [], []
    for name in wanted:
        values = _numeric_column(df[name], name, path, required=columns is not None)
        if values is None:
            skipped.append(name)
        else:
            data.append(values)
    if not data:
        raise CLIError(
            f"{path} has no numeric columns (its columns: {', '.join(header)}); "
            "bayesgmm needs numbers"
        )
    used = [n for n in wanted if n not in skipped]
    X = np.column_stack(data)
    if skipped:
        notes.append(f"the non-numeric {', '.join(skipped)}")
    note = f" (left out {' and '.join(notes)})" if notes else ""
    print(f"Read {X.shape[0]} rows of {', '.join(used)} from {path}{note}.")
    return X, used


def _numeric_column(col, name: str, path: Path, required: bool) -> np.ndarray | None:
    import pandas as pd
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    if is_numeric_dtype(col) and not is_bool_dtype(col):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        converted = pd.to_numeric(col, errors="coerce")
        bad = converted.isna() & col.notna()
        if bad.all() and not required and col.notna().any():
            return None  # a label column
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise CLIError(
                f"column {name!r} of {path} has a non-numeric value {col.iloc[row]!r} in data "
                f"row {row + 1} (line {row + 2})"
            )
        values = converted.to_numpy(dtype=np.float64, na_value=np.nan)
    nan = np.isnan(values)
    if nan.any():
        row = int(np.flatnonzero(nan)[0])
        raise CLIError(
            f"column {name!r} of {path} has {int(nan.sum())} missing value(s), the first in data "
            f"row {row + 1} (line {row + 2}); remove or impute them first"
        )
    inf = np.isinf(values)
    if inf.any():
        row = int(np.flatnonzero(inf)[0])
        raise CLIError(
            f"column {name!r} of {path} has an infinite value in data row {row + 1} "
            f"(line {row + 2})"
        )
    return values


def _is_binary(head: bytes) -> bool:
    """True if the first bytes of a file hold a NUL byte or are not UTF-8 text."""
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(head) - 4  # not just a character cut at the end of the chunk
    return False


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ============================================================================== report output


def check_out_dir(path: Path, force: bool) -> None:
    """Fail early if ``path`` cannot take a report: a file, or a non-empty folder without force."""
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise CLIError(f"--out {path} exists and is not a folder")
        if not force and any(path.iterdir()):
            raise CLIError(
                f"output folder {path} is not empty; choose another --out or pass --force to "
                "replace it"
            )


def write_report(path: Path, force: bool, write: Callable[[Path], list[str]]) -> list[str]:
    """Call ``write(tmp)`` on a fresh temporary folder next to ``path``, then move it into place.

    Either the whole report lands at ``path`` or nothing does: a failure while writing removes
    the temporary folder, and an existing folder is replaced (``force``) only once the new
    report is complete.
    """
    check_out_dir(path, force)
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        files = write(tmp)
        tmp.chmod(0o777 & ~_umask())
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except OSError:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fresh_folder(base: Path) -> Path:
    """``base`` if it is free (or an empty folder), else ``base-2``, ``base-3``, ..."""
    candidate, i = base, 1
    while candidate.exists() and not (candidate.is_dir() and not any(candidate.iterdir())):
        i += 1
        candidate = base.with_name(f"{base.name}-{i}")
    return candidate


def _write_fit_files(folder: Path, res, X, names, meta: dict, table) -> list[str]:
    import pandas as pd

    from .plotting import plot_history, plot_mixture, save_figures

    params = _params_json(res, X, names, meta)
    (folder / "params.json").write_text(_dumps(params) + "\n", encoding="utf-8")
    float_format = _float_format(res)
    if table is None:
        table = pd.DataFrame({"em": _flat_params(res)})
    table.to_csv(folder / "summary.csv", index_label="parameter", float_format=float_format)
    components = _components_table(res, X, names)
    components.to_csv(folder / "components.csv", index=False, float_format=float_format)
    proba = np.asarray(res.predict_proba(X), np.float64)
    memberships = pd.DataFrame(proba, columns=[f"p{k}" for k in range(proba.shape[1])])
    memberships.insert(0, "component", proba.argmax(axis=1))
    memberships.to_csv(folder / "memberships.csv", index_label="row", float_format="%.6g")
    figs = save_figures(
        {
            "mixture.png": plot_mixture(res, X, feature_names=names),
            "history.png": plot_history(res),
        },
        folder,
    )
    return ["params.json", "summary.csv", "components.csv", "memberships.csv", *figs]


def _params_json(res, X, names, meta: dict) -> dict:
    import jax.numpy as jnp

    import bayesgmm

    n = X.shape[0]
    out = {"bayesgmm_version": bayesgmm.__version__, **meta}
    out.update(res.to_dict())
    out.update(
        n_samples=n,
        n_parameters=res.n_parameters,
        bic=res.bic(X),
        aic=res.aic(X),
        dtype=str(jnp.result_type(float)),
    )
    if res.prior is not None:
        out["prior_hyperparameters"] = {
            "weight_concentration": float(res.prior.alpha),
            "mean_precision": float(res.prior.kappa),
            "mean": np.asarray(res.prior.mean).tolist(),
            "degrees_of_freedom": float(res.prior.dof),
            "scale": np.asarray(res.prior.scale).tolist(),
        }
    return _finite_json(out, 9 if _float_format(res) else 17)


def _float_format(res) -> str | None:
    """float32 fits: 9 significant digits (exact for float32, without float64 noise)."""
    return "%.9g" if np.asarray(res.means).dtype == np.float32 else None


def _dumps(obj) -> str:
    """JSON with two-space indents, each innermost list of numbers on one line."""
    text = json.dumps(obj, indent=2)
    return re.sub(
        r"\[\s*([^\[\]{}\"]*?)\s*\]",
        lambda m: (
            "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]"
            if m.group(1).strip()
            else "[]"
        ),
        text,
    )


def _finite_json(obj, digits: int = 17):
    """Floats rounded to ``digits`` significant digits; NaN and infinities (not JSON) to None."""
    if isinstance(obj, dict):
        return {k: _finite_json(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_json(v, digits) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _flat_params(res) -> dict[str, float]:
    """Every parameter entry by name, as ``bayesgmm.compare`` labels them: ``means[0, 1]``."""
    out = {}
    for site, value in res.params.items():
        arr = np.asarray(value, np.float64)
        for idx in np.ndindex(arr.shape):
            out[f"{site}[{', '.join(map(str, idx))}]"] = float(arr[idx])
    return out


def _components_table(res, X, names):
    import pandas as pd

    k = res.n_components
    sd = np.sqrt(_variances(res))
    labels = np.asarray(res.predict(X))
    table = pd.DataFrame(
        {
            "component": np.arange(k),
            "weight": np.asarray(res.weights, np.float64),
            "n_assigned": np.bincount(labels, minlength=k),
        }
    )
    means = np.asarray(res.means, np.float64)
    for j, name in enumerate(names):
        table[f"mean_{name}"] = means[:, j]
    for j, name in enumerate(names):
        table[f"sd_{name}"] = sd[:, j]
    return table


def _data_meta(path: Path, names, X) -> dict:
    return {"file": str(path), "columns": names, "n_rows": int(X.shape[0])}


# ============================================================================== printing


def _describe_fit(res) -> str:
    kind = "maximum likelihood" if res.prior is None else "MAP (default prior)"
    state = (
        f"converged in {res.n_iter} iterations"
        if res.converged
        else (f"NOT converged after {res.n_iter} iterations")
    )
    return f"K={res.n_components}, {res.covariance_type} covariances, {kind}, {state}"


def _short(res) -> str:
    return f"K={res.n_components}, {res.covariance_type}"


def _fit_summary(res, X, names) -> str:
    lines = [
        f"log-likelihood {res.log_likelihood:.6g}   BIC {res.bic(X):.6g}   AIC {res.aic(X):.6g}"
        f"   ({res.n_parameters} parameters, {X.shape[0]} rows)",
        "",
        _components_table(res, X, names).to_string(index=False, float_format=_fmt),
    ]
    return "\n".join(lines)


def _selection_table(sel, X, top: int) -> str:
    t = sel.table.copy()
    crit = sel.criterion
    t["min_rel_var"] = [
        _min_relative_variance(sel.fits[(k, c)], X) if (k, c) in sel.fits else np.nan
        for k, c in zip(t["n_components"], t["covariance_type"], strict=True)
    ]
    t = t.sort_values(crit, na_position="last").head(top)
    cols = ["n_components", "covariance_type", "log_likelihood", crit, "min_rel_var", "converged"]
    t = t[cols].rename(
        columns={
            "n_components": "K",
            "covariance_type": "covariance",
            "log_likelihood": "loglik",
            "min_rel_var": "min var/data var",
        }
    )
    failed = int(sel.table[crit].isna().sum())
    one_decimal = "{:.1f}".format
    formatters = {"loglik": one_decimal, crit: one_decimal, "min var/data var": "{:.2g}".format}
    text = t.to_string(index=False, formatters=formatters)
    if failed:
        text += f"\n({failed} candidate(s) failed with a singular covariance)"
    return text


def _variances(res) -> np.ndarray:
    """Every component's variance of every feature, shape (K, D)."""
    from .params import full_covariances

    k, d = res.n_components, res.n_features_in
    cov = np.asarray(full_covariances(res.covariances, res.covariance_type, k, d), np.float64)
    return np.diagonal(cov, axis1=1, axis2=2)


def _min_relative_variance(res, X) -> float:
    """The smallest component variance of any feature, divided by that feature's variance."""
    return float(np.min(_variances(res) / np.var(X, axis=0)))


def _warn_if_degenerate(res, X, names) -> bool:
    """Print and return True if a component has collapsed onto (nearly) one value."""
    var = _variances(res)
    rel = var / np.var(X, axis=0)
    if rel.min() >= DEGENERATE_RELATIVE_VARIANCE:
        return False
    comp, feat = np.unravel_index(np.argmin(rel), rel.shape)
    mean = float(np.asarray(res.means)[comp, feat])
    print(
        f"    DEGENERATE: component {comp} has variance {var[comp, feat]:.2g} on "
        f"'{names[feat]}' (the data's variance is {np.var(X[:, feat]):.3g}).\n"
        f"    It sits on the repeated value {names[feat]} = {mean:.6g}, where the likelihood\n"
        "    grows without bound: that spike, not a better fit, wins the BIC. A prior\n"
        "    (--prior default) prevents it."
    )
    return True


def _posterior_summary(post, table) -> str:
    stats = post["sample_stats"]
    lines = []
    if "diverging" in stats:
        div = int(np.asarray(stats["diverging"]).sum())
        lines.append(f"divergent transitions: {div}")
    if "r_hat" in table:
        lines.append(
            f"largest R-hat: {table['r_hat'].max():.3f} (near 1 when the chains agree; above "
            "1.01, run more draws)"
        )
    if "ess_bulk" in table:
        lines.append(f"smallest bulk ESS: {table['ess_bulk'].min():.0f}")
    if "em_in_hdi" in table:
        inside = int(table["em_in_hdi"].sum())
        lines.append(
            f"the EM estimate lies inside the posterior's HDI for {inside} of {len(table)} "
            "parameters"
        )
    formatters = {
        "r_hat": "{:.3f}".format,
        "ess_bulk": "{:.0f}".format,
        "ess_tail": "{:.0f}".format,
    }
    lines += ["", table.to_string(float_format=_fmt, formatters=formatters)]
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _heading(text: str) -> None:
    print(f"\n{text}\n{'-' * len(text)}")


def _error(message: str) -> None:
    print(f"bayesgmm: error: {message}", file=sys.stderr)


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class _Tee(io.TextIOBase):
    """Write to several text streams at once (the terminal and the demo's summary.txt)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()


# ============================================================================== helpers


def _positive(value: int, name: str) -> int:
    if value < 1:
        raise CLIError(f"{name} must be a positive integer, got {value}")
    return value


def _prior(name: str):
    return None if name == "none" else "default"


def _covariance_types(values: list[str] | None) -> list[str]:
    if not values:
        return list(COVARIANCE_TYPES)
    types = []
    for value in values:
        for t in value.split(","):
            t = t.strip()
            if not t:
                continue
            if t not in COVARIANCE_TYPES:
                raise CLIError(
                    f"--covariance: unknown type {t!r}; choose from {', '.join(COVARIANCE_TYPES)}"
                )
            if t not in types:
                types.append(t)
    if not types:
        raise CLIError("--covariance is empty; choose from " + ", ".join(COVARIANCE_TYPES))
    return types


def _progress_bar() -> bool:
    """NUTS progress bar on a terminal only (not in logs, pipes or tests)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _check_netcdf_writer() -> None:
    """posterior.nc (netCDF-4 with groups) needs h5netcdf with h5py, or netCDF4."""
    import importlib.util

    if importlib.util.find_spec("h5py") is None and importlib.util.find_spec("netCDF4") is None:
        raise CLIError(
            "--nuts writes posterior.nc, which needs h5py (with h5netcdf) or netCDF4: "
            "pip install h5py"
        )


def _setup_libraries() -> None:
    """Keep JAX's start-up chatter (no GPU found, and so on) out of the output; draw off-screen."""
    for name in ("jax", "jax._src.xla_bridge", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "matplotlib.pyplot" not in sys.modules:  # a fresh process: no window, ever
        import matplotlib

        matplotlib.use("Agg")


@contextlib.contextmanager
def _one_line_warnings():
    """Show warnings as one line each on stderr; hide the libraries' informational noise."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        for module in ("jax", "numpyro", "arviz", "xarray", "arviz_base", "arviz_stats"):
            warnings.filterwarnings("ignore", module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"bayesgmm: warning: {_one_line(message)}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
