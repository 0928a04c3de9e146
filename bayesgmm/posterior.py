"""EM against the posterior: a table, and figures (matplotlib and arviz-plots, imported lazily).

``compare(res, post)`` puts a MAP-EM fit next to ArviZ's summary of a NUTS posterior from
:meth:`bayesgmm.Mixture.sample_posterior`, one row per scalar parameter. The figures are

- :func:`plot_compare`: the marginal posterior of every parameter with the EM estimate drawn as a
  reference line (``arviz_plots.plot_dist`` + ``arviz_plots.add_lines``);
- :func:`plot_forest`: a forest of the posterior intervals with the EM estimates, every parameter on
  the common scale of its posterior standard deviation;
- :func:`plot_diagnostics`: trace or rank plots of the chains (``arviz_plots.plot_trace_dist``,
  ``arviz_plots.plot_rank``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._tree import PARAMETERS, covariance_type_of, posterior_group

if TYPE_CHECKING:
    import pandas as pd
    import xarray

    from .api import FitResult

__all__ = ["compare", "plot_compare", "plot_diagnostics", "plot_forest"]

COLUMNS = ["em", "mean", "sd", "hdi_low", "hdi_high", "r_hat", "ess_bulk", "em_in_hdi"]


# --------------------------------------------------------------------------- inputs


def _n_effective(post) -> float:
    """Total sample weight of the data (scales the matching distances); 100 if unknown."""
    try:
        return float(np.sum(post["constant_data"]["sample_weight"].values))
    except (KeyError, TypeError):
        pass
    try:
        return float(post["observed_data"]["obs"].shape[0])
    except (KeyError, TypeError):
        return 100.0


def _em_params(res, post) -> dict[str, np.ndarray]:
    """EM parameters as float64 arrays in the posterior's shapes, components in its order."""
    from .relabel import relabel_permutations

    params = res.params if hasattr(res, "params") else res
    if not isinstance(params, dict) or any(name not in params for name in PARAMETERS):
        raise ValueError(
            "res must be a FitResult or a dict with 'weights', 'means' and 'covariances'; "
            f"got {type(res).__name__}."
        )
    ds = posterior_group(post)
    em = {name: np.asarray(params[name], np.float64) for name in PARAMETERS}
    for name in PARAMETERS:
        expected = ds[name].shape[2:]
        if em[name].shape != expected:
            raise ValueError(
                f"res.{name} has shape {em[name].shape} but the posterior's {name} has shape "
                f"{expected} per draw: res must be a fit of the same mixture "
                "(n_components, covariance_type, n_features)."
            )
    covariance_type = covariance_type_of(ds)
    # Match the EM components to the posterior's order (the posterior was relabelled to its own
    # reference fit, which need not be ``res``).
    reference = {name: ds[name].mean(("chain", "draw")).values for name in PARAMETERS}
    perm = relabel_permutations(
        em["weights"][None], em["means"][None], reference, covariance_type, _n_effective(post)
    )[0]
    em["weights"], em["means"] = em["weights"][perm], em["means"][perm]
    if covariance_type != "tied":
        em["covariances"] = em["covariances"][perm]
    return em


def _labels(ds, name: str) -> list[tuple[str, tuple[int, ...]]]:
    """ArviZ's labels (``"means[0, 1]"``) and the array index of each scalar in ``ds[name]``."""
    da = ds[name]
    dims = da.dims[2:]
    out = []
    for idx in np.ndindex(*da.shape[2:]):
        coords = [str(da[dim].values[i]) for dim, i in zip(dims, idx, strict=True)]
        out.append((f"{name}[{', '.join(coords)}]" if coords else name, idx))
    return out


def _redundant(name: str, ds, idx: tuple[int, ...]) -> bool:
    """Upper-triangle entries of symmetric covariance matrices duplicate the lower ones."""
    if name != "covariances" or covariance_type_of(ds) not in ("full", "tied"):
        return False
    return idx[-2] < idx[-1]


# --------------------------------------------------------------------------- the table


