"""Quick start: a two-component mixture of the Old Faithful data by MAP-EM.

Fits the mixture, prints its parameters and the membership probabilities of a new eruption, and
draws the fit and the EM objective per iteration.

    python examples/quickstart_em.py --out figures/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import bayesgmm as bg
from bayesgmm.plotting import plot_history, plot_mixture, save_figures


def main(out_dir: str | Path | None = None, n_components: int = 2, show: bool = False):
    """Fit, print, plot; figures go to ``out_dir`` when given. Returns the FitResult."""
    X = bg.datasets.load_faithful()  # (272, 2): eruption time and waiting time, minutes
    mixture = bg.Mixture(n_components, covariance_type="full", prior="default")
    res = mixture.fit_em(X, n_init=3, rng_key=0)
    print(res)
    print("weights:", np.round(res.weights, 3))
    print("means (eruptions, waiting):\n", np.round(res.means, 2))
    print(f"BIC: {res.bic(X):.1f}")

    new = np.array([[3.0, 70.0]])  # a 3-minute eruption after a 70-minute wait
    proba = np.asarray(res.predict_proba(new))[0]
    print("membership probabilities of", new[0].tolist(), "->", np.round(proba, 3))

    names = ["eruptions", "waiting"]
    figures = {
        "quickstart_mixture.png": plot_mixture(res, X, feature_names=names),
        "quickstart_history.png": plot_history(res),
    }
    if out_dir is not None:
        print("wrote", ", ".join(save_figures(figures, out_dir)), "to", out_dir)
    elif show:
        import matplotlib.pyplot as plt

        plt.show()
    return res


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for the figures (default: show them)")
    args = parser.parse_args()
    main(out_dir=args.out, show=args.out is None)
