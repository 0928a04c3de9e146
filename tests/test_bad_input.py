"""A table of bad input for the Python API: each row a call, the exception and a message fragment.

Every message names the parameter (and, for overflow, says "overflow"); none is a raw NumPy or
JAX error, "singular" or "NaN or infinite" where the cause is something else.
"""

import jax
import numpy as np
import pytest

import bayesgmm as bg

rng = np.random.default_rng(0)
X = np.concatenate([rng.normal(0, 1, (30, 2)), rng.normal(5, 1, (30, 2))])
W2 = np.array([0.5, 0.5])
M2 = np.array([[0.0, 0.0], [1.0, 1.0]])
C2 = np.stack([np.eye(2)] * 2)


def fit(**kw):
    mix = kw.pop("mix", bg.Mixture(2, "full"))
    data = kw.pop("X", X)
    return lambda: mix.fit_em(data, **kw)


def from_params(w=W2, m=M2, c=C2, cov="full"):
    return lambda: bg.FitResult.from_params(bg.Mixture(2, cov), w, m, c)


def scored(method, data):
    def call():
        res = bg.FitResult.from_params(bg.Mixture(2, "full"), W2, M2, C2)
        return getattr(res, method)(data)

    return call


BIG = np.concatenate([X * 1e160, X[:1] * 0])
CASES = [
    # complex and masked input
    ("complex X", fit(X=X + 1j), "X has a complex dtype"),
    ("masked X", fit(X=np.ma.masked_greater(X, 4)), "X is a masked array"),
    ("complex weights", fit(sample_weight=np.ones(60) + 0j), "sample_weight has a complex"),
    (
        "masked weights",
        fit(sample_weight=np.ma.masked_less(np.ones(60), 0)),
        "sample_weight is a masked",
    ),
    (
        "complex init means",
        fit(init_params=dict(weights=W2, means=M2 + 1j, covariances=C2)),
        "init_params['means'] has a complex",
    ),
    ("complex at predict", scored("predict", X + 1j), "X has a complex"),
    ("masked at score", scored("score_samples", np.ma.masked_greater(X, 4)), "X is a masked"),
    # overflow named as overflow
    ("spread overflows float64", fit(X=BIG), "X overflows"),
    ("1e200 rows", fit(X=np.concatenate([X, [[1e200, 0.0]]])), "overflow"),
    (
        "dof 1e300",
        fit(mix=bg.Mixture(2, prior=bg.Prior(degrees_of_freedom=1e300))),
        "degrees_of_freedom",
    ),
    (
        "init means overflow",
        fit(init_params=dict(weights=W2, means=M2 * 1e300, covariances=C2)),
        "init_params['means'] overflows",
    ),
    ("reg_covar overflows", fit(mix=bg.Mixture(2, reg_covar=1e300)), "reg_covar=1e+300 overflows"),
    # rng_key forms
    ("float seed", fit(rng_key=1.5), "rng_key must be an int seed"),
    ("string seed", fit(rng_key="0"), "rng_key must be an int seed"),
    ("bool seed", fit(rng_key=True), "rng_key must be an int seed"),
    ("key of wrong shape", fit(rng_key=np.zeros(3, np.uint32)), "rng_key must be"),
    ("key of wrong dtype", fit(rng_key=np.zeros(2, np.float32)), "rng_key must be"),
    (
        "batch of typed keys",
        fit(rng_key=jax.random.split(jax.random.key(0), 3)),
        "rng_key must be a single key",
    ),
    # from_params validates like init_params
    (
        "weights sum to 2",
        from_params(w=np.array([1.0, 1.0])),
        "weights must be non-negative and sum to 1",
    ),
    ("negative weight", from_params(w=np.array([1.5, -0.5])), "weights must be non-negative"),
    (
        "not PD",
        from_params(c=np.stack([np.eye(2), -np.eye(2)])),
        "covariances[1] must be symmetric positive definite",
    ),
    (
        "not symmetric",
        from_params(c=np.stack([np.eye(2), [[1.0, 0.5], [0.0, 1.0]]])),
        "covariances[1] must be symmetric",
    ),
    ("wrong means shape", from_params(m=np.zeros((3, 2))), "means must have shape (2, 2)"),
    ("NaN mean", from_params(m=np.array([[0.0, np.nan], [1.0, 1.0]])), "means contains NaN"),
    (
        "zero variance",
        from_params(c=np.array([[1.0, 0.0], [1.0, 1.0]]), cov="diag"),
        "covariances (variances) must be positive",
    ),
    ("complex weights", from_params(w=W2 + 0j), "weights has a complex"),
    (
        "not a Mixture",
        lambda: bg.FitResult.from_params("full", W2, M2, C2),
        "mixture must be a bayesgmm.Mixture",
    ),
    # scoring
    ("wrong features at predict", scored("predict", X[:, :1]), "X has 1 features"),
    ("NaN at score", scored("score", np.array([[np.nan, 0.0]])), "NaN or infinite"),
    ("bad n_samples", lambda: from_params()().sample(0), "n_samples must be a positive integer"),
    ("bad sample key", lambda: from_params()().sample(3, rng_key="a"), "rng_key must be"),
]


@pytest.mark.parametrize("call,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value)
    for misleading in ("singular", "collapsed"):
        assert misleading not in str(info.value)


def test_float32_overflow_named(f32):
    """Values a float32 fit cannot square after centring and scaling (columns 1e40 apart in
    spread: one common scale leaves one of them beyond float32's square root): overflow."""
    data = X * [1e-20, 1e20]
    with pytest.raises(ValueError, match="X overflows float32.*float64"):
        bg.Mixture(2).fit_em(data)
    with pytest.raises(ValueError, match="reg_covar=1e\\+39 overflows float32"):
        bg.Mixture(2, reg_covar=1e39).fit_em(X)
    with pytest.raises(ValueError, match="degrees_of_freedom.*overflow"):
        bg.Mixture(2, prior=bg.Prior(degrees_of_freedom=1e35)).fit_em(X)
