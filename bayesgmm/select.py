"""Model selection by information criteria across numbers of components and covariance types.

A candidate is *degenerate* (column ``degenerate`` of the table, :func:`degenerate_reason`)
when a component's covariance is held up by the regulariser or is numerically singular:

- on the ``reg_covar`` floor (maximum likelihood with ``reg_covar > 0``): a variance of some
  component in some direction (an eigenvalue for full and tied, a variance for diag and
  spherical) is at most ``FLOOR_FACTOR * reg_covar`` = 2 ``reg_covar``, i.e. the data's own
  scatter there is no larger than the ``reg_covar`` added to it. A component collapsed onto
  repeated values (rounded data: Old Faithful, iris) sits exactly on the floor; its
  likelihood, and so BIC, rewards the collapse rather than the data.
- numerically singular: with every coordinate divided by the largest standard deviation any
  component has in it, some component's smallest eigenvalue (a variance ratio for diag and
  spherical; for tied, of its correlation matrix) is at most ``SINGULAR_RTOL`` = 1e-8 (or 10
  machine epsilons of the fit's precision, if larger). 1e-8 is about the square root of
  float64's epsilon: the component's spread in that direction is below 1e-4 of the spread the
  fit itself finds there, its points agree to half of float64's digits, and the component
  models repeated values or an exact linear relation, not spread. The ratio is within the fit,
  so it does not change with shifts, rescaled coordinates or the distance between clusters.

mclust calls such fits singular and reports no BIC for them; ``select`` keeps them in the
table, warns (:class:`DegenerateFitWarning`) and never returns one as ``best`` while a
non-degenerate candidate exists. A candidate whose every restart failed (``error``) counts as
degenerate too.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from jax.typing import ArrayLike

from . import _validation as v
from . import em, stream
from .api import FitResult, Mixture
from .driver import fit_candidate_groups
from .init import SEARCH_INIT, SEARCH_N_INIT
from .priors import Prior

if TYPE_CHECKING:
    import pandas as pd

CRITERIA = ("bic", "aic")
FLOOR_FACTOR = em.FLOOR_FACTOR  # a variance at most this times reg_covar is on its floor
SINGULAR_RTOL = 1e-8


class DegenerateFitWarning(UserWarning):
    """:func:`select` found candidates with degenerate covariances (see the module docstring)."""


def _variances(cov: np.ndarray, covariance_type: str) -> np.ndarray:
    """Per component, the variances along its principal directions, shape (K', D')."""
    if covariance_type == "full":
        return np.linalg.eigvalsh(cov)
    if covariance_type == "tied":
        return np.linalg.eigvalsh(cov)[None]
    return cov if covariance_type == "diag" else cov[:, None]


def _relative_variances(cov: np.ndarray, covariance_type: str) -> np.ndarray:
    """The variances with each coordinate divided by its largest variance in the fit."""
    if covariance_type in ("diag", "spherical"):
        return _variances(cov / np.max(cov, axis=0), covariance_type)
    diag = np.diagonal(cov, axis1=-2, axis2=-1)
    scale = np.sqrt(np.max(diag.reshape(-1, cov.shape[-1]), axis=0))
    return _variances(cov / np.outer(scale, scale), covariance_type)


def degenerate_reason(res: FitResult) -> str:
    """Why the fit ``res`` is degenerate (see the module docstring), or ``""`` when it is not.

    Parameters
    ----------
    res : FitResult

    Returns
    -------
    str
        Empty for a fit that is not degenerate; otherwise which component and why.
    """
    ct = res.covariance_type
    cov = np.asarray(res.covariances, dtype=np.float64)
    where = "the shared covariance" if ct == "tied" else "component {}"
    if not np.all(np.isfinite(cov)):
        return "a covariance is not finite"
    reg_covar = res.mixture.reg_covar
    if res.mixture.prior is None and reg_covar > 0:
        var = _variances(cov, ct)
        k, j = np.unravel_index(np.argmin(var), var.shape)
        if var[k, j] <= FLOOR_FACTOR * reg_covar:
            return (
                f"{where.format(k)} has a variance of {var[k, j]:.3g}, on the reg_covar floor "
                f"({reg_covar:g})"
            )
    rtol = max(SINGULAR_RTOL, 10 * float(np.finfo(np.asarray(res.covariances).dtype).eps))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = _relative_variances(cov, ct)
    k, j = np.unravel_index(np.argmin(np.where(np.isnan(rel), -np.inf, rel)), rel.shape)
    if not rel[k, j] > rtol:
        return (
            f"{where.format(k)} is numerically singular (relative variance {rel[k, j]:.3g} "
            f"<= {rtol:g})"
        )
    return ""


@dataclass
class Selection:
    """Candidates of :func:`select`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per candidate: n_components, covariance_type, log_likelihood, objective,
        n_parameters, bic, aic, converged, degenerate, error.
    best : FitResult
        The candidate with the lowest criterion among those that are not degenerate (among
        all, with a :class:`DegenerateFitWarning`, when every candidate is).
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
    n_init: int = SEARCH_N_INIT,
    rng_key=0,
    *,
    init: str = SEARCH_INIT,
    max_iter: int = 1000,
    tol: float = 1e-6,
    reg_covar: float = 1e-6,
    sample_weight: ArrayLike | None = None,
    chunk_size: int | None = None,
    **unknown,
) -> Selection:
    """Fit every (n_components, covariance_type) candidate by EM and rank them.

    Parameters
    ----------
    X : array of shape (n_samples, n_features) or (n_samples,), a source, or sharded rows
        As in :meth:`Mixture.fit_em`: a source is streamed, and every candidate, restart and
        covariance type shares each pass over it.
    n_components : int or iterable of int, default=range(1, 10)
        Candidates larger than n_samples are skipped.
    covariance_types : str or iterable of str, default=all four
        A single string is one covariance type.
    prior : None, "default" or Prior
        With a prior, the criteria use the log-likelihood at the MAP estimate (as mclust).
        The data-based defaults come from the data's moments, computed once for all candidates.
    criterion : {"bic", "aic"}
    n_init : int, default=1
        Starts per candidate. One k-means start (``init='kmeans'``) per candidate keeps a search
        over many candidates cheap; ``n_init=10, init='kmeans++'`` is :meth:`Mixture.fit_em`'s
        default start, which finds better optima on hard data at several times the cost.
    rng_key : int or jax.random key, default=0
    init, max_iter, tol, reg_covar, sample_weight
        As in :class:`Mixture` and :meth:`Mixture.fit_em`. ``init_params`` is not accepted:
        a start for one number of components cannot serve several.
    chunk_size : int, optional
        Rows read at a time from a source (as in :meth:`Mixture.fit_em`).

    Returns
    -------
    Selection
        A candidate whose covariances are degenerate (on the ``reg_covar`` floor or numerically
        singular, see :mod:`bayesgmm.select`) is marked in the table's ``degenerate`` column
        and not returned as ``best`` while another candidate is not degenerate; a
        :class:`DegenerateFitWarning` names such candidates.

    Raises
    ------
    ValueError
        For invalid arguments, and when no candidate could be fitted (the message lists the
        candidates and why each failed).
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
            "prior, criterion, n_init, rng_key, init, max_iter, tol, reg_covar, sample_weight, "
            "chunk_size." + hint
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
    ks = [v.check_n_components(k) for k in _as_list(n_components, "n_components")]
    types = [v.check_covariance_type(t) for t in _as_list(covariance_types, "covariance_types")]
    if not ks or not types:
        raise ValueError("select needs at least one n_components value and one covariance type.")
    if chunk_size is not None or stream.streamed_or_sharded(X):
        return _select_rows(
            X, ks, types, prior, criterion, reg_covar, sample_weight, chunk_size, settings
        )
    Xa = v.check_X(X)
    w = v.check_sample_weight(sample_weight, Xa.shape[0])
    ks = [k for k in ks if k <= Xa.shape[0]]
    if not ks:
        raise ValueError(f"every n_components exceeds n_samples={Xa.shape[0]}.")
    for k in ks:
        v.check_enough_samples(Xa.shape[0], w, k)
    # The data-based prior's moments come from the transformed copy the fits share.
    per_type = fit_candidate_groups(
        Xa, w, [(cov, ks) for cov in types], prior, reg_covar=reg_covar, **settings
    )
    return _selection(Xa, Xa.shape[0], Xa.shape[1], ks, types, per_type, prior, reg_covar,
                      criterion, weighted=sample_weight is not None)  # fmt: skip


def _select_rows(X, ks, types, prior, criterion, reg_covar, sample_weight, chunk_size, settings):
    """:func:`select` on a source or sharded rows: every candidate shares each pass."""
    ks = sorted(set(ks))
    per_type, n, d = stream.fit_rows(
        [(cov, ks) for cov in types], X, sample_weight, prior=prior, reg_covar=reg_covar,
        chunk_size=chunk_size, **settings,
    )  # fmt: skip
    return _selection(X, n, d, ks, types, per_type, prior, reg_covar, criterion,
                      weighted=sample_weight is not None)  # fmt: skip


def _selection(X, n, d, ks, types, per_type, prior, reg_covar, criterion, weighted):
    """The table, the fits and the best candidate from each type's outcomes."""
    rows, fits, reasons = [], {}, {}
    for cov, outcomes in zip(types, per_type, strict=True):
        template = Mixture(max(ks), cov, prior=prior, reg_covar=reg_covar)
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
                        "degenerate": True,
                        "error": out,
                    }
                )
                continue
            res = FitResult.from_outcome(template, out, d)
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
                    "degenerate": bool(reasons.setdefault((k, cov), degenerate_reason(res))),
                    "error": "",
                }
            )
    if not fits:
        raise ValueError(_nothing_fitted(rows))
    import pandas as pd  # imported on first use: a slow import

    table = pd.DataFrame(rows)
    fitted = table[table["error"] == ""]
    sound = fitted[~fitted["degenerate"]]
    pool = sound if len(sound) else fitted
    best_row = pool.loc[pool[criterion].idxmin()]
    best = fits[(int(best_row["n_components"]), best_row["covariance_type"])]
    bad = {key: why for key, why in reasons.items() if why}
    if bad:
        warnings.warn(
            _degenerate_message(bad, criterion, len(sound) > 0, prior),
            DegenerateFitWarning,
            stacklevel=3,
        )
    return Selection(table=table, best=best, criterion=criterion, fits=fits)


