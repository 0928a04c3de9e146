"""``bg.compare`` and the posterior figures, on synthetic posteriors built here with ArviZ.

The posteriors are made by hand (no NUTS), in the layout ``Mixture.sample_posterior`` documents,
so these tests are fast and check the table against ArviZ's own summary and against plain NumPy.
"""

from __future__ import annotations

import arviz as az
import matplotlib
import numpy as np
import pytest
from arviz_base import from_dict, rc_context

import bayesgmm as bg
from bayesgmm.posterior import plot_diagnostics, plot_forest

matplotlib.use("Agg")

COV_DIMS = {
    "full": ["component", "feature", "feature_"],
    "tied": ["feature", "feature_"],
    "diag": ["component", "feature"],
    "spherical": ["component"],
}


def _em_params(covariance_type, k, d, rng):
    weights = rng.dirichlet(np.full(k, 5.0))
    means = rng.normal(scale=3.0, size=(k, d))
    a = rng.normal(size=(k, d, d))
    full = a @ np.swapaxes(a, 1, 2) + d * np.eye(d)
    cov = {
        "full": full,
        "tied": full[0],
        "diag": np.diagonal(full, axis1=1, axis2=2).copy(),
        "spherical": np.trace(full, axis1=1, axis2=2) / d,
    }[covariance_type]
    return {"weights": weights, "means": means, "covariances": cov}


def _synthetic_posterior(covariance_type, k=2, d=2, chains=4, draws=250, seed=0):
    """EM-like parameters and a DataTree of draws scattered around them (symmetric matrices)."""
    rng = np.random.default_rng(seed)
    em = _em_params(covariance_type, k, d, rng)
    shape = (chains, draws)
    w = em["weights"] * np.exp(0.05 * rng.normal(size=shape + (k,)))
    w /= w.sum(-1, keepdims=True)
    mu = em["means"] + 0.1 * rng.normal(size=shape + (k, d))
    cov = em["covariances"] * np.exp(0.1 * rng.normal(size=shape + em["covariances"].shape))
    if covariance_type in ("full", "tied"):
        cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))
    n = 120
    dt = from_dict(
        {
            "posterior": {"weights": w, "means": mu, "covariances": cov},
            "observed_data": {"obs": rng.normal(size=(n, d))},
        },
        dims={
            "weights": ["component"],
            "means": ["component", "feature"],
            "covariances": COV_DIMS[covariance_type],
            "obs": ["obs_id", "feature"],
        },
        coords={
            "component": np.arange(k),
            "feature": np.arange(d),
            "feature_": np.arange(d),
            "obs_id": np.arange(n),
        },
    )
    return em, dt


def _expected_labels(covariance_type, k, d):
    labels = [f"weights[{i}]" for i in range(k)]
    labels += [f"means[{i}, {j}]" for i in range(k) for j in range(d)]
    if covariance_type == "full":
        labels += [
            f"covariances[{c}, {i}, {j}]" for c in range(k) for i in range(d) for j in range(i + 1)
        ]
    elif covariance_type == "tied":
        labels += [f"covariances[{i}, {j}]" for i in range(d) for j in range(i + 1)]
    elif covariance_type == "diag":
        labels += [f"covariances[{c}, {i}]" for c in range(k) for i in range(d)]
    else:
        labels += [f"covariances[{c}]" for c in range(k)]
    return labels


def _value_at(params, label):
    name, _, rest = label.partition("[")
    idx = tuple(int(i) for i in rest.rstrip("]").split(", ")) if rest else ()
    return np.asarray(params[name], np.float64)[idx], name, idx


def _numpy_hdi(x, prob):
    """Shortest interval between two draws holding floor(prob * n) + 1 draws (ArviZ's rule)."""
    x = np.sort(np.ravel(x))
    m = min(int(np.floor(prob * len(x))), len(x) - 1)
    widths = x[m:] - x[: len(x) - m]
    i = int(np.argmin(widths))
    return x[i], x[i + m]


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_compare_matches_arviz_summary_in_float64(covariance_type):
    em, post = _synthetic_posterior(covariance_type, k=3, d=2)
    table = bg.compare(em, post, ci_prob=0.94)

    assert list(table.columns) == [
        "em",
        "mean",
        "sd",
        "hdi_low",
        "hdi_high",
        "r_hat",
        "ess_bulk",
        "em_in_hdi",
    ]
    for col in ["em", "mean", "sd", "hdi_low", "hdi_high", "r_hat", "ess_bulk"]:
        assert table[col].dtype == np.float64, col
    assert table["em_in_hdi"].dtype == bool
    assert list(table.index) == _expected_labels(covariance_type, 3, 2)

    ref = az.summary(post, ci_kind="hdi", ci_prob=0.94, round_to="none").loc[table.index]
    pairs = {
        "mean": "mean",
        "sd": "sd",
        "hdi_low": "hdi94_lb",
        "hdi_high": "hdi94_ub",
        "r_hat": "r_hat",
        "ess_bulk": "ess_bulk",
    }
    for ours, theirs in pairs.items():
        np.testing.assert_allclose(
            table[ours].to_numpy(),
            np.asarray(ref[theirs], np.float64),
            rtol=1e-12,
            atol=0,
            err_msg=ours,
        )


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_compare_against_numpy(covariance_type):
    em, post = _synthetic_posterior(covariance_type, k=2, d=3, seed=3)
    table = bg.compare(em, post, ci_prob=0.9)
    for label, row in table.iterrows():
        value, name, idx = _value_at(em, label)
        draws = post.posterior[name].values[(slice(None), slice(None)) + idx]
        assert row["em"] == value, label
        np.testing.assert_allclose(row["mean"], draws.mean(), rtol=1e-12, err_msg=label)
        np.testing.assert_allclose(row["sd"], draws.std(ddof=1), rtol=1e-10, err_msg=label)
        lo, hi = _numpy_hdi(draws, 0.9)
        assert (row["hdi_low"], row["hdi_high"]) == (lo, hi), label
        assert row["em_in_hdi"] == (lo <= value <= hi), label


