"""The full posterior by NUTS, next to the MAP-EM estimate, on the same model.

Fits a two-component mixture of Old Faithful by MAP-EM, samples the posterior of the very same
NumPyro model with NUTS (started around the EM fit), and compares the two: the EM estimate
against the posterior mean, standard deviation and 94% HDI of every parameter.

    python examples/nuts_posterior.py --out figures/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import bayesgmm as bg
from bayesgmm.plotting import save_figures


def main(
    out_dir: str | Path | None = None,
    num_chains: int = 2,
    num_warmup: int = 500,
    num_samples: int = 500,
    seed: int = 0,
    show: bool = False,
):
    """Returns ``(FitResult, posterior DataTree, comparison table)``."""
    X = bg.datasets.load_faithful()
    mixture = bg.Mixture(2, "full", prior="default")
    res = mixture.fit_em(X, n_init=3, rng_key=seed)
    post = mixture.sample_posterior(
        X,
        rng_key=seed,
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_samples=num_samples,
        init=res,
        progress_bar=False,
    )
    table = bg.compare(res, post)
    print(table.round(3).to_string())
    print(f"EM inside the HDI for {int(table['em_in_hdi'].sum())} of {len(table)} parameters")
    figures = {"nuts_compare.png": bg.plot_compare(res, post)}
    if out_dir is not None:
        print("wrote", ", ".join(save_figures(figures, out_dir)), "to", out_dir)
    elif show:
        import matplotlib.pyplot as plt

        plt.show()
    return res, post, table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for the figures (default: show them)")
    args = parser.parse_args()
    main(out_dir=args.out, show=args.out is None)
