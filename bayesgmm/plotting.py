"""Figures for fitted mixtures, EM runs and model selections (matplotlib, imported lazily).

Every function returns the matplotlib ``Figure`` it drew on and takes an optional ``ax`` to draw
into an existing axes. matplotlib is imported inside the functions, so ``import bayesgmm`` never
pays for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .params import full_covariances

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .api import FitResult
    from .select import Selection

__all__ = ["plot_compare", "plot_history", "plot_mixture", "plot_selection", "save_figures"]

# 1, 2 and 3 standard deviations; in 2-D these ellipses hold 39%, 86% and 99% of a component.
_SIGMAS = (1.0, 2.0, 3.0)
_STYLES = {"full": "-", "tied": "--", "diag": "-.", "spherical": ":"}


def component_colors(n_components: int) -> np.ndarray:
    """RGB colours of the components, shape (n_components, 3): matplotlib's tab10, cycled."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return np.array([cmap(k % 10)[:3] for k in range(n_components)])


def _figure_axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.figure, ax


def _as_2d(X, n_features: int) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(
            f"X must have shape (n_samples, {n_features}) to match the fit, got shape {X.shape}."
        )
    return X


def _names(feature_names, n_features: int) -> list[str]:
    if feature_names is None:
        return [f"x{d}" for d in range(n_features)]
    names = [str(n) for n in feature_names]
    if len(names) != n_features:
        raise ValueError(
            f"feature_names must have {n_features} entries, got {len(names)}: {names}."
        )
    return names


