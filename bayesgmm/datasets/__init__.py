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

from ._synthetic import make_four_clusters

__all__ = [
    "load_banknote",
    "load_diabetes",
    "load_faithful",
    "load_galaxies",
    "load_iris",
    "make_four_clusters",
]

_FAITHFUL_COLUMNS = ("eruptions", "waiting")
_GALAXIES_COLUMNS = ("velocity",)
_IRIS_COLUMNS = ("Sepal.Length", "Sepal.Width", "Petal.Length", "Petal.Width")
_DIABETES_COLUMNS = ("glucose", "insulin", "sspg")
_BANKNOTE_COLUMNS = ("Length", "Left", "Right", "Bottom", "Top", "Diagonal")


@cache
def _read_text(filename: str) -> str:
    # A str is immutable, so caching it cannot leak mutations between calls.
    return files(__name__).joinpath(filename).read_text(encoding="utf-8")


def _check_header(filename: str, text: str, columns: tuple[str, ...]) -> None:
    header = tuple(name.strip() for name in text.split("\n", 1)[0].split(","))
    if header != columns:
        raise RuntimeError(
            f"embedded data file {filename!r} has header {header}, expected {columns}; "
            "the package data is damaged"
        )


def _load_csv(filename: str, columns: tuple[str, ...]) -> np.ndarray:
    """Parse an embedded CSV into a new float64 array of shape (n_rows, len(columns))."""
    text = _read_text(filename)
    _check_header(filename, text, columns)
    return np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)


def _load_labelled_csv(
    filename: str, columns: tuple[str, ...], label: str
) -> tuple[np.ndarray, np.ndarray]:
    """Parse an embedded CSV whose last column is a class label.

    Returns a new float64 array of shape (n_rows, len(columns)) and a new array of str labels
    of shape (n_rows,).
    """
    text = _read_text(filename)
    _check_header(filename, text, (*columns, label))
    d = len(columns)
    data = np.loadtxt(
        io.StringIO(text), delimiter=",", skiprows=1, dtype=np.float64, usecols=range(d), ndmin=2
    )
    labels = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, dtype=str, usecols=d)
    return data, np.atleast_1d(labels)


def _labelled_result(
    data: np.ndarray,
    labels: np.ndarray,
    columns: tuple[str, ...],
    label: str,
    as_frame: bool,
    return_labels: bool,
):
    if as_frame:
        frame = _frame(data, columns)
        if return_labels:
            import pandas as pd

            return frame, pd.Series(pd.Categorical(labels), name=label)
        return frame
    return (data, labels) if return_labels else data


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


def load_iris(
    as_frame: bool = False, return_labels: bool = False
) -> np.ndarray | pd.DataFrame | tuple:
    """Load Fisher's (Anderson's) iris data.

    Four measurements in centimetres of 150 iris flowers, 50 of each of three species
    (setosa, versicolor, virginica). Two species overlap, so a two-component mixture is the
    best-supported model by BIC although there are three classes.

    Parameters
    ----------
    as_frame : bool, default=False
        If True, return a :class:`pandas.DataFrame` with the named columns instead of a NumPy
        array (and the labels as a categorical :class:`pandas.Series`).
    return_labels : bool, default=False
        If True, return ``(data, labels)``: the known class of every row as well.

    Returns
    -------
    data : ndarray of shape (150, 4), dtype float64, or DataFrame
        Columns ``Sepal.Length``, ``Sepal.Width``, ``Petal.Length``, ``Petal.Width``.
    labels : ndarray of shape (150,), dtype str, or categorical Series
        The species; only with ``return_labels=True``.

    Notes
    -----
    Source: R's ``datasets::iris``, from Fisher, R. A. (1936). The use of multiple measurements
    in taxonomic problems. *Annals of Eugenics* 7, 179-188; data collected by Anderson, E.
    (1935).

    Examples
    --------
    >>> from bayesgmm.datasets import load_iris
    >>> X, species = load_iris(return_labels=True)
    >>> X.shape, sorted(set(species.tolist()))
    ((150, 4), ['setosa', 'versicolor', 'virginica'])
    """
    data, labels = _load_labelled_csv("iris.csv", _IRIS_COLUMNS, "Species")
    return _labelled_result(data, labels, _IRIS_COLUMNS, "Species", as_frame, return_labels)


