"""Model selection by information criteria across numbers of components and covariance types."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from jax.typing import ArrayLike

from . import _validation as v
from .api import FitResult, Mixture, fit_candidates
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
    rows, fits = [], {}
    for cov in types:
        template = Mixture(max(ks), cov, prior=prior, reg_covar=reg_covar)
        results = fit_candidates(template, Xa, w, ks, rng_key=rng_key, n_init=n_init, **fit_kwargs)
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
                if sample_weight is None
                else float(np.sum(np.asarray(res.score_samples(Xa), np.float64)))
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
