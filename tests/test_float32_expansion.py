"""float32 fits of large data expand the quadratic forms, and fall back to centring.

The fitting driver runs float32 jobs of at least ``driver._EXPAND_F32_SIZE`` row-component-feature
products with the expanded E-step (about 1.8x faster than float64, benchmarks/README.md) and
fits a job again with rows centred on every component when its components end too far from the
mixture mean for the expansion's cancellation, or singular. Checked here: the expanded float32
fit against the float64 fit from the same start (relative 1e-4: the bound the driver allows is
1e-3 of a log-density, the measured errors are far below it), and the fallback, which must give
exactly the fit that centring from the start gives.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import bayesgmm as bg
from bayesgmm import driver


@pytest.fixture
def centred_runs(monkeypatch):
    """The ``centred`` setting of every job the driver runs, in order."""
    seen: list = []
    run = driver._run_jobs

    def spy(Xt, w, jobs, n_threads):
        seen.extend(job[2].centred for job in jobs)
        return run(Xt, w, jobs, n_threads)

    monkeypatch.setattr(driver, "_run_jobs", spy)
    return seen


def _blobs(n, centres, scales, seed=0):
    rng = np.random.default_rng(seed)
    centres, scales = np.asarray(centres, float), np.asarray(scales, float)
    labels = rng.integers(0, len(centres), n)
    return centres[labels] + scales[labels, None] * rng.standard_normal((n, centres.shape[1]))


def _fit(X, k, covariance_type, x64, max_iter=200, tol=1e-6, init_params=None):
    with jax.enable_x64(x64):
        res = bg.Mixture(k, covariance_type).fit_em(
            X.astype(np.float64 if x64 else np.float32),
            n_init=2,
            max_iter=max_iter,
            tol=tol,
            init_params=init_params,
        )
    return res


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_large_float32_fit_expands_and_matches_float64(centred_runs, covariance_type):
    centres = [[0, 0, 0, 0], [4, -3, 1, 0], [-3, 5, 2, 1], [1, 1, -4, 3]]
    X = _blobs(20_000, centres, [1.0, 0.7, 1.3, 0.5])  # n K D = 320,000: expanded in float32
    # The same start and 30 iterations in both precisions (tol=0): a convergence test would stop
    # float32 earlier, at its objective's resolution, which is not the arithmetic compared here.
    start = {"means": np.asarray(centres, float) + 0.5}
    fits = {}
    for x64 in (True, False):
        centred_runs.clear()
        fits[x64] = _fit(X, 4, covariance_type, x64, max_iter=30, tol=0.0, init_params=start)
    assert centred_runs == [False]  # float32 expanded, not fitted again
    res, ref = fits[False], fits[True]
    for name in ("weights", "means", "covariances"):
        a, b = np.asarray(getattr(res, name)), np.asarray(getattr(ref, name))
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.max(np.abs(b)), err_msg=name)
    assert abs(res.log_likelihood / ref.log_likelihood - 1) < 1e-5


def test_far_tight_component_falls_back_to_centring(centred_runs, monkeypatch):
    # A component of spread 1e-3 about 1e4 of its standard deviations from the others: the
    # expansion would lose eps * 1e8 of its log-densities, so the job runs again, centred.
    X = _blobs(30_000, [[0, 0, 0], [3, -1, 2], [10, 10, 10]], [1.0, 1.0, 1e-3], seed=1)
    res = _fit(X, 3, "full", x64=False)
    assert centred_runs == [False, True]
    tight = int(np.argmax(res.means[:, 0]))
    assert np.all(np.diag(res.covariances[tight]) < 1e-5)

    monkeypatch.setattr(driver, "_EXPAND_F32_SIZE", np.inf)  # centred from the start
    centred_runs.clear()
    alone = _fit(X, 3, "full", x64=False)
    assert centred_runs == [None]
    for name in ("weights", "means", "covariances"):
        np.testing.assert_array_equal(getattr(res, name), getattr(alone, name), err_msg=name)
    assert res.log_likelihood == alone.log_likelihood


def test_small_float32_fit_stays_centred(centred_runs):
    X = _blobs(500, [[0, 0], [4, 4]], [1.0, 0.5])
    _fit(X, 2, "full", x64=False)
    assert centred_runs == [None]
