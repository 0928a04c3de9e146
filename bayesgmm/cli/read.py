"""Reading the command's data: a CSV file with a header line, a ``.npy`` array (memory-mapped,
so that the fit streams it), or a Parquet file (with pyarrow, ``pip install 'bayesgmm[io]'``).

Each check below looks at one thing and fails with a one-line message that names the file and,
where there is one, the column and the row, before any fitting starts.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .console import CLIError, one_line

# Larger values overflow once squared (variances, distances) even in float64: refuse them here
# with that reason rather than let a fit report a singular covariance.
LARGEST_VALUE = 1e150


def read_data(path: Path, columns: str | None) -> tuple[np.ndarray, list[str]]:
    """``(X, column_names)`` from a ``.npy``, ``.parquet`` or (any other name) CSV file."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        return read_npy(path, columns)
    if suffix in (".parquet", ".pq"):
        return read_parquet(path, columns)
    return read_csv(path, columns)


def read_npy(path: Path, columns: str | None) -> tuple[np.ndarray, list[str]]:
    """A 1-D or 2-D numeric ``.npy`` array, memory-mapped: the fit reads it in chunks.

    Its columns are named ``x0, x1, ...``; ``columns`` picks some of them (which loads those
    columns into memory). Missing or infinite values are found while fitting, with their rows.
    """
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise CLIError(f"cannot read {path}: no such file") from None
    except IsADirectoryError:
        raise CLIError(f"cannot read {path}: it is a folder, not a .npy file") from None
    except (ValueError, OSError) as exc:
        raise CLIError(f"cannot read {path} as a NumPy .npy array: {one_line(exc)}") from None
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise CLIError(f"{path} holds an array of shape {X.shape}; expected (rows, columns)")
    if not np.issubdtype(X.dtype, np.integer) and not np.issubdtype(X.dtype, np.floating):
        raise CLIError(f"{path} holds {X.dtype} values; bayesgmm needs numbers")
    header = [f"x{j}" for j in range(X.shape[1])]
    used, notes = _chosen_columns(header, columns, path)
    if used != header:
        X = np.asarray(X[:, [header.index(c) for c in used]])
    print(f"Read {X.shape[0]} rows of {', '.join(used)} from {path} (memory-mapped, streamed).")
    return X, used


