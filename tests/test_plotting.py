"""The figures of bayesgmm.plotting: each returns a Figure, draws into a given Axes, and works
for one, two and three features."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import bayesgmm as bg  # noqa: E402
from bayesgmm import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def fits(faithful, blobs3d):
    """(result, data) for one, two and three features.

    The figures only need parameters, so these are set by hand (``FitResult.from_params``, no
    EM to compile), except for the two-feature one, whose EM history ``plot_history`` draws.
    """
    galaxies = bg.datasets.load_galaxies()
    one = bg.FitResult.from_params(
        bg.Mixture(3),
        weights=[0.1, 0.85, 0.05],
        means=[9700.0, 21400.0, 33000.0],
        covariances=np.array([600.0, 2100.0, 850.0])[:, None, None] ** 2,
    )
    three = bg.FitResult.from_params(
        bg.Mixture(3, "diag"),
        weights=[0.4, 1 / 3, 0.6 - 1 / 3],
        means=[[0.0, 0.0, 0.0], [4.0, 1.0, -2.0], [-3.0, 4.0, 2.0]],
        covariances=[[0.6, 0.5, 0.7], [0.9, 0.7, 1.0], [1.2, 1.0, 1.1]],
    )
    two = bg.Mixture(2, prior="default").fit_em(faithful)
    return {1: (one, galaxies), 2: (two, faithful), 3: (three, blobs3d)}


@pytest.mark.parametrize("d", [1, 2, 3])
def test_plot_mixture_returns_a_figure(fits, d):
    res, X = fits[d]
    fig = plotting.plot_mixture(res, X)
    assert isinstance(fig, Figure)
    n_panels = len([ax for ax in fig.axes if ax.axison])
    assert n_panels == {1: 1, 2: 1, 3: 6}[d]  # 3-D: a corner plot of 3 + 3 panels


@pytest.mark.parametrize("d", [1, 2])
def test_plot_mixture_draws_into_the_given_axes(fits, d):
    res, X = fits[d]
    fig, (ax0, ax1) = plt.subplots(1, 2)
    assert plotting.plot_mixture(res, X, ax=ax1) is fig
    assert not ax0.has_data() and ax1.has_data()


def test_plot_mixture_2d_content(fits):
    res, X = fits[2]
    fig, ax = plt.subplots()
    plotting.plot_mixture(res, X, ax=ax, feature_names=["eruptions", "waiting"])
    # 3 ellipses (1, 2, 3 sigma) per component, points coloured by a blend of component colours.
    assert len(ax.patches) == 3 * res.n_components
    points = ax.collections[0]
    assert len(points.get_offsets()) == len(X)
    colors = points.get_facecolors()[:, :3]
    proba = np.asarray(res.predict_proba(X))
    expected = proba @ plotting.component_colors(res.n_components)
    np.testing.assert_allclose(colors, expected, atol=1e-6)
    assert ax.get_xlabel() == "eruptions" and ax.get_ylabel() == "waiting"


def test_plot_mixture_2d_contours(fits):
    res, X = fits[2]
    fig, ax = plt.subplots()
    plotting.plot_mixture(res, X, ax=ax, style="contours")
    assert not ax.patches  # contours instead of ellipses
    assert len(ax.collections) >= 2


def test_plot_mixture_1d_density_integrates_to_one(fits):
    res, X = fits[1]
    fig, ax = plt.subplots()
    plotting.plot_mixture(res, X, ax=ax)
    mixture = next(line for line in ax.lines if line.get_label() == "mixture")
    x, y = mixture.get_data()
    assert np.trapezoid(y, x) == pytest.approx(1.0, abs=0.02)
    components = [line for line in ax.lines if line.get_label() != "mixture"]
    assert len(components) == res.n_components
    np.testing.assert_allclose(sum(c.get_ydata() for c in components), y, rtol=1e-9)


def test_plot_mixture_3d_needs_a_figure_not_an_axes(fits):
    res, X = fits[3]
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="grid"):
        plotting.plot_mixture(res, X, ax=ax)
    target = plt.figure()
    assert plotting.plot_mixture(res, X, ax=target, feature_names=["a", "b", "c"]) is target


def test_plot_mixture_checks_its_input(fits):
    res, X = fits[2]
    with pytest.raises(ValueError, match="shape"):
        plotting.plot_mixture(res, X[:, :1])
    with pytest.raises(ValueError, match="feature_names"):
        plotting.plot_mixture(res, X, feature_names=["only one"])
    with pytest.raises(ValueError, match="style"):
        plotting.plot_mixture(res, X, style="heatmap")


def test_plot_history(fits):
    res, _ = fits[2]
    fig = plotting.plot_history(res)
    assert isinstance(fig, Figure)
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), res.history)
    fig2, ax = plt.subplots()
    assert plotting.plot_history(res, ax=ax) is fig2


def test_plot_history_of_a_result_without_iterations(fits):
    res, _ = fits[1]  # from_params: no EM run, an empty history
    assert isinstance(plotting.plot_history(res), Figure)


def _selection(res):
    """A hand-made Selection (no fitting) with one failed candidate."""
    rows = []
    for cov, offset in (("full", 0.0), ("diag", 30.0)):
        for k, bic in zip((1, 2, 3), (2600.0, 2320.0, 2340.0), strict=True):
            rows.append(
                {
                    "n_components": k,
                    "covariance_type": cov,
                    "bic": bic + offset,
                    "aic": bic + offset - 40,
                    "error": "",
                }
            )
    rows[-1].update(bic=np.nan, aic=np.nan, error="singular")
    return bg.Selection(table=pd.DataFrame(rows), best=res, criterion="bic")


def test_plot_selection(fits):
    res, _ = fits[2]
    sel = _selection(res)
    fig = plotting.plot_selection(sel)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert "full" in labels and "diag" in labels
    assert any(label.startswith("best: K=2, full") for label in labels)
    fig2, (a, b) = plt.subplots(1, 2)
    assert plotting.plot_selection(sel, ax=b, criterion="aic") is fig2
    assert "AIC" in b.get_ylabel()
    with pytest.raises(ValueError, match="criterion"):
        plotting.plot_selection(sel, criterion="dic")


def test_plot_compare_delegates_to_compare(monkeypatch):
    import bayesgmm.posterior as compare

    seen = {}

    def fake(res, post, **kwargs):
        seen.update(res=res, post=post, kwargs=kwargs)
        return "figure"

    monkeypatch.setattr(compare, "plot_compare", fake)
    assert plotting.plot_compare("res", "post", hdi_prob=0.9) == "figure"
    assert seen == {"res": "res", "post": "post", "kwargs": {"hdi_prob": 0.9}}


def test_importing_bayesgmm_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, bayesgmm, bayesgmm.plotting; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
