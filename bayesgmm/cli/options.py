"""Options that several commands share, and the checks on their values."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..init import INIT_METHODS
from ..params import COVARIANCE_TYPES
from .console import CLIError

# Seeds the library turns into a key without a compilation, and the same on every platform.
LARGEST_SEED = 2**31 - 1


def seed(text: str) -> int:
    """argparse type of ``--seed``: a whole number from 0 to 2**31 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= LARGEST_SEED:
        raise argparse.ArgumentTypeError(
            f"must be from 0 to {LARGEST_SEED} (2**31 - 1), got {text}"
        )
    return value


def add_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "csv",
        type=Path,
        metavar="DATA",
        help="data file: CSV with a header line, .npy (streamed) or .parquet (needs pyarrow)",
    )
    p.add_argument(
        "--columns",
        metavar="A,B,...",
        help="comma-separated columns to use (default: every numeric column)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="report folder")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")


def add_fit_arguments(p: argparse.ArgumentParser) -> None:
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
    add_seed(p)


def positive(value: int, name: str) -> int:
    if value < 1:
        raise CLIError(f"{name} must be a positive integer, got {value}")
    return value


def prior(name: str) -> str | None:
    return None if name == "none" else "default"


def covariance_types(values: list[str] | None) -> list[str]:
    """``--covariance`` values, repeated or comma-separated, in order, without repeats."""
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
