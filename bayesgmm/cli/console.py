"""What the command line prints: one-line errors and warnings, headings, and the fit tables."""

from __future__ import annotations

import contextlib
import io
import sys
import warnings

import numpy as np


class CLIError(Exception):
    """A problem with the command's input, reported as one line without a traceback."""


# ----------------------------------------------------------------------------- messages


def one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def error(message: str) -> None:
    print(f"bayesgmm: error: {one_line(message)}", file=sys.stderr, flush=True)


def heading(text: str) -> None:
    print(f"\n{text}\n{'-' * len(text)}")


@contextlib.contextmanager
def one_line_warnings():
    """Show warnings as one line each on stderr; hide the libraries' informational noise."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        for module in ("jax", "numpyro", "arviz", "xarray", "arviz_base", "arviz_stats"):
            warnings.filterwarnings("ignore", module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"bayesgmm: warning: {one_line(message)}", file=sys.stderr)


def progress_bar() -> bool:
    """NUTS progress bar on a terminal only (not in logs, pipes or tests)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Tee(io.TextIOBase):
    """Write to several text streams at once (the terminal and the demo's summary.txt)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()


# ----------------------------------------------------------------------------- fits


def fmt(x: float) -> str:
    return f"{x:.4g}"


def describe_fit(res) -> str:
    kind = "maximum likelihood" if res.prior is None else "MAP (default prior)"
    state = (
        f"converged in {res.n_iter} iterations"
        if res.converged
        else f"NOT converged after {res.n_iter} iterations"
    )
    return f"K={res.n_components}, {res.covariance_type} covariances, {kind}, {state}"


def short(res) -> str:
    return f"K={res.n_components}, {res.covariance_type}"


def variances(res) -> np.ndarray:
    """Every component's variance of every feature, shape (K, D)."""
    from ..params import feature_variances

    cov = np.asarray(res.covariances, np.float64)
    return feature_variances(cov, res.covariance_type, res.n_components, res.n_features_in)


def min_relative_variance(res, X) -> float:
    """The smallest component variance of any feature, divided by that feature's variance."""
    return float(np.min(variances(res) / np.var(X, axis=0)))


def components_table(res, X, names):
    """One row per component: weight, rows assigned, and each feature's mean and sd."""
    import pandas as pd

    k = res.n_components
    sd = np.sqrt(variances(res))
    labels = np.asarray(res.predict(X))
    table = pd.DataFrame(
        {
            "component": np.arange(k),
            "weight": np.asarray(res.weights, np.float64),
            "n_assigned": np.bincount(labels, minlength=k),
        }
    )
    means = np.asarray(res.means, np.float64)
    for j, name in enumerate(names):
        table[f"mean_{name}"] = means[:, j]
    for j, name in enumerate(names):
        table[f"sd_{name}"] = sd[:, j]
    return table


def fit_summary(res, X, names) -> str:
    lines = [
        f"log-likelihood {res.log_likelihood:.6g}   BIC {res.bic(X):.6g}   AIC {res.aic(X):.6g}"
        f"   ({res.n_parameters} parameters, {X.shape[0]} rows)",
        "",
        components_table(res, X, names).to_string(index=False, float_format=fmt),
    ]
    return "\n".join(lines)


def selection_table(sel, X, top: int) -> str:
    t = sel.table.copy()
    crit = sel.criterion
    t["min_rel_var"] = [
        min_relative_variance(sel.fits[(k, c)], X) if (k, c) in sel.fits else np.nan
        for k, c in zip(t["n_components"], t["covariance_type"], strict=True)
    ]
    t = t.sort_values(crit, na_position="last").head(top)
    cols = ["n_components", "covariance_type", "log_likelihood", crit, "min_rel_var", "converged"]
    t = t[cols].rename(
        columns={
            "n_components": "K",
            "covariance_type": "covariance",
            "log_likelihood": "loglik",
            "min_rel_var": "min var/data var",
        }
    )
    failed = int(sel.table[crit].isna().sum())
    one_decimal = "{:.1f}".format
    formatters = {"loglik": one_decimal, crit: one_decimal, "min var/data var": "{:.2g}".format}
    text = t.to_string(index=False, formatters=formatters)
    if failed:
        text += f"\n({failed} candidate(s) failed with a singular covariance)"
    return text


def warn_if_degenerate(res, X, names) -> bool:
    """Print and return True if ``res`` is degenerate by select's rule.

    The rule is :func:`bayesgmm.select.degenerate_reason` (a variance on the ``reg_covar``
    floor, or numerically singular), so the command line and ``select``'s ``degenerate``
    column always agree.
    """
    from ..select import degenerate_reason  # the surface; imported when a fit is reported

    reason = degenerate_reason(res)
    if not reason:
        return False
    var = variances(res)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = var / np.var(X, axis=0)
    comp, feat = np.unravel_index(np.nanargmin(rel), rel.shape)
    mean = float(np.asarray(res.means)[comp, feat])
    print(
        f"    DEGENERATE: {reason}.\n"
        f"    Its smallest variance is on '{names[feat]}' (component {comp}, at "
        f"{names[feat]} = {mean:.6g}; the data's variance is {np.var(X[:, feat]):.3g}),\n"
        "    where the likelihood grows without bound: that spike, not a better fit, wins the\n"
        "    BIC. A prior (--prior default) prevents it."
    )
    return True


def posterior_summary(post, table) -> str:
    stats = post["sample_stats"]
    lines = []
    if "diverging" in stats:
        div = int(np.asarray(stats["diverging"]).sum())
        lines.append(f"divergent transitions: {div}")
    if "r_hat" in table:
        lines.append(
            f"largest R-hat: {table['r_hat'].max():.3f} (near 1 when the chains agree; above "
            "1.01, run more draws)"
        )
    if "ess_bulk" in table:
        lines.append(f"smallest bulk ESS: {table['ess_bulk'].min():.0f}")
    if "em_in_hdi" in table:
        inside = int(table["em_in_hdi"].sum())
        lines.append(
            f"the EM estimate lies inside the posterior's HDI for {inside} of {len(table)} "
            "parameters"
        )
    formatters = {
        "r_hat": "{:.3f}".format,
        "ess_bulk": "{:.0f}".format,
        "ess_tail": "{:.0f}".format,
    }
    lines += ["", table.to_string(float_format=fmt, formatters=formatters)]
    return "\n".join(lines)
