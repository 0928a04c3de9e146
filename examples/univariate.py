"""One dimension: EM recovers two overlapping Gaussian sources, and the galaxies data.

Draws ``n_per_source`` points from each of N(0, 2^2) and N(5, 5^2), fits a two-component mixture
and compares the estimates with the truth; then chooses the number of components of the
galaxy velocities (Roeder 1990) by BIC under the default prior.

    python examples/univariate.py --out figures/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import bayesgmm as bg
from bayesgmm.plotting import plot_mixture, plot_selection, save_figures


def main(
    out_dir: str | Path | None = None,
    n_per_source: int = 2000,
    max_components: int = 6,
    seed: int = 0,
    show: bool = False,
):
    """Returns ``(fit of the two sources, selection on the galaxies)``."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0.0, 2.0, n_per_source), rng.normal(5.0, 5.0, n_per_source)])
    res = bg.Mixture(2).fit_em(x, n_init=3, rng_key=seed)  # maximum likelihood is fine here
    order = np.argsort(np.asarray(res.means)[:, 0])
    print("           truth            estimate")
    for k, (mu, sd) in zip(order, ((0.0, 2.0), (5.0, 5.0)), strict=True):
        est_mu = float(res.means[k, 0])
        est_sd = float(np.sqrt(res.covariances[k, 0, 0]))
        w = float(res.weights[k])
        print(f"  N({mu:.0f}, {sd:.0f}^2), w=0.5   N({est_mu:.2f}, {est_sd:.2f}^2), w={w:.2f}")

    velocity = bg.datasets.load_galaxies() / 1000  # 82 velocities, in 1000 km/s
    sel = bg.select(
        velocity, range(1, max_components + 1), covariance_types=["full"], prior="default"
    )
    best = sel.best
    print(f"galaxies: BIC chooses K={best.n_components}")
    print(sel.table[["n_components", "log_likelihood", "bic"]].to_string(index=False))

    figures = {
        "univariate_sources.png": plot_mixture(res, x, feature_names=["x"], title="two sources"),
        "univariate_galaxies.png": plot_mixture(
            best, velocity, feature_names=["velocity (1000 km/s)"], bins=25, title="galaxies"
        ),
        "univariate_galaxies_bic.png": plot_selection(sel, title="galaxies: BIC"),
    }
    if out_dir is not None:
        print("wrote", ", ".join(save_figures(figures, out_dir)), "to", out_dir)
    elif show:
        import matplotlib.pyplot as plt

        plt.show()
    return res, sel


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for the figures (default: show them)")
    args = parser.parse_args()
    main(out_dir=args.out, show=args.out is None)
