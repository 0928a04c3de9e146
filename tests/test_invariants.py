"""Invariants: monotone objective, restarts, dtypes, sample weights, univariate data."""

import numpy as np
import pytest

import bayesgmm as bg

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]

# Allowed decrease between consecutive history entries, relative to |objective|:
# float64 1e-10 (rounding only); float32 1e-5 (~0.01 on Old Faithful's ~-1130, about 100x the
# float32 rounding of a 272-term sum).
MONOTONE_RTOL = {np.float32: 1e-5, np.float64: 1e-10}


@pytest.mark.parametrize("prior", [None, "default"], ids=["ml", "map"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_objective_never_decreases(dtype, fit_faithful_k3, covariance_type, prior):
    # random start, tol 1e-10 per sample: runs many iterations (up to max_iter=150)
    res = fit_faithful_k3(covariance_type, prior, tol=1e-10)
    h = np.asarray(res.history, dtype=np.float64)
    assert h.shape == (int(res.n_iter),)
    assert np.all(np.isfinite(h))
    assert h[-1] == float(res.objective)
    drops = np.diff(h)
    allowed = MONOTONE_RTOL[dtype] * np.abs(h[1:])
    assert np.all(drops >= -allowed), (
        f"largest drop {drops.min()} at iteration {drops.argmin() + 1}"
    )
    # with a random start EM climbs noticeably
    assert h[-1] > h[0]


@pytest.mark.parametrize("n_init", [1, 5])
def test_same_key_same_result(faithful, n_init):
    mix = bg.Mixture(4, covariance_type="full")
    a = mix.fit_em(faithful, rng_key=3, n_init=n_init, init="random", max_iter=300)
    b = mix.fit_em(faithful, rng_key=3, n_init=n_init, init="random", max_iter=300)
    for name in ("weights", "means", "covariances"):
        np.testing.assert_array_equal(
            np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name
        )
    assert float(a.objective) == float(b.objective)
    assert int(a.n_iter) == int(b.n_iter)


@pytest.mark.slow
@pytest.mark.parametrize(
    "init",
    [
        "kmeans",
        "kmeans++",
        "random",
        pytest.param(
            "random_from_data",
            marks=pytest.mark.xfail(
                strict=False,
                reason="short-EM restarts (bayesgmm.em.SHORT_EM_ITERS) keep the start that is "
                "best after 20 iterations; on this K=4 fit, unconverged at 300 iterations, it "
                "ends 0.07 below the worst of the 5 single runs (float32)",
            ),
        ),
    ],
)
def test_restarts_keep_a_good_one(faithful, init):
    """Best of 5 restarts is at least as good as the worst of 5 single starts (rtol 1e-6)."""
    mix = bg.Mixture(4, covariance_type="full")
    singles = [
        float(mix.fit_em(faithful, rng_key=k, n_init=1, init=init, max_iter=300).objective)
        for k in range(5)
    ]
    best = mix.fit_em(faithful, rng_key=0, n_init=5, init=init, max_iter=300)
    assert float(best.objective) >= min(singles) - 1e-6 * abs(min(singles))
    assert np.isfinite(float(best.objective))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_returned_dtype_is_active_dtype(dtype, faithful, fit_faithful_k3, covariance_type):
    """Scores in the working dtype; parameters and history float64 in both modes.

    The fit works on data centred and scaled on the host; its parameters, mapped back to the
    data's units, keep the digits that float64 data carry (means near 1e8 need them).
    """
    res = fit_faithful_k3(covariance_type)
    for name in ("weights", "means", "covariances"):
        assert np.asarray(getattr(res, name)).dtype == np.float64, name
        assert np.asarray(res.params[name]).dtype == np.float64, name
    assert np.asarray(res.history).dtype == np.float64  # mapped back on the host
    assert np.asarray(res.predict_proba(faithful)).dtype == dtype
    assert np.asarray(res.score_samples(faithful)).dtype == dtype


def test_float32_faithful_full_two(f32, faithful):
    """float32 reaches the known optimum -1130.264 to within 0.1."""
    res = bg.Mixture(2, covariance_type="full").fit_em(faithful, n_init=3)
    assert np.asarray(res.score_samples(faithful)).dtype == np.float32
    assert abs(float(res.log_likelihood) - (-1130.264)) < 0.1


# ----------------------------------------------------------------- sample weights


def _weighted_and_repeated(X, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.integers(0, 4, size=len(X))  # includes zeros: a zero weight drops the row
    return w, np.repeat(X, w, axis=0)


@pytest.mark.parametrize(
    "prior",
    [
        None,
        bg.Prior(
            weight_concentration=1.5,
            mean_precision=0.2,
            mean=[3.0, 70.0],
            degrees_of_freedom=5.0,
            scale=[[0.4, 0.5], [0.5, 30.0]],
        ),
    ],
    ids=["ml", "map"],
)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_weights_equal_repeated_rows(x64, ref, faithful, covariance_type, prior):
    """Tolerance rtol 1e-10 (float64): only the summation order differs."""
    X = faithful[:80]
    w, X_rep = _weighted_and_repeated(X)
    params, _ = ref.init_params(X_rep, 3, covariance_type, seed=7)
    mix = bg.Mixture(3, covariance_type=covariance_type, prior=prior)
    # tol is per unit of sample weight, i.e. per repeated row: the runs stop at the same iteration
    a = mix.fit_em(X, sample_weight=w, init_params=params, max_iter=400, tol=1e-5)
    b = mix.fit_em(X_rep, init_params=params, max_iter=400, tol=1e-5)
    assert int(a.n_iter) == int(b.n_iter)
    assert bool(a.converged) and bool(b.converged)
    for name in ("weights", "means", "covariances"):
        ref.assert_close(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), 1e-10, name)
    np.testing.assert_allclose(float(a.log_likelihood), float(b.log_likelihood), rtol=1e-10)
    np.testing.assert_allclose(float(a.objective), float(b.objective), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(a.history), np.asarray(b.history), rtol=1e-10)


# ----------------------------------------------------------------- univariate data


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_univariate_matches_sklearn(x64, ref, faithful, covariance_type):
    x = np.ascontiguousarray(faithful[:, 1])  # waiting, shape (n,)
    params, sk_init = ref.init_params(x[:, None], 2, covariance_type, seed=8)
    res = bg.Mixture(2, covariance_type=covariance_type).fit_em(
        x, init_params=params, max_iter=4, tol=0.0
    )
    gm = ref.sklearn_fit(x[:, None], 2, covariance_type, max_iter=4, **sk_init)
    got = ref.as_np(res)
    ref.assert_close(got["weights"], gm.weights_, 1e-8, "weights")
    ref.assert_close(got["means"], gm.means_, 1e-8, "means")
    ref.assert_close(got["covariances"], gm.covariances_, 1e-8, "covariances")
    assert np.asarray(res.predict(x)).shape == x.shape
    assert np.asarray(res.predict_proba(x)).shape == (len(x), 2)
    np.testing.assert_allclose(
        np.asarray(res.score_samples(x)), gm.score_samples(x[:, None]), rtol=1e-10
    )


@pytest.mark.parametrize("prior", [None, "default"], ids=["ml", "map"])
def test_univariate_types_coincide(x64, ref, faithful, prior):
    """In 1-D full, diag and spherical are the same model (and the same prior): same iterates."""
    x = np.ascontiguousarray(faithful[:, 1])
    full, _ = ref.init_params(x[:, None], 2, "full", seed=9)
    c = full["covariances"][:, 0, 0]
    inits = {
        "full": full,
        "diag": dict(full, covariances=c[:, None]),
        "spherical": dict(full, covariances=c),
    }
    fits = {
        t: bg.Mixture(2, covariance_type=t, prior=prior).fit_em(
            x, init_params=p, max_iter=20, tol=0.0
        )
        for t, p in inits.items()
    }
    for t in ("diag", "spherical"):
        ref.assert_close(np.asarray(fits[t].means), np.asarray(fits["full"].means), 1e-10, t)
        ref.assert_close(
            np.asarray(fits[t].covariances).reshape(-1),
            np.asarray(fits["full"].covariances).reshape(-1),
            1e-10,
            t,
        )
        np.testing.assert_allclose(
            float(fits[t].objective), float(fits["full"].objective), rtol=1e-10
        )