def _as_list(value, name: str) -> list:
    """A single value (one string, one int) as a one-element list; an iterable as a list."""
    if isinstance(value, (str, int, np.integer)):
        return [value]
    try:
        return list(value)
    except TypeError:
        raise ValueError(
            f"{name} must be one value or an iterable of values, got {value!r}."
        ) from None


def _nothing_fitted(rows: list[dict]) -> str:
    by_error: dict[str, list[str]] = {}
    for row in rows:
        by_error.setdefault(row["error"], []).append(
            f"{row['covariance_type']} K={row['n_components']}"
        )
    parts = [f"{', '.join(names)}: {error}" for error, names in by_error.items()]
    return f"select could not fit any of its {len(rows)} candidates. " + " | ".join(parts)


def _degenerate_message(bad: dict, criterion: str, others_sound: bool, prior) -> str:
    names = "; ".join(f"{cov} K={k}: {why}" for (k, cov), why in bad.items())
    what = (
        f"they are not chosen as best ({criterion}), since other candidates are not degenerate"
        if others_sound
        else f"every candidate is degenerate: best is the lowest {criterion} among them, "
        "a fit to be treated with care"
    )
    helps = (
        "a stronger prior (a larger Prior(scale=...) or degrees_of_freedom)"
        if prior is not None
        else "a prior (prior='default'), which keeps variances away from zero, or rescaled "
        "data if reg_covar is large next to the data's variances"
    )
    return (
        f"select: {len(bad)} candidate(s) have degenerate covariances (a component collapsed "
        f"onto (nearly) repeated values, which inflates the likelihood): {names}. Hence {what}. "
        f"What helps: {helps}."
    )
