"""bayesgmm against reference fits of R's mclust 6.0.0 (``tests/data/mclust_reference.json``).

The reference values are facts from a published package, produced by
``benchmarks/mclust_reference.py`` (which records the exact R calls in the file); R is not
needed here. mclust's covariance models VVV, EEE, VVI and VII are bayesgmm's full, tied, diag
and spherical. Tests marked ``xfail(strict=True)`` are the cases issue 9 reports as failing
today: they flip to XPASS (an error under ``strict``) once fixed, and the mark must then go.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import bayesgmm as bg
from bayesgmm.datasets import (
    load_banknote,
    load_diabetes,
    load_faithful,
    load_iris,
    make_four_clusters,
)
from bayesgmm.params import n_parameters

REF = json.loads((Path(__file__).parent / "data" / "mclust_reference.json").read_text())
TYPE_OF = REF["model_names"]  # mclust model name -> bayesgmm covariance type
LOADERS = {
    "faithful": load_faithful,
    "iris": load_iris,
    "diabetes": load_diabetes,
    "banknote": load_banknote,
    "four_clusters": make_four_clusters,
}
SMALL = ("faithful", "iris", "diabetes", "banknote")
OPTIMA = REF["named_optima"]
OPTIMUM_IDS = [f"{o['dataset']}-{o['model']}-K{o['G']}" for o in OPTIMA]
# Absolute log-likelihood slack against mclust's reported optimum (mclust stops at a relative
# change of 1e-5, so its value sits slightly below the optimum; ours may too).
LOGLIK_SLACK = 1e-3


def _cell(part: str, dataset: str, model: str, k: int) -> dict:
    row = REF[part][dataset][model][k - 1]
    assert row["G"] == k
    return row


def _start(params: dict) -> dict:
    return {key: params[key] for key in ("weights", "means", "covariances")}


def test_reference_metadata_and_issue_figures():
    assert REF["mclust_version"] == "6.0.0"
    for o in OPTIMA:
        row = _cell("ml", o["dataset"], o["model"], o["G"])
        # The optima quoted in issue 9 (three decimals) are mclust's reported log-likelihoods.
        assert abs(row["loglik"] - o["issue_loglik"]) < 5e-4, o
        # mclust's best BIC over the grid is the named optimum for each of these data sets.
        best = max(
            (r["bic"], m, r["G"])
            for m, rows in REF["ml"][o["dataset"]].items()
            for r in rows
            if r["bic"] is not None
        )
        if o["dataset"] != "faithful" or o["model"] == "EEE":
            assert best[1:] == (o["model"], o["G"])


@pytest.mark.parametrize("dataset", list(LOADERS))
def test_embedded_data_are_the_reference_data(dataset):
    X = np.asarray(LOADERS[dataset](), dtype=np.float64)
    meta = REF["datasets"][dataset]
    assert list(X.shape) == meta["shape"]
    digest = hashlib.sha256(np.ascontiguousarray(X).tobytes()).hexdigest()
    assert digest == meta["sha256_float64"], f"{dataset} differs from the data mclust fitted"


def test_n_parameters_equal_mclust_df():
    checked = 0
    for part in ("ml", "map"):
        for dataset, by_model in REF[part].items():
            d = REF["datasets"][dataset]["shape"][1]
            for model, rows in by_model.items():
                for row in rows:
                    if row["df"] is None:  # singular in mclust: no df reported
                        continue
                    assert n_parameters(row["G"], d, TYPE_OF[model]) == row["df"], (
                        dataset,
                        model,
                        row["G"],
                    )
                    checked += 1
    assert checked >= 350


def test_singular_cells_carry_a_reason():
    nulls = [
        (dataset, model, row["G"], row["reason"])
        for dataset, by_model in REF["ml"].items()
        for model, rows in by_model.items()
        for row in rows
        if row["loglik"] is None
    ]
    assert nulls, "banknote has singular cells in mclust's ML grid"
    assert all(reason for *_, reason in nulls)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_default_prior_hyperparameters_equal_mclust(covariance_type, x64):
    # float64: the data moments in float32 would differ from R's by float32's resolution.
    model = {t: m for m, t in TYPE_OF.items()}[covariance_type]
    for dataset in SMALL:
        X = LOADERS[dataset]()
        for ref in REF["default_prior"][dataset][model]:
            pp = bg.Mixture(ref["G"], covariance_type, prior="default").resolve_prior(X)
            assert float(pp.kappa) == ref["shrinkage"]
            assert float(pp.dof) == ref["dof"]
            np.testing.assert_allclose(pp.mean, ref["mean"], rtol=1e-13)
            scale = np.asarray(pp.scale, dtype=np.float64)
            expected = np.broadcast_to(np.asarray(ref["scale"], dtype=np.float64), scale.shape)
            np.testing.assert_allclose(scale, expected, rtol=1e-12, err_msg=dataset)


@pytest.mark.parametrize("optimum", OPTIMA, ids=OPTIMUM_IDS)
def test_ml_from_mclust_estimate_reaches_its_optimum(optimum, x64):
    X = LOADERS[optimum["dataset"]]()
    row = _cell("ml", optimum["dataset"], optimum["model"], optimum["G"])
    ctype = TYPE_OF[optimum["model"]]
    # reg_covar=0: pure maximum likelihood, as mclust.
    res = bg.Mixture(optimum["G"], ctype, reg_covar=0.0).fit_em(
        X, init_params=_start(row["params"]), tol=1e-13
    )
    assert res.log_likelihood >= row["loglik"] - LOGLIK_SLACK
    # Both runs continued to a tight tolerance reach the same optimum (mclust's own EM from
    # its estimate to a relative change of 1e-13 gives loglik_tight and params_tight).
    tight = row["params_tight"]
    assert abs(res.log_likelihood - row["loglik_tight"]) < 1e-6 * abs(row["loglik_tight"])
    np.testing.assert_allclose(res.weights, tight["weights"], atol=1e-5)
    spread = X.std(axis=0)
    np.testing.assert_allclose(
        (np.asarray(res.means) - np.asarray(tight["means"])) / spread, 0.0, atol=1e-5
    )
    np.testing.assert_allclose(res.covariances, tight["covariances"], rtol=1e-4, atol=1e-8)


# Default start (one fit_em call, default settings): issue 9 requires mclust's optimum. On
# diabetes (full, K=3) the k-means start ends in a worse local optimum today.
_DEFAULT_START_FAILS = {"diabetes-VVV-K3"}


@pytest.mark.parametrize(
    "optimum",
    [
        pytest.param(
            o,
            id=i,
            marks=pytest.mark.xfail(
                strict=True,
                reason="issue 9: the default k-means start misses mclust's optimum",
            )
            if i in _DEFAULT_START_FAILS
            else (),
        )
        for o, i in zip(OPTIMA, OPTIMUM_IDS, strict=True)
    ],
)
def test_default_fit_reaches_mclust_optimum(optimum, x64):
    X = LOADERS[optimum["dataset"]]()
    row = _cell("ml", optimum["dataset"], optimum["model"], optimum["G"])
    res = bg.Mixture(optimum["G"], TYPE_OF[optimum["model"]]).fit_em(X)
    assert res.log_likelihood >= row["loglik"] - LOGLIK_SLACK, (
        f"default start: {res.log_likelihood:.4f}, mclust: {row['loglik']:.4f}"
    )


@pytest.mark.parametrize("model", ["VVV", "EEE", "VVI", "VII"])
def test_map_from_mclust_estimate_stays_at_mclust_map(model, x64, faithful):
    # With prior = priorControl() mclust maximises the same posterior as prior="default"
    # (flat Dirichlet, conjugate normal-inverse-Wishart/gamma): its tightly converged MAP
    # estimate must be a fixed point of bayesgmm's MAP-EM. Faithful, K = 3.
    row = _cell("map", "faithful", model, 3)
    tight = row["params_tight"]
    res = bg.Mixture(3, TYPE_OF[model], prior="default").fit_em(
        faithful, init_params=_start(tight), tol=1e-13
    )
    assert abs(res.log_likelihood - row["loglik_tight"]) < 1e-6 * abs(row["loglik_tight"])
    np.testing.assert_allclose(res.weights, tight["weights"], atol=1e-5)
    spread = faithful.std(axis=0)
    np.testing.assert_allclose(
        (np.asarray(res.means) - np.asarray(tight["means"])) / spread, 0.0, atol=1e-5
    )
    np.testing.assert_allclose(res.covariances, tight["covariances"], rtol=1e-4, atol=1e-8)