def _params(res: FitResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """weights (K,), means (K, D) and full covariances (K, D, D) as float64 NumPy arrays."""
    k, d = res.n_components, res.n_features_in
    cov = full_covariances(res.covariances, res.covariance_type, k, d)
    return (
        np.asarray(res.weights, np.float64),
        np.asarray(res.means, np.float64),
        np.asarray(cov, np.float64),
    )


# ----------------------------------------------------------------------------- plot_mixture


def plot_mixture(
    res: FitResult,
    X,
    ax: Axes | Figure | None = None,
    *,
    feature_names=None,
    style: str = "ellipses",
    bins: Any = "auto",
    title: str | None = None,
) -> Figure:
    """The fitted mixture over the data.

    - One feature: a histogram of ``X`` with the weighted component densities (dashed) and the
      mixture density, their sum (grey).
    - Two features: the points, each coloured by its membership probabilities as a blend of the
      component colours, with the 1, 2 and 3 sigma ellipses of every component (or, with
      ``style="contours"``, contours of the mixture density).
    - More features: a corner plot, one panel per pair of features, with the marginal fit of
      each feature on the diagonal.

    Parameters
    ----------
    res : FitResult
    X : array of shape (n_samples, n_features) or (n_samples,)
    ax : matplotlib Axes, optional
        Axes to draw into (one or two features). With more than two features the plot needs a
        grid of axes: pass a matplotlib ``Figure`` (or nothing) instead.
    feature_names : sequence of str, optional
        Axis labels; default ``x0, x1, ...``.
    style : {"ellipses", "contours"}, default="ellipses"
        Two features only: how the components are drawn.
    bins : int or str, default="auto"
        Histogram bins (one feature, and the diagonal of the corner plot).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if style not in ("ellipses", "contours"):
        raise ValueError(f"style must be 'ellipses' or 'contours', got {style!r}.")
    d = res.n_features_in
    X = _as_2d(X, d)
    names = _names(feature_names, d)
    if d <= 2:
        if not _is_axes_or_none(ax):
            raise ValueError(
                f"plot_mixture with {d} feature(s) draws into one matplotlib Axes, "
                f"got {type(ax).__name__}."
            )
        fig, ax = _figure_axes(ax, (6.4, 4.0) if d == 1 else (6.0, 5.0))
        if d == 1:
            _plot_1d(ax, res, X[:, 0], names[0], bins)
        else:
            _plot_2d(ax, res, X, names, style)
    else:
        fig = _plot_corner(ax, res, X, names, bins)
        ax = None
    if title is None:
        prior = "ML" if res.prior is None else "MAP"
        title = f"{res.n_components}-component {res.covariance_type} mixture ({prior})"
    if title:
        (ax.set_title if ax is not None else fig.suptitle)(title)
    return fig


def _is_axes_or_none(ax) -> bool:
    if ax is None:
        return True
    from matplotlib.axes import Axes

    return isinstance(ax, Axes)


def _plot_1d(ax, res, x, name, bins):
    _marginal(ax, res, x, 0, bins, lw=1.6)
    ax.set_xlabel(name)
    ax.set_ylabel("density")
    ax.legend(frameon=False, fontsize="small")


def _marginal(ax, res, x, d, bins, lw):
    """Histogram of feature ``d`` with the weighted component densities and their sum."""
    weights, means, cov = _params(res)
    colors = component_colors(len(weights))
    ax.hist(x, bins=bins, density=True, color="0.8", edgecolor="white", label="data")
    lo, hi = x.min(), x.max()
    pad = 0.1 * (hi - lo) if hi > lo else 1.0
    grid = np.linspace(lo - pad, hi + pad, 600)
    sd = np.sqrt(cov[:, d, d])
    dens = weights[:, None] * _normal_pdf(grid[None, :], means[:, d : d + 1], sd[:, None])
    # The mixture first, wide and grey, so that components it coincides with stay visible.
    ax.plot(grid, dens.sum(0), color="black", lw=1.5 * lw, alpha=0.6, label="mixture")
    for k in range(len(weights)):
        label = f"{k}: weight {weights[k]:.2f}"
        ax.plot(grid, dens[k], "--", color=colors[k], lw=lw, label=label)
    ax.set_xlim(grid[0], grid[-1])


def _normal_pdf(x, mean, sd):
    return np.exp(-0.5 * ((x - mean) / sd) ** 2) / (np.sqrt(2 * np.pi) * sd)


def _plot_2d(ax, res, X, names, style, dims=(0, 1), legend=True, size=14):
    weights, means, cov = _params(res)
    colors = component_colors(len(weights))
    resp = np.asarray(res.predict_proba(X), np.float64)
    point_colors = np.clip(resp @ colors, 0, 1)
    i, j = dims
    ax.scatter(X[:, i], X[:, j], c=point_colors, s=size, linewidths=0, alpha=0.85, zorder=2)
    if style == "contours" and X.shape[1] == 2:
        _density_contours(ax, res, X)
    else:
        sub = cov[:, [i, j]][:, :, [i, j]]
        for k in range(len(weights)):
            _ellipses(ax, means[k, [i, j]], sub[k], colors[k])
    ax.scatter(
        means[:, i],
        means[:, j],
        c=colors,
        marker="X",
        s=90,
        edgecolors="black",
        linewidths=0.8,
        zorder=4,
    )
    if legend:
        ax.legend(
            handles=_legend_handles(weights, colors),
            frameon=False,
            fontsize="small",
            title="component",
        )
    ax.set_xlabel(names[i])
    ax.set_ylabel(names[j])


def _legend_handles(weights, colors):
    from matplotlib.lines import Line2D

    return [
        Line2D([], [], color=c, marker="o", ls="", label=f"{k}: weight {w:.2f}")
        for k, (w, c) in enumerate(zip(weights, colors, strict=True))
    ]


def _ellipses(ax, mean, cov, color):
    from matplotlib.patches import Ellipse

    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0, None)
    angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))  # direction of the largest axis
    for n, alpha in zip(_SIGMAS, (0.9, 0.6, 0.35), strict=True):
        ax.add_patch(
            Ellipse(
                mean,
                width=2 * n * np.sqrt(vals[1]),
                height=2 * n * np.sqrt(vals[0]),
                angle=angle,
                fill=False,
                edgecolor=color,
                lw=1.6,
                alpha=alpha,
                zorder=3,
            )
        )


def _density_contours(ax, res, X):
    lo, hi = X.min(0), X.max(0)
    pad = 0.1 * np.where(hi > lo, hi - lo, 1.0)
    gx = np.linspace(lo[0] - pad[0], hi[0] + pad[0], 160)
    gy = np.linspace(lo[1] - pad[1], hi[1] + pad[1], 160)
    xx, yy = np.meshgrid(gx, gy)
    grid = np.column_stack([xx.ravel(), yy.ravel()])
    dens = np.exp(np.asarray(res.score_samples(grid), np.float64)).reshape(xx.shape)
    levels = np.quantile(dens, [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.995])
    ax.contour(xx, yy, dens, levels=np.unique(levels), cmap="Greys", linewidths=1, zorder=3)


def _plot_corner(fig, res, X, names, bins):
    import matplotlib.pyplot as plt

    d = X.shape[1]
    if fig is None:
        fig = plt.figure(figsize=(2.3 * d + 0.6, 2.3 * d), layout="constrained")
    elif _is_axes_or_none(fig):
        raise ValueError(
            f"plot_mixture with {d} features draws a {d} x {d} grid of panels and cannot use a "
            "single Axes: pass a matplotlib Figure as ax, or leave ax=None."
        )
    axes = fig.subplots(d, d, squeeze=False)
    weights = np.asarray(res.weights, np.float64)
    colors = component_colors(len(weights))
    for r in range(d):
        for c in range(d):
            ax = axes[r, c]
            if c > r:
                ax.set_axis_off()
                continue
            if r == c:
                _marginal(ax, res, X[:, r], r, bins, lw=1.2)
                ax.set_yticks([])
            else:
                _plot_2d(ax, res, X, names, "ellipses", dims=(c, r), legend=False, size=6)
            ax.set_xlabel(names[c] if r == d - 1 else "")
            ax.set_ylabel(names[r] if c == 0 and r > 0 else "")
            if r < d - 1:
                ax.tick_params(labelbottom=False)
            if c > 0 and r != c:
                ax.tick_params(labelleft=False)
    axes[0, d - 1].legend(
        handles=_legend_handles(weights, colors),
        loc="upper right",
        frameon=False,
        title="component",
    )
    return fig


# ----------------------------------------------------------------------------- plot_history


def plot_history(res: FitResult, ax: Axes | None = None) -> Figure:
    """The EM objective after each iteration.

    The objective is the log-likelihood for maximum-likelihood fits and the log joint density
    (log-likelihood plus log-prior) for MAP fits; EM never lets it decrease. An inset shows the
    distance to the final value on a log scale, which makes the rate of convergence visible.

    Parameters
    ----------
    res : FitResult
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = _figure_axes(ax, (6.0, 4.0))
    h = np.asarray(res.history, np.float64)
    it = np.arange(1, len(h) + 1)
    marker = "o" if len(h) <= 40 else None
    ax.plot(it, h, marker=marker, ms=3, color="C0")
    ylabel = "log-likelihood" if res.prior is None else "log-likelihood + log-prior"
    ax.set_xlabel("EM iteration")
    ax.set_ylabel(ylabel)
    if res.n_iter == 0:
        ax.set_title("no EM iterations (parameters given, not fitted)")
    else:
        state = "converged" if res.converged else "did not converge"
        ax.set_title(f"EM {state} after {res.n_iter} iterations")
    if len(h) >= 3:
        gap = h[-1] - h[:-1]
        ok = gap > 0
        if np.any(ok):
            inset = ax.inset_axes([0.45, 0.12, 0.5, 0.42])
            inset.semilogy(it[:-1][ok], gap[ok], color="C1", lw=1.2)
            inset.set_title("final minus current", fontsize="small")
            inset.tick_params(labelsize="x-small")
    if len(h):
        ax.axhline(h[-1], color="0.6", lw=0.8, ls=":")
    return fig


# ----------------------------------------------------------------------------- plot_selection


def plot_selection(
    sel: Selection, ax: Axes | None = None, criterion: str | None = None, title: str | None = None
) -> Figure:
    """An information criterion against the number of components, one line per covariance type.

    Lower is better; the best candidate is starred. Candidates that failed (a singular
    covariance) are marked with a cross at the bottom of the axes.

    Parameters
    ----------
    sel : Selection
        The result of :func:`bayesgmm.select`.
    ax : matplotlib Axes, optional
    criterion : {"bic", "aic"}, optional
        Defaults to the criterion the selection used.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    criterion = sel.criterion if criterion is None else criterion
    if criterion not in ("bic", "aic"):
        raise ValueError(f"criterion must be 'bic' or 'aic', got {criterion!r}.")
    fig, ax = _figure_axes(ax, (6.0, 4.0))
    table = sel.table
    types = list(dict.fromkeys(table["covariance_type"]))
    for i, cov in enumerate(types):
        rows = table[table["covariance_type"] == cov].sort_values("n_components")
        k = rows["n_components"].to_numpy()
        y = rows[criterion].to_numpy(dtype=np.float64)
        color = f"C{i}"
        ax.plot(k, y, marker="o", ms=4, ls=_STYLES.get(cov, "-"), color=color, label=cov)
        failed = ~np.isfinite(y)
        if np.any(failed):
            ax.plot(
                k[failed],
                np.zeros(failed.sum()),
                "x",
                color=color,
                ms=8,
                mew=2,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
            )
    best = table.loc[table[criterion].idxmin()]
    ax.plot(
        best["n_components"],
        best[criterion],
        marker="*",
        ms=16,
        color="gold",
        markeredgecolor="black",
        ls="",
        zorder=5,
        label=f"best: K={int(best['n_components'])}, {best['covariance_type']}",
    )
    ax.set_xlabel("number of components K")
    ax.set_ylabel(f"{criterion.upper()} (lower is better)")
    ax.set_xticks(sorted(set(table["n_components"].astype(int))))
    ax.legend(frameon=False, fontsize="small")
    if title:
        ax.set_title(title)
    return fig


# ----------------------------------------------------------------------------- saving


def save_figures(figures: dict[str, Figure], folder, dpi: int = 110) -> list[str]:
    """Save ``{file name: figure}`` into ``folder`` (created if needed) and close the figures.

    Returns the file names, in order.
    """
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        fig.savefig(folder / name, dpi=dpi)
        plt.close(fig)
    return list(figures)


# ----------------------------------------------------------------------------- plot_compare


def plot_compare(res: FitResult, post, **kwargs) -> Figure:
    """EM estimates against the NUTS posterior; see :func:`bayesgmm.posterior.plot_compare`."""
    from .posterior import plot_compare as _plot_compare

    return _plot_compare(res, post, **kwargs)