def load_diabetes(
    as_frame: bool = False, return_labels: bool = False
) -> np.ndarray | pd.DataFrame | tuple:
    """Load Reaven and Miller's diabetes data.

    Three measurements on 145 non-obese adult patients classified as normal, chemical
    (subclinical) diabetes or overt diabetes. The clusters are elongated and of very different
    orientation, the classic example for unconstrained (``full``) covariances.

    Parameters
    ----------
    as_frame : bool, default=False
        If True, return a :class:`pandas.DataFrame` with the named columns instead of a NumPy
        array (and the labels as a categorical :class:`pandas.Series`).
    return_labels : bool, default=False
        If True, return ``(data, labels)``: the known class of every row as well.

    Returns
    -------
    data : ndarray of shape (145, 3), dtype float64, or DataFrame
        Columns ``glucose`` (area under the plasma glucose curve of a three-hour oral glucose
        tolerance test), ``insulin`` (area under the plasma insulin curve) and ``sspg``
        (steady-state plasma glucose, a measure of insulin resistance). All hold integers.
    labels : ndarray of shape (145,), dtype str, or categorical Series
        ``Chemical``, ``Normal`` or ``Overt``; only with ``return_labels=True``.

    Notes
    -----
    Source: R package ``mclust`` 6.0.0, ``data(diabetes)`` (the numbers are published facts),
    from Reaven, G. M. and Miller, R. G. (1979). An attempt to define the nature of chemical
    diabetes using a multidimensional analysis. *Diabetologia* 16, 17-24.

    Examples
    --------
    >>> from bayesgmm.datasets import load_diabetes
    >>> X = load_diabetes()
    >>> X.shape
    (145, 3)
    >>> X[0].tolist()
    [80.0, 356.0, 124.0]
    """
    data, labels = _load_labelled_csv("diabetes.csv", _DIABETES_COLUMNS, "class")
    return _labelled_result(data, labels, _DIABETES_COLUMNS, "class", as_frame, return_labels)


def load_banknote(
    as_frame: bool = False, return_labels: bool = False
) -> np.ndarray | pd.DataFrame | tuple:
    """Load the Swiss banknote data.

    Six measurements in millimetres of 100 genuine and 100 counterfeit old Swiss 1000-franc
    banknotes.

    Parameters
    ----------
    as_frame : bool, default=False
        If True, return a :class:`pandas.DataFrame` with the named columns instead of a NumPy
        array (and the labels as a categorical :class:`pandas.Series`).
    return_labels : bool, default=False
        If True, return ``(data, labels)``: the known class of every row as well.

    Returns
    -------
    data : ndarray of shape (200, 6), dtype float64, or DataFrame
        Columns ``Length``, ``Left`` (height on the left), ``Right`` (height on the right),
        ``Bottom`` (distance of the inner frame to the lower border), ``Top`` (to the upper
        border) and ``Diagonal``, recorded to 0.1 mm with many ties.
    labels : ndarray of shape (200,), dtype str, or categorical Series
        ``genuine`` or ``counterfeit``; only with ``return_labels=True``.

    Notes
    -----
    Source: R package ``mclust`` 6.0.0, ``data(banknote)`` (the numbers are published facts),
    from Flury, B. and Riedwyl, H. (1988). *Multivariate Statistics: A Practical Approach*.
    London: Chapman & Hall.

    Examples
    --------
    >>> from bayesgmm.datasets import load_banknote
    >>> X, status = load_banknote(return_labels=True)
    >>> X.shape, int((status == "genuine").sum())
    ((200, 6), 100)
    """
    data, labels = _load_labelled_csv("banknote.csv", _BANKNOTE_COLUMNS, "Status")
    return _labelled_result(data, labels, _BANKNOTE_COLUMNS, "Status", as_frame, return_labels)
