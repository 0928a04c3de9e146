"""Model selection by information criteria across numbers of components and covariance types."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from jax.typing import ArrayLike

from . import _validation as v
from .api import FitResult, Mixture, _streamed_or_sharded, fit_candidates, fit_rows
from .numerics import float_dtype
from .priors import Prior

if TYPE_CHECKING:
    import pandas as pd

CRITERIA = ("bic", "aic")


@dataclass
class Selection:
    """Candidates of :func:`select`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per candidate: n_components, covariance_type, log_likelihood, objective,
        n_parameters, bic, aic, converged, error.
    best : FitResult
        The candidate with the lowest criterion.
    criterion : str
    fits : dict
        ``(n_components, covariance_type) -> FitResult`` for every candidate that fitted.
    """

    table: pd.DataFrame
    best: FitResult
    criterion: str
    fits: dict = field(default_factory=dict)


def select(
    X: ArrayLike,
    n_components: Iterable[int] = range(1, 10),
    covariance_types: Iterable[str] = ("full", "tied", "diag", "spherical"),
    prior: Prior | str | None = None,
    criterion: str = "bic",
    n_init: int = 1,
    rng_key=0,
    **fit_kwargs,
) -> Selection:
    """Fit every (n_components, covariance_type) candidate by EM and rank them.

    Parameters
    ----------
    X : array of shape (n_samples, n_features) or (n_samples,)
    n_components : iterable of int, default=range(1, 10)
    covariance_types : iterable of str, default=all four
    prior : None, "default" or Prior
        With a prior, the criteria use the log-likelihood at the MAP estimate (as mclust).
    criterion : {"bic", "aic"}
    n_init : int
    rng_key : int or jax.random key
    **fit_kwargs
        Passed to :meth:`Mixture.fit_em` (``init``, ``max_iter``, ``tol``, ``sample_weight``, ...).

    Returns
    -------
    Selection
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
    chunk_size = fit_kwargs.pop("chunk_size", None)
    if chunk_size is not None or _streamed_or_sharded(X):
        return _select_rows(
            X, n_components, covariance_types, prior, criterion, n_init, rng_key, chunk_size,
            fit_kwargs,
        )  # fmt: skip
    Xa = v.check_X(X, dtype=float_dtype())
    ks = [v.check_n_components(k) for k in n_components]
    types = [v.check_covariance_type(t) for t in covariance_types]
    if not ks or not types:
        raise ValueError("select needs at least one n_components value and one covariance type.")
    sample_weight = fit_kwargs.pop("sample_weight", None)
    w = v.check_sample_weight(sample_weight, Xa.shape[0])
    ks = [k for k in ks if k <= Xa.shape[0]]
    if not ks:
        raise ValueError(f"every n_components exceeds n_samples={Xa.shape[0]}.")
    reg_covar = fit_kwargs.pop("reg_covar", 1e-6)
    fit_kwargs = {"init": "kmeans", "max_iter": 1000, "tol": 1e-6} | fit_kwargs
    n = Xa.shape[0]
    per_type = []
    for cov in types:
        template = Mixture(max(ks), cov, prior=prior, reg_covar=reg_covar)
        results = fit_candidates(template, Xa, w, ks, rng_key=rng_key, n_init=n_init, **fit_kwargs)
        per_type.append(results)
    return _selection(Xa, n, ks, types, per_type, criterion, weighted=sample_weight is not None)


def _select_rows(X, n_components, covariance_types, prior, criterion, n_init, rng_key, chunk_size,
                 fit_kwargs):  # fmt: skip
    """:func:`select` on streamed or sharded rows: every candidate shares each pass."""
    ks = sorted({v.check_n_components(k) for k in n_components})
    types = [v.check_covariance_type(t) for t in covariance_types]
    if not ks or not types:
        raise ValueError("select needs at least one n_components value and one covariance type.")
    sample_weight = fit_kwargs.pop("sample_weight", None)
    reg_covar = fit_kwargs.pop("reg_covar", 1e-6)
    fit_kwargs = {"init": "kmeans", "max_iter": 1000, "tol": 1e-6} | fit_kwargs
    templates = [Mixture(max(ks), cov, prior=prior, reg_covar=reg_covar) for cov in types]
    per_type, n = fit_rows(
        templates, X, sample_weight, chunk_size=chunk_size, rng_key=rng_key, n_init=n_init,
        n_components=ks, return_n=True, **fit_kwargs,
    )  # fmt: skip
    return _selection(X, n, ks, types, per_type, criterion, weighted=sample_weight is not None)


def _selection(X, n, ks, types, per_type, criterion, weighted) -> Selection:
    rows, fits = [], {}
    for cov, results in zip(types, per_type, strict=True):
        for k, res in zip(ks, results, strict=True):
            row = {"n_components": k, "covariance_type": cov}
            if isinstance(res, str):
                rows.append(
                    row
                    | {
                        "log_likelihood": np.nan,
                        "objective": np.nan,
                        "n_parameters": np.nan,
                        "bic": np.nan,
                        "aic": np.nan,
                        "converged": False,
                        "error": res,
                    }
                )
                continue
            fits[(k, cov)] = res
            p = res.n_parameters
            # Unweighted, the fit's own log-likelihood is the sum over the rows; scoring them
            # again would compile one program per K.
            ll = (
                res.log_likelihood
                if not weighted
                else float(np.sum(np.asarray(res.score_samples(X), np.float64)))
            )
            rows.append(
                row
                | {
                    "log_likelihood": ll,
                    "objective": res.objective,
                    "n_parameters": p,
                    "bic": -2 * ll + p * np.log(n),
                    "aic": -2 * ll + 2 * p,
                    "converged": res.converged,
                    "error": "",
                }
            )
    if not fits:
        raise ValueError("No candidate could be fitted; see the errors in the messages above.")
    import pandas as pd  # imported on first use (0.4 s)

    table = pd.DataFrame(rows)
    best_row = table.loc[table[criterion].idxmin()]
    best = fits[(int(best_row["n_components"]), best_row["covariance_type"])]
    return Selection(table=table, best=best, criterion=criterion, fits=fits)