def compare(
    res: FitResult | dict, post: xarray.DataTree, *, ci_prob: float | None = None
) -> pd.DataFrame:
    """A table of the EM estimates against the posterior, one row per scalar parameter.

    Parameters
    ----------
    res : FitResult or dict
        A MAP (or ML) EM fit of the same mixture, or a dict ``weights``, ``means``,
        ``covariances``. Its components are first matched to the posterior's order (linear
        assignment on the means and weights).
    post : xarray.DataTree
        The result of :meth:`Mixture.sample_posterior`.
    ci_prob : float, optional
        Probability mass of the highest-density interval; defaults to ArviZ's
        ``rcParams["stats.ci_prob"]`` (0.89 in ArviZ 1.x).

    Returns
    -------
    pandas.DataFrame
        Indexed by ArviZ's labels (``"weights[0]"``, ``"means[0, 1]"``,
        ``"covariances[0, 1, 0]"``; for symmetric covariance matrices only the lower triangle),
        with float64 columns ``em``, ``mean``, ``sd``, ``hdi_low``, ``hdi_high``, ``r_hat``,
        ``ess_bulk`` (the numbers of ``arviz.summary(post, ci_kind="hdi")``) and the boolean
        ``em_in_hdi``. When ``post`` has a ``posterior_invariant`` group, rows
        ``log_likelihood_total`` and ``log_density_at[i]`` follow: permutation-invariant
        quantities, whose R-hat and ESS do not depend on the labelling (``em``: their value at
        the EM fit).

        ``table.attrs["multimodal"]`` is True when the sampler found separated modes or chains
        that disagree beyond a label permutation; ``table.attrs["caption"]`` then says so with
        the modes and their masses, and a :class:`bayesgmm.MultimodalPosteriorWarning` is
        issued.
    """
    import pandas as pd
    from arviz_base import rcParams
    from arviz_stats import summary

    ds = posterior_group(post)
    if ci_prob is None:
        ci_prob = rcParams["stats.ci_prob"]
    ci_prob = float(ci_prob)
    if not 0.0 < ci_prob < 1.0:
        raise ValueError(f"ci_prob must lie in (0, 1), got {ci_prob}.")
    em = _em_params(res, post)

    table = summary(
        post,
        var_names=list(PARAMETERS),
        kind="all",
        ci_kind="hdi",
        ci_prob=ci_prob,
        round_to="none",
    )
    table = pd.DataFrame(table)  # a plain frame: no display formatting attached
    lo, hi = table.columns[2], table.columns[3]
    table = table.rename(columns={lo: "hdi_low", hi: "hdi_high"})

    rows, values = [], []
    for name in PARAMETERS:
        for label, idx in _labels(ds, name):
            if not _redundant(name, ds, idx):
                rows.append(label)
                values.append(em[name][idx])
    missing = [r for r in rows if r not in table.index]
    if missing:  # pragma: no cover - a change in ArviZ's labelling
        raise RuntimeError(f"ArviZ's summary has no rows {missing[:3]}...; labels changed?")
    out = table.loc[rows, ["mean", "sd", "hdi_low", "hdi_high", "r_hat", "ess_bulk"]].astype(
        np.float64
    )
    out.insert(0, "em", np.asarray(values, np.float64))
    invariant = _invariant_rows(res, post, ci_prob)
    if invariant is not None:
        out = pd.concat([out, invariant])
    out["em_in_hdi"] = (out["em"] >= out["hdi_low"]) & (out["em"] <= out["hdi_high"])
    out.index.name = "parameter"
    out = out[COLUMNS]
    _mark_modes(out, ds)
    return out


def _mark_modes(table, ds) -> None:
    """Flag a multimodal posterior in ``table.attrs`` and say so (the warning's class)."""
    import warnings

    from .exceptions import MultimodalPosteriorWarning

    multimodal = bool(int(ds.attrs.get("multimodal", 0)))
    table.attrs["multimodal"] = multimodal
    table.attrs["caption"] = ""
    if multimodal:
        caption = (
            "The posterior is multimodal or its chains disagree beyond a label permutation; the "
            "rows mix components that are not the same in every draw. Modes: "
            f"{ds.attrs.get('mode_summary', '?')}."
        )
        table.attrs["caption"] = caption
        table.attrs["mode_masses"] = np.asarray(ds.attrs.get("mode_masses", []), np.float64)
        warnings.warn(caption, MultimodalPosteriorWarning, stacklevel=3)


def _invariant_rows(res, post, ci_prob: float):
    """Rows for the permutation-invariant quantities (``posterior_invariant``), if present.

    The EM column holds the same quantity at the EM parameters: the total (weighted)
    log-likelihood of the observed data and the mixture log-density at the stored points.
    """
    import pandas as pd
    from arviz_stats import summary

    from .relabel import log_component_densities

    try:
        group = post["posterior_invariant"]
        X = np.asarray(post["observed_data"]["obs"].values, np.float64)
    except (KeyError, TypeError):
        return None
    try:
        w = np.asarray(post["constant_data"]["sample_weight"].values, np.float64)
    except (KeyError, TypeError):
        w = np.ones(X.shape[0])
    params = res.params if hasattr(res, "params") else res
    em = {name: np.asarray(params[name], np.float64)[None] for name in PARAMETERS}
    ct = covariance_type_of(posterior_group(post))
    points = np.asarray(group.attrs["density_points"], np.float64).reshape(-1, X.shape[1])

    def log_density(Y):
        lcd = log_component_densities(Y, em["weights"], em["means"], em["covariances"], ct)[0]
        m = lcd.max(-1)
        return m + np.log(np.exp(lcd - m[:, None]).sum(-1))

    em_values = {"log_likelihood_total": float(log_density(X) @ w)}
    for i, value in enumerate(log_density(points)):
        em_values[f"log_density_at[{i}]"] = float(value)
    table = summary(
        post,
        group="posterior_invariant",
        kind="all",
        ci_kind="hdi",
        ci_prob=ci_prob,
        round_to="none",
    )
    table = pd.DataFrame(table)
    lo, hi = table.columns[2], table.columns[3]
    table = table.rename(columns={lo: "hdi_low", hi: "hdi_high"})
    rows = [r for r in em_values if r in table.index]
    out = table.loc[rows, ["mean", "sd", "hdi_low", "hdi_high", "r_hat", "ess_bulk"]]
    out = out.astype(np.float64)
    out.insert(0, "em", [em_values[r] for r in rows])
    return out