def read_parquet(path: Path, columns: str | None) -> tuple[np.ndarray, list[str]]:
    """The numeric columns of a Parquet file (needs pyarrow), checked like a CSV file's."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CLIError(
            f"reading {path} needs pyarrow: pip install 'bayesgmm[io]' (or pyarrow)"
        ) from None
    try:
        df = pq.read_table(path).to_pandas()
    except FileNotFoundError:
        raise CLIError(f"cannot read {path}: no such file") from None
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        raise CLIError(f"cannot read {path} as Parquet: {one_line(exc)}") from None
    return _from_frame(df, path, columns)


def read_csv(path: Path, columns: str | None) -> tuple[np.ndarray, list[str]]:
    """The numeric columns of a CSV file with a header: ``(X, column_names)``.

    Without ``columns``, columns with no numeric value at all (labels) and columns without a
    header (a saved row index) are left out with a note; a column with some numeric and some
    other values, a missing, infinite or overflowing value is an error that names the column
    and the row.
    """
    return _from_frame(_parse(path, _first_bytes(path)), path, columns)


def _from_frame(df, path: Path, columns: str | None) -> tuple[np.ndarray, list[str]]:
    """The checked numeric columns of a table read from ``path``."""
    df.columns = [str(c) for c in df.columns]
    header = list(df.columns)
    _check_header(header, path)
    if len(df) == 0:
        raise CLIError(f"{path} has a header but no data rows")
    wanted, notes = _chosen_columns(header, columns, path)
    data, used, skipped = [], [], []
    for name in wanted:
        values = _numeric_column(df[name], name, path, required=columns is not None)
        if values is None:
            skipped.append(name)
            continue
        _check_values(values, name, path)
        data.append(values)
        used.append(name)
    if not data:
        raise CLIError(
            f"{path} has no numeric columns (its columns: {', '.join(header)}); "
            "bayesgmm needs numbers"
        )
    if skipped:
        notes.append(f"the non-numeric {', '.join(skipped)}")
    X = np.column_stack(data)
    note = f" (left out {' and '.join(notes)})" if notes else ""
    print(f"Read {X.shape[0]} rows of {', '.join(used)} from {path}{note}.")
    return X, used


# ----------------------------------------------------------------------------- the file


def _first_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except FileNotFoundError:
        raise CLIError(f"cannot read {path}: no such file") from None
    except IsADirectoryError:
        raise CLIError(f"cannot read {path}: it is a folder, not a CSV file") from None
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not head.strip():
        raise CLIError(f"{path} is empty: expected a header line and rows of numbers")
    if _is_binary(head):
        raise CLIError(f"cannot read {path}: it is not a text (UTF-8) CSV file")
    return head


def _parse(path: Path, head: bytes):
    import pandas as pd

    try:
        return pd.read_csv(path, skipinitialspace=True)
    except UnicodeDecodeError:  # past the first bytes
        raise CLIError(f"cannot read {path}: it is not a text (UTF-8) CSV file") from None
    except pd.errors.EmptyDataError:
        raise CLIError(f"{path} is empty: expected a header line and rows of numbers") from None
    except pd.errors.ParserError as exc:
        raise CLIError(f"cannot parse {path} as CSV: {one_line(exc)}") from None
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None


def _is_binary(head: bytes) -> bool:
    """True if the first bytes of a file hold a NUL byte or are not UTF-8 text."""
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(head) - 4  # not just a character cut at the end of the chunk
    return False


# ----------------------------------------------------------------------------- the columns


def _check_header(header: list[str], path: Path) -> None:
    if all(_is_number(c) for c in header):
        raise CLIError(
            f"the first line of {path} holds numbers ({', '.join(header[:4])}), not column "
            "names: add a header line"
        )


def _chosen_columns(header: list[str], columns: str | None, path: Path):
    """The columns to read, and notes on what was left out."""
    if columns is None:
        # A header cell left empty (pandas calls it "Unnamed: 0") is almost always a saved row
        # index, not a measurement.
        named = [c for c in header if not re.fullmatch(r"Unnamed: \d+", c)] or header
        notes = ["the column without a name (a row index)"] if len(named) < len(header) else []
        return named, notes
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
    return wanted, []


def _numeric_column(col, name: str, path: Path, required: bool) -> np.ndarray | None:
    """The column as float64, or None for a label column (no number at all) not asked for."""
    import pandas as pd
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    if is_numeric_dtype(col) and not is_bool_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    converted = pd.to_numeric(col, errors="coerce")
    bad = (converted.isna() & col.notna()).to_numpy()
    if bad.all() and not required and col.notna().any():
        return None
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise CLIError(
            f"column {name!r} of {path} has a non-numeric value {col.iloc[row]!r} in {_where(row)}"
        )
    return converted.to_numpy(dtype=np.float64, na_value=np.nan)


def _check_values(values: np.ndarray, name: str, path: Path) -> None:
    """No missing, infinite or overflowing value."""
    nan = np.isnan(values)
    if nan.any():
        raise CLIError(
            f"column {name!r} of {path} has {int(nan.sum())} missing value(s), the first in "
            f"{_where(np.flatnonzero(nan)[0])}; remove or impute them first"
        )
    inf = np.isinf(values)
    if inf.any():
        raise CLIError(
            f"column {name!r} of {path} has an infinite value in {_where(np.flatnonzero(inf)[0])}"
        )
    huge = np.abs(values) > LARGEST_VALUE
    if huge.any():
        row = int(np.flatnonzero(huge)[0])
        raise CLIError(
            f"column {name!r} of {path} has the value {values[row]:.3g} in {_where(row)}, out of "
            f"range: beyond ±{LARGEST_VALUE:.0e} its square overflows floating point; rescale "
            "the column"
        )


def _where(row: int) -> str:
    return f"data row {row + 1} (line {row + 2})"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