def test_em_components_are_matched_to_the_posterior_order():
    em, post = _synthetic_posterior("full", k=3, d=2, seed=5)
    order = [2, 0, 1]
    permuted = {
        "weights": em["weights"][order],
        "means": em["means"][order],
        "covariances": em["covariances"][order],
    }
    a = bg.compare(em, post)
    b = bg.compare(permuted, post)
    np.testing.assert_array_equal(a["em"].to_numpy(), b["em"].to_numpy())
    assert a["em_in_hdi"].all()


def test_em_in_hdi_flags_an_estimate_outside_the_interval():
    em, post = _synthetic_posterior("diag", k=2, d=2, seed=7)
    far = dict(em, means=em["means"] + np.array([[0.0, 5.0], [0.0, 0.0]]))
    table = bg.compare(far, post)
    assert not table.loc["means[0, 1]", "em_in_hdi"]
    assert table.drop(index="means[0, 1]")["em_in_hdi"].all()


def test_default_interval_is_arviz_rcparam():
    em, post = _synthetic_posterior("spherical", k=2, d=2, seed=9)
    with rc_context({"stats.ci_prob": 0.5}):
        narrow = bg.compare(em, post)
        ref = az.summary(post, ci_kind="hdi", round_to="none")
    np.testing.assert_array_equal(narrow["hdi_low"], ref.loc[narrow.index, "hdi50_lb"])
    wide = bg.compare(em, post, ci_prob=0.99)
    assert (wide["hdi_high"] - wide["hdi_low"] > narrow["hdi_high"] - narrow["hdi_low"]).all()


def test_compare_accepts_a_fit_result():
    mix = bg.Mixture(2, "diag", prior="default")
    res = bg.FitResult.from_params(
        mix, [0.36, 0.64], [[2.04, 54.5], [4.29, 80.0]], [[0.07, 34.0], [0.17, 36.0]]
    )
    rng = np.random.default_rng(0)
    shape = (2, 100)
    post = from_dict(
        {
            "posterior": {
                "weights": np.asarray(res.weights) + 0.01 * rng.normal(size=shape + (2,)),
                "means": np.asarray(res.means) + 0.01 * rng.normal(size=shape + (2, 2)),
                "covariances": np.asarray(res.covariances)
                * (1 + 0.01 * rng.random(shape + (2, 2))),
            }
        },
        dims={
            "weights": ["component"],
            "means": ["component", "feature"],
            "covariances": ["component", "feature"],
        },
    )
    table = bg.compare(res, post)
    np.testing.assert_allclose(table.loc["means[1, 0]", "em"], float(res.means[1, 0]), rtol=1e-6)


def test_compare_errors():
    em, post = _synthetic_posterior("full", k=2, d=2)
    with pytest.raises(ValueError, match="same mixture"):
        bg.compare(_em_params("full", 3, 2, np.random.default_rng(0)), post)
    with pytest.raises(ValueError, match="FitResult or a dict"):
        bg.compare([1, 2, 3], post)
    with pytest.raises(ValueError, match="posterior"):
        bg.compare(em, {"nothing": None})
    with pytest.raises(ValueError, match="ci_prob"):
        bg.compare(em, post, ci_prob=1.5)


def test_figures():
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    em, post = _synthetic_posterior("full", k=2, d=2, chains=2, draws=100)
    try:
        fig = bg.plot_compare(em, post)
        assert isinstance(fig, Figure)
        # One EM reference line per scalar (the posterior holds 2 + 4 + 8 of them).
        vertical = [
            line
            for ax in fig.axes
            for line in ax.get_lines()
            if len(set(np.atleast_1d(line.get_xdata()))) == 1 and len(line.get_xdata()) == 2
        ]
        assert len(vertical) >= 14

        fig = bg.plot_compare(em, post, var_names=["means"], kind="hist")
        assert isinstance(fig, Figure)

        fig = plot_forest(em, post)
        assert isinstance(fig, Figure)
        labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
        assert labels[0] == "weights[0]" and len(labels) == 2 + 4 + 6

        for kind in ("trace", "rank"):
            assert isinstance(plot_diagnostics(post, kind=kind, var_names=["weights"]), Figure)
        with pytest.raises(ValueError, match="kind"):
            plot_diagnostics(post, kind="pairs")
        with pytest.raises(ValueError, match="var_names"):
            bg.plot_compare(em, post, var_names=["precisions"])
    finally:
        plt.close("all")
