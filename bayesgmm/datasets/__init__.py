"""Small classic data sets embedded in the package.

The files are plain CSV with one header line and are read with :mod:`importlib.resources`, so
they work from an installed wheel, an editable install or a zip. Every call parses the file
again and returns a new array (or data frame): mutating a result never affects the next call.
"""

from __future__ import annotations

import io
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Literal, overload

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["load_faithful", "load_galaxies"]

_FAITHFUL_COLUMNS = ("eruptions", "waiting")
_GALAXIES_COLUMNS = ("velocity",)


@cache
def _read_text(filename: str) -> str:
    # A str is immutable, so caching it cannot leak mutations between calls.
    return files(__name__).joinpath(filename).read_text(encoding="utf-8")


def _load_csv(filename: str, columns: tuple[str, ...]) -> np.ndarray:
    """Parse an embedded CSV into a new float64 array of shape (n_rows, len(columns))."""
    text = _read_text(filename)
    header = tuple(name.strip() for name in text.split("\n", 1)[0].split(","))
    if header != columns:
        raise RuntimeError(
            f"embedded data file {filename!r} has header {header}, expected {columns}; "
            "the package data is damaged"
        )
    return np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)


def _frame(data: np.ndarray, columns: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(data, columns=list(columns))


@overload
def load_faithful(as_frame: Literal[False] = ...) -> np.ndarray: ...
@overload
def load_faithful(as_frame: Literal[True]) -> pd.DataFrame: ...


def load_faithful(as_frame: bool = False) -> np.ndarray | pd.DataFrame:
    """Load the Old Faithful geyser eruption data.

    272 eruptions of the Old Faithful geyser in Yellowstone National Park: the duration of
    each eruption and the waiting time until the next one, both in minutes. The data are
    clearly bimodal and are the classic two-dimensional test case for Gaussian mixtures.

    Parameters
    ----------
    as_frame : bool, default=False
        If True, return a :class:`pandas.DataFrame` with columns ``eruptions`` and ``waiting``
        instead of a NumPy array.

    Returns
    -------
    data : ndarray of shape (272, 2), dtype float64, or DataFrame
        Column 0 (``eruptions``) is the eruption time in minutes, column 1 (``waiting``) the
        waiting time to the next eruption in minutes. ``waiting`` holds whole minutes with
        many ties. A new object is returned on every call.

    Notes
    -----
    Source: R's ``datasets::faithful``, from Härdle, W. (1991). *Smoothing Techniques with
    Implementation in S*. New York: Springer. Originally from Azzalini, A. and Bowman, A. W.
    (1990). A look at some data on the Old Faithful geyser. *Applied Statistics* 39, 357-365.

    Examples
    --------
    >>> from bayesgmm.datasets import load_faithful
    >>> X = load_faithful()
    >>> X.shape
    (272, 2)
    >>> X[0].tolist()
    [3.6, 79.0]
    """
    data = _load_csv("faithful.csv", _FAITHFUL_COLUMNS)
    return _frame(data, _FAITHFUL_COLUMNS) if as_frame else data


@overload
def load_galaxies(as_frame: Literal[False] = ...) -> np.ndarray: ...
@overload
def load_galaxies(as_frame: Literal[True]) -> pd.DataFrame: ...


def load_galaxies(as_frame: bool = False) -> np.ndarray | pd.DataFrame:
    """Load the galaxy velocity data.

    Velocities (km/s) of 82 galaxies from six well-separated conic sections of an unfilled
    survey of the Corona Borealis region. Multimodality in these velocities is evidence of
    voids and superclusters in the far universe. It is the classic one-dimensional benchmark
    for Bayesian mixtures with an unknown number of components (Richardson and Green 1997).

    Parameters
    ----------
    as_frame : bool, default=False
        If True, return a :class:`pandas.DataFrame` with the single column ``velocity``
        instead of a NumPy array.

    Returns
    -------
    data : ndarray of shape (82,), dtype float64, or DataFrame of shape (82, 1)
        Velocities in km/s, in increasing order. A new object is returned on every call.

    Notes
    -----
    Source: R's ``MASS::galaxies``, from Roeder, K. (1990). Density estimation with confidence
    sets exemplified by superclusters and voids in the galaxies. *Journal of the American
    Statistical Association* 85, 617-624. Data originally from Postman, M., Huchra, J. P. and
    Geller, M. J. (1986). *Astronomical Journal* 92, 1238-1247.

    Examples
    --------
    >>> from bayesgmm.datasets import load_galaxies
    >>> v = load_galaxies()
    >>> v.shape
    (82,)
    >>> float(v.min()), float(v.max())
    (9172.0, 34279.0)
    """
    data = _load_csv("galaxies.csv", _GALAXIES_COLUMNS)
    return _frame(data, _GALAXIES_COLUMNS) if as_frame else data[:, 0].copy()
