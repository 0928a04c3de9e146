"""The EM driver compiles once per shape: a second fit on same-shaped data compiles nothing.

Compilations are counted with jax.monitoring: jax 0.12 records the event
'/jax/core/compile/backend_compile_duration' (jax._src.dispatch.BACKEND_COMPILE_EVENT) for every
XLA backend compile, whatever the package jits (fit loop, restarts, eager jnp ops), and bayesgmm
records PROGRAM_LOAD_EVENT for each program it loads whole from its disk store.
"""

import contextlib

import jax
import numpy as np
import pytest

import bayesgmm as bg
from bayesgmm._compile import PROGRAM_LOAD_EVENT

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
# With the persistent compilation cache on (tests/conftest.py), an executable may be loaded from
# disk instead of compiled, and bayesgmm loads whole programs from its own store (another test
# worker may have kept the program first); both count too: the second fit must neither compile
# nor load.
CACHE_LOAD_EVENT = "/jax/compilation_cache/cache_retrieval_time_sec"
COUNTED = (BACKEND_COMPILE_EVENT, CACHE_LOAD_EVENT, PROGRAM_LOAD_EVENT)


@contextlib.contextmanager
def count_compiles():
    names = []

    def listener(event, duration, **kwargs):
        if event in COUNTED:
            names.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _data(seed, n=123, D=2):
    # a shape used by no other test, so the first fit below really is the first
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, (n // 2, D)), rng.normal(4, 1, (n - n // 2, D))])


def _use(res, X):
    """Touch everything a user would read back, so lazily computed fields compile too."""
    for name in ("weights", "means", "covariances", "history"):
        np.asarray(getattr(res, name))
    float(res.objective), float(res.log_likelihood), int(res.n_iter), bool(res.converged)
    np.asarray(res.predict_proba(X)), np.asarray(res.score_samples(X))


def test_counter_sees_compiles():
    """Guard against a silently broken counter: a fresh jitted function must register."""
    with count_compiles() as names:
        jax.jit(lambda x: x * 3.0 + 1.0)(np.arange(7.0))
    assert names


@pytest.mark.parametrize("prior", [None, "default"], ids=["ml", "map"])
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_second_fit_does_not_compile(covariance_type, prior):
    mix = bg.Mixture(3, covariance_type=covariance_type, prior=prior)
    with count_compiles() as first:
        _use(mix.fit_em(_data(0), rng_key=0), _data(0))
    assert first, "the warm-up fit compiled nothing: is the counter working?"
    X2 = _data(1)
    with count_compiles() as second:
        _use(mix.fit_em(X2, rng_key=1), X2)
    assert second == [], f"recompiled: {second}"


def test_second_fit_with_restarts_and_weights_does_not_compile():
    mix = bg.Mixture(3, covariance_type="full", prior="default")
    w = np.random.default_rng(0).integers(1, 3, 123).astype(float)
    float(mix.fit_em(_data(2), n_init=3, sample_weight=w, rng_key=0).objective)
    with count_compiles() as second:
        res = mix.fit_em(_data(3), n_init=3, sample_weight=w[::-1].copy(), rng_key=5)
        float(res.objective)
    assert second == [], f"recompiled: {second}"
