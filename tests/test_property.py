"""Property-based tests (hypothesis) of EM fits over scales, offsets, ties, weights, covariance
types and priors, on a FIXED set of shapes so that compilation stays bounded.

Invariants, in float64: no NaN; responsibilities sum to one (1e-12); the objective never falls
by more than 1e-10 relative (with a prior, and ML with reg_covar=0, where EM guarantees it);
``log_likelihood`` equals the weighted sum of ``score_samples`` (1e-9 relative: the fit's
E-step and the scoring compute the densities differently); the fit of ``a + s X`` (ML with
``reg_covar * s**2``, or the data-based default prior) is the transformed fit of ``X`` from the
transformed start (1e-5 relative).

Every fit starts from a deterministic start computed from the data (sorted slices' means, the
pooled variance), so that the three fits of an example share one compiled program per covariance
type and prior: compilation, not the examples, is the cost here. The default (k-means++) start
is tested elsewhere (tests/test_trust.py, tests/test_mclust_reference.py).

Profiles: ``ci`` (the default, 200 examples of three fits each, one shape) and ``thorough``
(thousands, two shapes; select it with ``BAYESGMM_HYPOTHESIS_PROFILE=thorough``, which also runs
the ``slow`` test).
"""

import os

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bayesgmm as bg

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=3000, deadline=None)
PROFILE = os.environ.get("BAYESGMM_HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)

# (n, D, K): each compiles once per covariance type and prior; CI keeps to the first.
SHAPES = [(48, 2, 3), (40, 1, 2)] if PROFILE == "thorough" else [(48, 2, 3)]
COV_TYPES = ("full", "tied", "diag", "spherical")


@st.composite
def problems(draw):
    n, d, k = draw(st.sampled_from(SHAPES))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, draw(st.sampled_from([1.0, 5.0, 1e3])), (k, d))
    X = centres[rng.integers(0, k, n)] + rng.normal(0, 1, (n, d))
    if draw(st.booleans()):  # ties: rounded onto a coarse grid, many repeated rows
        X = np.round(X * 2) / 2
    weights = draw(st.sampled_from(["none", "integer", "tiny", "huge", "random"]))
    w = {
        "none": None,
        "integer": rng.integers(1, 4, n).astype(float),
        "tiny": np.full(n, 1e-20),
        "huge": np.full(n, 1e30),
        "random": rng.uniform(0.1, 3.0, n),
    }[weights]
    prior = draw(st.sampled_from([None, "default"]))
    if prior is not None and weights in ("tiny", "huge"):
        # With a prior the weights' scale is part of the model (they count rows against the
        # prior); only maximum likelihood is invariant under it.
        w = None
    return dict(
        X=X,
        w=w,
        k=k,
        covariance_type=draw(st.sampled_from(COV_TYPES)),
        prior=prior,
        offset=draw(st.sampled_from([0.0, 1e8, -1e8, 3.0])),
        scale=draw(st.sampled_from([1e-6, 1e-3, 1.0, 1e3, 1e6])),
    )


class _X64:
    def __enter__(self):
        self.previous = bool(jax.config.jax_enable_x64)
        jax.config.update("jax_enable_x64", True)

    def __exit__(self, *exc):
        jax.config.update("jax_enable_x64", self.previous)


def _fit(mix, X, w, **kw):
    try:
        return mix.fit_em(X, sample_weight=w, max_iter=200, **kw)
    except ValueError as exc:  # a collapse on tied data is a legitimate outcome, named as such
        assert "singular" in str(exc), exc
        return None


def _start(X, k, covariance_type):
    """Means of k slices of the rows sorted on the first feature; the pooled variance."""
    parts = np.array_split(X[np.argsort(X[:, 0], kind="stable")], k)
    var = np.maximum(X.var(0), 1e-12 * np.max(np.abs(X)) ** 2 + 1e-300)
    cov = {
        "full": np.stack([np.diag(var)] * k),
        "tied": np.diag(var),
        "diag": np.stack([var] * k),
        "spherical": np.full(k, var.mean()),
    }[covariance_type]
    return {
        "weights": np.full(k, 1.0 / k),
        "means": np.stack([q.mean(0) for q in parts]),
        "covariances": cov,
    }


def _check_invariants(res, X, w):
    lp = res.score_samples(X)
    proba = res.predict_proba(X)
    assert np.all(np.isfinite(lp)) and np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    weights = np.ones(len(X)) if w is None else w
    total = float(np.sum(weights * lp))
    np.testing.assert_allclose(res.log_likelihood, total, rtol=1e-9)
    h = np.asarray(res.history)
    assert np.all(np.isfinite(h))
    if res.mixture.prior is not None or res.mixture.reg_covar == 0:
        assert np.all(np.diff(h) >= -1e-10 * np.abs(h[1:])), np.diff(h)


def _run(p):
    X = p["X"] * p["scale"] + p["offset"]
    reg = 0.0 if p["prior"] is None else 1e-6
    mix = bg.Mixture(p["k"], p["covariance_type"], prior=p["prior"], reg_covar=reg)
    with _X64():
        res = _fit(mix, X, p["w"], init_params=_start(X, p["k"], p["covariance_type"]))
        if res is None:
            return
        _check_invariants(res, X, p["w"])
        # Equivariance: from the transformed start, a fixed number of iterations.
        a, s = 7.0, 1e3
        start = {k: np.asarray(v) for k, v in res.params.items()}
        moved_start = dict(
            weights=start["weights"],
            means=a + s * start["means"],
            covariances=s**2 * start["covariances"],
        )
        reg_covar = max(reg, 1e-6 * p["scale"] ** 2) * s**2
        m1 = bg.Mixture(p["k"], p["covariance_type"], prior=p["prior"], reg_covar=reg_covar / s**2)
        m2 = bg.Mixture(p["k"], p["covariance_type"], prior=p["prior"], reg_covar=reg_covar)
        # Both data sets from the unshifted X: a + s X' would round away the digits that an
        # offset of 1e8 leaves to data of spread 1e-6.
        if np.finfo(np.float64).eps * abs(p["offset"]) / p["scale"] > 1e-10:
            return
        one = _fit(m1, X, p["w"], init_params=start, tol=0.0)
        moved = p["X"] * (p["scale"] * s) + (a + s * p["offset"])
        two = _fit(m2, moved, p["w"], init_params=moved_start, tol=0.0)
    if one is None or two is None:
        return
    if one.n_iter != two.n_iter:  # a cycle stop on one side only: not comparable
        return
    spread = np.sqrt(np.max(np.abs(one.covariances)))
    np.testing.assert_allclose(two.weights, one.weights, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose((two.means - a) / s, one.means, rtol=1e-5, atol=1e-5 * spread)
    np.testing.assert_allclose(
        two.covariances / s**2, one.covariances, rtol=1e-5, atol=1e-5 * spread**2
    )


@given(problems())
def test_fit_invariants(p):
    _run(p)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("BAYESGMM_HYPOTHESIS_PROFILE") != "thorough",
    reason="thousands of examples: set BAYESGMM_HYPOTHESIS_PROFILE=thorough",
)
@settings(max_examples=3000, deadline=None)
@given(problems())
def test_fit_invariants_thorough(p):
    _run(p)
