"""The mixed-type M-step (one program for every covariance type) against the per-type M-steps.

:func:`bayesgmm.mstep.m_step` with ``kind`` fits every covariance structure as full matrices
from full statistics; it must give the per-type update of the same responsibilities (the
statistics of the per-type E-step), mapped to full matrices: tied the shared matrix for every
component, diag and spherical diagonal matrices. Tolerances relative to the largest entry:
float64 1e-12, float32 1e-5 (the two E-steps sum the same products in different orders).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import init_params

from bayesgmm.mstep import m_step
from bayesgmm.params import COVARIANCE_TYPES, full_covariances, make_params
from bayesgmm.stats import e_step


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_mixed_m_step_equals_per_type(dtype, faithful, covariance_type):
    X = (faithful - faithful.mean(0)) / faithful.std(0)
    k, d = 3, X.shape[1]
    start, _ = init_params(X, k, covariance_type, seed=2)
    Xt, w = jnp.asarray(X.T, dtype), jnp.ones(len(X), dtype)
    active = jnp.array([True, True, False])  # a padded component, as in a search over K

    def per_type(params):
        stats, ref = e_step(Xt, w, len(X), params, covariance_type, centred=True)
        return m_step(stats, ref, None, 1e-6, covariance_type, active)

    def mixed(params):
        stats, ref = e_step(Xt, w, len(X), params, "full", centred=True)
        kind = jnp.int32(COVARIANCE_TYPES.index(covariance_type))
        return m_step(stats, ref, None, 1e-6, "full", active, kind)

    arrays = [jnp.asarray(np.asarray(start[n]), dtype) for n in ("weights", "means")]
    cov = np.asarray(start["covariances"])
    want = jax.jit(per_type)(make_params(*arrays, jnp.asarray(cov, dtype), covariance_type))
    full = full_covariances(cov, covariance_type, k, d)
    got = jax.jit(mixed)(make_params(*arrays, jnp.asarray(full, dtype), "full"))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    want_full = np.asarray(full_covariances(want.covariances, covariance_type, k, d))
    on = np.asarray(active)
    for a, b in [
        (got.weights, want.weights),
        (got.means[on], want.means[on]),
        (np.asarray(got.covariances)[on], want_full[on]),
    ]:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * np.max(np.abs(b)))
    # Padding components get the identity, as the per-type M-step's padding.
    np.testing.assert_array_equal(np.asarray(got.covariances)[~on], np.eye(d)[None])
