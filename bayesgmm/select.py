"""Model selection by information criteria across numbers of components and covariance types."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from jax.typing import ArrayLike

from . import _validation as v
from .api import FitResult, Mixture
from .driver import data_moments, fit_candidates
from .numerics import float_dtype
from .priors import Prior, needs_data

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
    *,
    init: str = "kmeans",
    max_iter: int = 1000,
    tol: float = 1e-6,
    reg_covar: float = 1e-6,
    sample_weight: ArrayLike | None = None,
    **unknown,
) -> Selection:
    """Fit every (n_components, covariance_type) candidate by EM and rank them.

    Parameters
    ----------
    X : array of shape (n_samples, n_features) or (n_samples,)
    n_components : iterable of int, default=range(1, 10)
        Candidates larger than n_samples are skipped.
    covariance_types : iterable of str, default=all four
    prior : None, "default" or Prior
        With a prior, the criteria use the log-likelihood at the MAP estimate (as mclust).
        The data-based defaults come from the data's moments, computed once for all candidates.
    criterion : {"bic", "aic"}
    n_init : int, default=1
    rng_key : int or jax.random key, default=0
    init, max_iter, tol, reg_covar, sample_weight
        As in :class:`Mixture` and :meth:`Mixture.fit_em`. ``init_params`` is not accepted:
        a start for one number of components cannot serve several.

    Returns
    -------
    Selection
    """
    if unknown:
        hint = (
            " init_params is not accepted: a start for one n_components cannot serve several; "
            "use Mixture(K, ...).fit_em(X, init_params=...)."
            if "init_params" in unknown
            else ""
        )
        raise ValueError(
            f"select got unexpected keyword argument(s) {sorted(unknown)}; it accepts "
            "prior, criterion, n_init, rng_key, init, max_iter, tol, reg_covar, sample_weight."
            + hint
        )
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
    settings = v.check_em_settings(
        init=init, n_init=n_init, max_iter=max_iter, tol=tol, rng_key=rng_key
    )
    reg_covar = v.check_nonnegative_float(reg_covar, "reg_covar")
    if prior is not None and not (isinstance(prior, Prior) or prior == "default"):
        raise ValueError(f"prior must be None, 'default' or a bayesgmm.Prior, got {prior!r}.")
    v.check_em_prior(prior)
    Xa = v.check_X(X, dtype=float_dtype())
    ks = [v.check_n_components(k) for k in n_components]
    types = [v.check_covariance_type(t) for t in covariance_types]
    if not ks or not types:
        raise ValueError("select needs at least one n_components value and one covariance type.")
    w = v.check_sample_weight(sample_weight, Xa.shape[0])
    ks = [k for k in ks if k <= Xa.shape[0]]
    if not ks:
        raise ValueError(f"every n_components exceeds n_samples={Xa.shape[0]}.")
    for k in ks:
        v.check_enough_samples(Xa.shape[0], w, k)
    moments = data_moments(Xa, w) if needs_data(prior) else None
    n = Xa.shape[0]
    rows, fits = [], {}
    for cov in types:
        template = Mixture(max(ks), cov, prior=prior, reg_covar=reg_covar)
        outcomes = fit_candidates(
            Xa, w, ks, cov, prior, reg_covar=reg_covar, moments=moments, **settings
        )
        for k, out in zip(ks, outcomes, strict=True):
            row = {"n_components": k, "covariance_type": cov}
            if isinstance(out, str):
                rows.append(
                    row
                    | {
                        "log_likelihood": np.nan,
                        "objective": np.nan,
                        "n_parameters": np.nan,
                        "bic": np.nan,
                        "aic": np.nan,
                        "converged": False,
                        "error": out,
                    }
                )
                continue
            res = FitResult.from_outcome(template, out, Xa.shape[1])
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
    import pandas as pd  # imported on first use: a slow import

    table = pd.DataFrame(rows)
    best_row = table.loc[table[criterion].idxmin()]
    best = fits[(int(best_row["n_components"]), best_row["covariance_type"])]
    return Selection(table=table, best=best, criterion=criterion, fits=fits)
