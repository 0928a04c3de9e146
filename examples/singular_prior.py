"""Singular covariances under maximum likelihood, and the conjugate prior that prevents them.

The ``waiting`` column of Old Faithful holds whole minutes, with up to 15 eruptions on one value.
A component that settles on such a value can shrink its variance towards zero while its
likelihood grows without bound. This script shows

1. the collapse itself: maximum likelihood without regularisation (``reg_covar=0``) from a start
   near waiting = 78 fails with a clear error, while the MAP fit from the same start is fine;
2. what it does to model selection: with diagonal covariances, the lowest BIC under maximum
   likelihood can belong to a degenerate model (a variance of ``reg_covar`` = 1e-6 on
   ``waiting``; more restarts and larger K find it more often); ``select`` marks such a
   candidate in its ``degenerate`` column, warns, and does not pick it.
   Under the default prior no candidate is degenerate.

    python examples/singular_prior.py --out figures/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import bayesgmm as bg
from bayesgmm.plotting import plot_mixture, plot_selection, save_figures

# A start with a third, narrow component on waiting = 78 minutes (15 eruptions share that value).
START = {
    "weights": np.array([0.6, 0.35, 0.05]),
    "means": np.array([[4.3, 80.0], [2.0, 54.0], [4.0, 78.0]]),
    "covariances": np.array([[0.2, 30.0], [0.1, 30.0], [0.3, 0.5]]),
}


def main(
    out_dir: str | Path | None = None,
    n_components=(1, 2, 3, 4),
    n_init: int = 10,
    seed: int = 0,
    show: bool = False,
):
    """Returns ``(ML selection, MAP selection)``."""
    X = bg.datasets.load_faithful()

    # 1. The collapse, and the prior's fix, from the same start.
    try:
        bg.Mixture(3, "diag", prior=None, reg_covar=0.0).fit_em(X, init_params=START)
    except ValueError as exc:
        print("maximum likelihood:", exc)
    fixed = bg.Mixture(3, "diag", prior="default").fit_em(X, init_params=START)
    print("MAP, default prior: converged =", fixed.converged, "variances:")
    print(np.round(np.asarray(fixed.covariances), 3))

    # 2. BIC with and without the prior. Restarts from random data points find the degenerate
    # maximum-likelihood solutions that one k-means start may miss.
    kw = dict(covariance_types=["diag"], n_init=n_init, init="random_from_data", rng_key=seed)
    sel_ml = bg.select(X, n_components, prior=None, **kw)
    sel_map = bg.select(X, n_components, prior="default", **kw)
    raw = sel_ml.table.loc[sel_ml.table["bic"].idxmin()]
    print(
        f"maximum likelihood: the lowest BIC is K={raw['n_components']}, degenerate: "
        f"{bool(raw['degenerate'])}"
    )
    for label, sel in (("maximum likelihood", sel_ml), ("MAP", sel_map)):
        best = sel.best
        smallest = np.asarray(best.covariances).min(axis=0)
        print(
            f"{label}: BIC picks K={best.n_components} ({best.covariance_type}); smallest "
            f"variances: eruptions {smallest[0]:.3g}, waiting {smallest[1]:.3g}"
        )

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True, layout="constrained")
    plot_selection(sel_ml, ax=axes[0], title="maximum likelihood")
    plot_selection(sel_map, ax=axes[1], title="MAP, default prior")
    fig2, axes2 = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    names = ["eruptions", "waiting"]
    plot_mixture(sel_ml.best, X, ax=axes2[0], feature_names=names, title="ML choice")
    plot_mixture(sel_map.best, X, ax=axes2[1], feature_names=names, title="MAP choice")
    figures = {"singular_bic.png": fig, "singular_choices.png": fig2}
    if out_dir is not None:
        print("wrote", ", ".join(save_figures(figures, out_dir)), "to", out_dir)
    elif show:
        import matplotlib.pyplot as plt

        plt.show()
    return sel_ml, sel_map


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for the figures (default: show them)")
    args = parser.parse_args()
    main(out_dir=args.out, show=args.out is None)