# --------------------------------------------------------------------------- figures


def _em_dataset(res, post):
    import xarray as xr

    ds = posterior_group(post)
    em = _em_params(res, post)
    return xr.Dataset(
        {name: (ds[name].dims[2:], em[name]) for name in PARAMETERS},
        coords={dim: ds[dim].values for name in PARAMETERS for dim in ds[name].dims[2:]},
    )


def _figure(pc):
    fig = pc.viz["figure"].item()
    # Keeps the suptitle and the per-row titles from overlapping.
    fig.set_layout_engine("constrained")
    return fig


def plot_compare(
    res: FitResult | dict,
    post: xarray.DataTree,
    *,
    var_names: list[str] | None = None,
    kind: str | None = None,
    ci_prob: float | None = None,
):
    """The marginal posterior of each parameter, with the EM estimate as a reference line.

    Parameters
    ----------
    res : FitResult or dict
        The EM fit (components matched to the posterior's order as in :func:`compare`).
    post : xarray.DataTree
        From :meth:`Mixture.sample_posterior`.
    var_names : list of str, optional
        Subset of ``["weights", "means", "covariances"]``; all by default.
    kind : {"kde", "hist", "ecdf", "dot"}, optional
        Passed to :func:`arviz_plots.plot_dist`.
    ci_prob : float, optional
        Probability of the highest-density interval drawn under each density.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import arviz_plots as azp

    var_names = _check_var_names(var_names)
    em = _em_dataset(res, post)[var_names]
    pc = azp.plot_dist(
        post,
        var_names=var_names,
        kind=kind,
        ci_kind="hdi",
        ci_prob=ci_prob,
        backend="matplotlib",
    )
    azp.add_lines(pc, em)
    fig = _figure(pc)
    fig.suptitle("posterior (curves) and EM estimate (dashed)")
    return fig


def plot_forest(
    res: FitResult | dict, post: xarray.DataTree, *, ci_prob: float | None = None, ax=None
):
    """Forest plot of the posterior intervals with the EM estimates, in posterior sd units.

    Every parameter is standardised by its posterior mean and standard deviation, so the weights,
    means and covariances share one axis: a bar is the highest-density interval, a dot the
    posterior mean (at 0), a cross the EM estimate. Crosses outside their bar are EM estimates
    outside the interval (``compare(...)["em_in_hdi"]`` is False).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    table = compare(res, post, ci_prob=ci_prob)
    sd = table["sd"].where(table["sd"] > 0, 1.0)
    lo = (table["hdi_low"] - table["mean"]) / sd
    hi = (table["hdi_high"] - table["mean"]) / sd
    em = (table["em"] - table["mean"]) / sd
    y = np.arange(len(table))[::-1]
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 1.0 + 0.28 * len(table)), layout="constrained")
    else:
        fig = ax.figure
    ax.hlines(y, lo, hi, color="C0", linewidth=2.5, label="posterior HDI")
    ax.plot(np.zeros_like(y), y, "o", color="C0", markersize=4, label="posterior mean")
    inside = table["em_in_hdi"].to_numpy()
    ax.plot(em[inside], y[inside], "x", color="C1", markersize=7, mew=2, label="EM estimate")
    if not inside.all():
        ax.plot(em[~inside], y[~inside], "x", color="C3", markersize=7, mew=2, label="EM outside")
    ax.axvline(0.0, color="0.8", linewidth=0.8, zorder=0)
    ax.set_yticks(y, table.index)
    ax.set_xlabel("(value - posterior mean) / posterior sd")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def plot_diagnostics(
    post: xarray.DataTree, *, kind: str = "trace", var_names: list[str] | None = None
):
    """Trace or rank plots of the chains, for diagnosing convergence.

    Parameters
    ----------
    post : xarray.DataTree
        From :meth:`Mixture.sample_posterior`.
    kind : {"trace", "rank"}, default="trace"
        ``"trace"``: :func:`arviz_plots.plot_trace_dist` (densities and traces per chain, with
        divergences marked); ``"rank"``: :func:`arviz_plots.plot_rank` (rank ECDFs per chain,
        which stay inside the envelope when the chains mix).
    var_names : list of str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    import arviz_plots as azp

    posterior_group(post)
    var_names = _check_var_names(var_names)
    if kind == "trace":
        pc = azp.plot_trace_dist(post, var_names=var_names, backend="matplotlib")
    elif kind == "rank":
        pc = azp.plot_rank(post, var_names=var_names, backend="matplotlib")
    else:
        raise ValueError(f"kind must be 'trace' or 'rank', got {kind!r}.")
    return _figure(pc)


def _check_var_names(var_names) -> list[str]:
    if var_names is None:
        return list(PARAMETERS)
    if isinstance(var_names, str):
        var_names = [var_names]
    bad = [name for name in var_names if name not in PARAMETERS]
    if bad:
        raise ValueError(f"var_names must be among {list(PARAMETERS)}, got {bad}.")
    return list(var_names)
