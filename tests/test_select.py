"""bg.select: the table, the criterion, and the pick, against sklearn's formulas."""

import numpy as np
import pandas as pd
import pytest

import bayesgmm as bg

COLUMNS = ["n_components", "covariance_type", "log_likelihood", "n_parameters", "bic", "aic"]


@pytest.fixture(scope="module")
def small_selection(faithful):
    return bg.select(
        faithful, n_components=range(1, 4), covariance_types=("full", "tied", "diag", "spherical")
    )


def test_table_layout(small_selection):
    t = small_selection.table
    assert isinstance(t, pd.DataFrame)
    assert set(COLUMNS) <= set(t.columns)
    assert len(t) == 3 * 4
    got = set(zip(t["n_components"].astype(int), t["covariance_type"], strict=True))
    assert got == {(k, c) for k in (1, 2, 3) for c in ("full", "tied", "diag", "spherical")}


def test_table_formulas(ref, faithful, small_selection):
    t = small_selection.table
    n = len(faithful)
    for _, row in t.iterrows():
        k = ref.n_parameters(int(row["n_components"]), 2, row["covariance_type"])
        assert int(row["n_parameters"]) == k
        ll = float(row["log_likelihood"])
        # tolerance: float32 table values, rtol 1e-6
        np.testing.assert_allclose(float(row["bic"]), -2 * ll + k * np.log(n), rtol=1e-6)
        np.testing.assert_allclose(float(row["aic"]), -2 * ll + 2 * k, rtol=1e-6)


def test_best_is_minimum_bic(faithful, small_selection):
    t, best = small_selection.table, small_selection.best
    row = t.loc[t["bic"].astype(float).idxmin()]
    assert best.covariance_type == row["covariance_type"]
    assert np.asarray(best.weights).shape == (int(row["n_components"]),)
    np.testing.assert_allclose(float(best.log_likelihood), float(row["log_likelihood"]), rtol=1e-6)
    np.testing.assert_allclose(float(best.bic(faithful)), float(row["bic"]), rtol=1e-6)


def test_one_component_is_the_gaussian_ml(ref, faithful, small_selection):
    """K=1 has a closed form: the sample mean and the biased sample covariance (rtol 1e-4)."""
    t = small_selection.table
    ll = float(
        t[(t["n_components"] == 1) & (t["covariance_type"] == "full")]["log_likelihood"].iloc[0]
    )
    C = np.cov(faithful.T, bias=True)
    want = ref.log_likelihood(faithful, [1.0], faithful.mean(0)[None], C[None], "full")
    np.testing.assert_allclose(ll, want, rtol=1e-4)


def test_aic_criterion(faithful):
    sel = bg.select(faithful, n_components=range(1, 4), covariance_types=("full",), criterion="aic")
    t = sel.table
    row = t.loc[t["aic"].astype(float).idxmin()]
    assert np.asarray(sel.best.weights).shape == (int(row["n_components"]),)


def test_unknown_criterion(faithful):
    with pytest.raises(ValueError, match="criterion"):
        bg.select(
            faithful, n_components=range(1, 3), covariance_types=("full",), criterion="banana"
        )


@pytest.mark.slow
def test_faithful_mclust_eee3(faithful):
    """mclust's published pick for faithful: EEE (tied) with 3 components, log-lik -1126.326,
    11 parameters, BIC +2314.3 in sklearn's sign convention (tolerances 0.01 / 0.05)."""
    sel = bg.select(
        faithful, n_components=range(2, 5), covariance_types=("full", "tied"), n_init=10
    )
    best = sel.best
    assert best.covariance_type == "tied"
    assert np.asarray(best.weights).shape == (3,)
    assert abs(float(best.log_likelihood) - (-1126.32)) < 0.01 + 0.01  # + float32 slack
    assert abs(float(best.bic(faithful)) - 2314.3) < 0.05
