"""scikit-learn pipeline: scaling, a grid search over the number of components, a MAP prior.

``bayesgmm.sklearn.GaussianMixture`` replaces ``sklearn.mixture.GaussianMixture`` with a change
of import: the pipeline, the cross-validated grid search (scored by the held-out mean
log-likelihood), ``clone`` and pickling work unchanged, and ``prior="default"`` is one
parameter more of the search.

    python examples/sklearn_pipeline.py --out figures/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import bayesgmm as bg
from bayesgmm.plotting import plot_mixture, save_figures
from bayesgmm.sklearn import GaussianMixture  # was: from sklearn.mixture import GaussianMixture


def main(
    out_dir: str | Path | None = None,
    max_components: int = 4,
    n_splits: int = 3,
    priors: tuple = (None, "default"),
    show: bool = False,
):
    """Search, print, plot; figures go to ``out_dir`` when given. Returns the fitted search."""
    X = np.asarray(bg.datasets.load_faithful(), dtype=np.float64)  # (272, 2), minutes
    pipe = Pipeline(
        [("scale", StandardScaler()), ("gmm", GaussianMixture(n_init=2, random_state=0))]
    )
    grid = {
        "gmm__n_components": list(range(1, max_components + 1)),
        "gmm__prior": list(priors),
    }
    search = GridSearchCV(pipe, grid, cv=KFold(n_splits, shuffle=True, random_state=0))
    search.fit(X)

    print("held-out mean log-likelihood per row (higher is better):")
    results = search.cv_results_
    for params, score in zip(results["params"], results["mean_test_score"], strict=True):
        k, prior = params["gmm__n_components"], params["gmm__prior"]
        print(f"  K={k}  prior={prior!s:8}  {score:8.4f}")
    print("best:", search.best_params_)

    best = search.best_estimator_
    gmm = best["gmm"]
    print("weights:", np.round(gmm.weights_, 3), " converged:", gmm.converged_)
    new = np.array([[3.0, 70.0]])  # a 3-minute eruption after a 70-minute wait
    print(
        "membership probabilities of", new[0].tolist(), "->", np.round(best.predict_proba(new), 3)
    )

    # The bayesgmm fit behind the estimator (on the scaled data), e.g. for its plots or NUTS.
    # The estimator switches float64 on for its own calls only; its FitResult holds float64
    # JAX arrays, so used directly it wants float64 on too.
    Z = best["scale"].transform(X)
    with jax.enable_x64(True):
        figures = {
            "sklearn_pipeline_mixture.png": plot_mixture(
                gmm.fitted_, Z, feature_names=["eruptions (scaled)", "waiting (scaled)"]
            )
        }
    if out_dir is not None:
        print("wrote", ", ".join(save_figures(figures, out_dir)), "to", out_dir)
    elif show:
        import matplotlib.pyplot as plt

        plt.show()
    return search


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for the figures (default: show them)")
    args = parser.parse_args()
    main(out_dir=args.out, show=args.out is None)
