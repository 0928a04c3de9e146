"""Simulation-based calibration, small: the smoke version of ``benchmarks/sbc.py``.

A few tens of replicates only catch gross miscalibration (a sampler that ignores the data, the
wrong prior, a broken transform): the threshold is a chi-square p-value below 1e-4 on 5 bins.
The full runs (>= 200 replicates per setting) and their results are in ``docs/sbc.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import sbc  # noqa: E402
from gibbs_reference import draw_prior, gibbs_sample, log_likelihood, simulate  # noqa: E402

GROSS = 1e-4


def _args(**kwargs):
    args = vars(sbc.parser().parse_args([]))
    args.update(kwargs)
    return SimpleNamespace(**args)


def _sbc(setting, sampler, replicates, args):
    per_q: dict[str, list[int]] = {}
    for rep in range(replicates):
        for q, r in sbc.replicate(setting, rep, sampler, args)["ranks"].items():
            per_q.setdefault(q, []).append(r)
    rng = np.random.default_rng(0)
    return {q: sbc.uniformity(np.array(r), args.draws, args.bins, rng) for q, r in per_q.items()}


def test_nuts_smoke_sbc_1d_two_components(x64):
    """30 replicates, K=2, 1-D, n=40, the explicit prior of benchmarks/sbc.py."""
    args = _args(draws=19, bins=5, nuts_chains=1, nuts_warmup=150, nuts_samples=190)
    setting = sbc.SETTINGS["K2-D1-full"]
    pvalues = _sbc(setting, "nuts", 30, args)
    print({q: round(p[0], 4) for q, p in pvalues.items()})
    assert set(pvalues) >= {"loglik", "logdens_1", "weight_0", "mean_0", "mean_1"}
    bad = {q: p for q, p in pvalues.items() if p[0] < GROSS}
    assert not bad, bad


def test_smoke_sbc_detects_gross_miscalibration(monkeypatch):
    """The same smoke check fails for a sampler that sees only a quarter of the rows (its
    posterior is too wide, so the truth's log-likelihood ranks pile up at the top). The Gibbs
    reference plays that sampler, so that the check is cheap."""
    args = _args(draws=19, bins=5, gibbs_burn=30, gibbs_iter=100)
    setting = sbc.SETTINGS["K2-D1-full"]
    run_gibbs = sbc.run_gibbs
    monkeypatch.setitem(sbc.SAMPLERS, "gibbs", lambda X, *a: run_gibbs(X[: len(X) // 4], *a))
    pvalues = _sbc(setting, "gibbs", 30, args)
    print({q: round(p[0], 6) for q, p in pvalues.items()})
    assert pvalues["loglik"][0] < GROSS


@pytest.mark.slow
def test_nuts_log_likelihood_matches_gibbs_replicate_by_replicate(x64):
    """The sharper check behind the SBC: on data simulated from the prior, the posterior mean of
    the total log-likelihood under NUTS and under the independent Gibbs sampler agree within
    Monte Carlo error, one replicate at a time, and on average (a systematic shift of 0.2
    posterior sd, the size of the bias once reported, would be ~7 standard errors here)."""
    args = _args(nuts_chains=2, nuts_warmup=300, nuts_samples=400)
    setting = sbc.SETTINGS["K2-D1-full"]
    shifts = []
    for rep in range(12):
        rng = np.random.default_rng([11, rep])
        truth = draw_prior(rng, setting.prior(), 2, "full")
        X = simulate(rng, truth, setting.n_rows, "full")
        nuts_draws, _ = sbc.run_nuts(X, setting, rep, args)
        gibbs = gibbs_sample(X, 2, setting.prior(), "full", 1500, rng, burn=300)
        ll_n = [
            log_likelihood(X, {k: v[i] for k, v in nuts_draws.items()}, "full")
            for i in range(0, 800, 4)
        ]
        ll_g = [
            log_likelihood(X, {k: v[i] for k, v in gibbs.items()}, "full")
            for i in range(0, 1200, 6)
        ]
        sd = np.std(ll_g)
        shift = (np.mean(ll_n) - np.mean(ll_g)) / sd
        # Each mean rests on ~200 nearly independent draws: se of the difference ~0.1 sd.
        assert abs(shift) < 0.5, (rep, shift)
        shifts.append(shift)
    assert abs(np.mean(shifts)) < 0.12, shifts
