"""The sampler's written-out potential against NumPyro's potential of the declared model.

``bayesgmm.potential`` replaces ``numpyro.infer.util.potential_energy(mixture_model, ...)`` inside
NUTS (it compiles faster). Here both are evaluated at random unconstrained points, for every
covariance type, with and without sample weights, in float64 (to 1e-12 relative on the value and
1e-10 on the gradient) and float32 (1e-5 and 1e-4, weighted); the maps between constrained and
unconstrained parameters are checked against NumPyro's ``constrain_fn`` and ``unconstrain_fn``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn

from bayesgmm import potential as P
from bayesgmm.model import mixture_model
from bayesgmm.priors import PriorParams

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def _case(ct: str, d: int, weighted: bool, seed: int):
    rng = np.random.default_rng(seed)
    k, n = 3, 25
    X = rng.normal(size=(n, d)) * 2.0 + 1.0
    w = rng.uniform(0.5, 2.0, size=n) if weighted else None
    a = rng.normal(size=(d, d))
    scale = {
        "full": a @ a.T + d * np.eye(d),
        "tied": a @ a.T + d * np.eye(d),
        "diag": rng.uniform(0.5, 2.0, size=d),
        "spherical": np.array(0.7),
    }[ct]
    prior = PriorParams(
        alpha=np.array(1.7),
        kappa=np.array(0.3),
        mean=rng.normal(size=d),
        dof=np.array(d + 2.5),
        scale=scale,
    )
    z = {s: rng.normal(size=shape) * 0.7 for s, shape in P.site_shapes(k, d, ct).items()}
    model = partial(mixture_model, n_components=k, n_features=d, covariance_type=ct)
    return X, w, prior, z, model


def _cast(tree, dtype):
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)


# Gradients through NumPyro's potential take seconds to compile each: every type in float64 with
# and without weights (D=3, and D=1 for the scalar special cases), float32 weighted.
CASES = [(ct, 3, weighted, True) for ct in COVARIANCE_TYPES for weighted in (False, True)]
CASES += [(ct, 1, True, True) for ct in ("full", "spherical")]
CASES += [(ct, 3, True, False) for ct in COVARIANCE_TYPES]


@pytest.mark.parametrize(("ct", "d", "weighted", "x64"), CASES)
def test_potential_matches_numpyro(ct, d, weighted, x64):
    dtype = jnp.float64 if x64 else jnp.float32
    rtol_value, rtol_grad = (1e-12, 1e-10) if x64 else (1e-5, 1e-4)
    with jax.enable_x64(x64):
        X, w, prior, z, model = _case(ct, d, weighted, seed=d + 10 * weighted)
        X, z, prior = _cast(X, dtype), _cast(z, dtype), _cast(prior, dtype)
        w_arr = jnp.ones(X.shape[0], dtype) if w is None else jnp.asarray(w, dtype)
        args = (X, None if w is None else w_arr)

        def reference(z):
            return potential_energy(model, args, {"prior": prior}, z)

        def mine(z):
            return P.potential(z, X, w_arr, prior, ct)

        # Jitted: NumPyro's potential run op by op compiles hundreds of small programs.
        ref, g_ref = jax.jit(jax.value_and_grad(reference))(z)
        got, g_got = jax.jit(jax.value_and_grad(mine))(z)
        assert got.dtype == dtype
        np.testing.assert_allclose(float(got), float(ref), rtol=rtol_value)
        for name in z:
            scale = float(jnp.max(jnp.abs(g_ref[name]))) + 1.0
            err = float(jnp.max(jnp.abs(g_got[name] - g_ref[name])))
            assert err <= rtol_grad * scale, (name, err, scale)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_constrain_and_unconstrain_match_numpyro(ct):
    with jax.enable_x64(True):
        X, w, prior, z, model = _case(ct, 3, False, seed=5)
        z = _cast(z, jnp.float64)
        ref = constrain_fn(model, (X, None), {"prior": prior}, z)
        got = P.constrain(z, ct)
        for name in ref:
            np.testing.assert_allclose(np.asarray(got[name]), np.asarray(ref[name]), atol=1e-13)
        back_ref = unconstrain_fn(model, (X, None), {"prior": prior}, ref)
        back = P.unconstrain({name: np.asarray(a) for name, a in ref.items()}, ct)
        for name in back_ref:
            np.testing.assert_allclose(back[name], np.asarray(back_ref[name]), atol=1e-12)
            np.testing.assert_allclose(back[name], np.asarray(z[name]), atol=1e-12)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_pack_unpack_round_trip(ct):
    k, d = 3, 2
    rng = np.random.default_rng(0)
    z = {s: rng.normal(size=(4,) + shape) for s, shape in P.site_shapes(k, d, ct).items()}
    flat = P.pack(z)
    assert flat.shape == (4, P.flat_size(k, d, ct))
    with jax.enable_x64(True):
        for c in range(4):
            back = P.unpack(jnp.asarray(flat[c]), k, d, ct)
            for name in z:
                np.testing.assert_array_equal(np.asarray(back[name]), z[name][c])


def test_extreme_weights_stay_finite():
    # Stick-breaking logits far out: the weights underflow, their logarithms (used by the
    # potential) stay finite, and so do the potential and its gradient.
    with jax.enable_x64(True):
        X, w, prior, z, _ = _case("diag", 2, False, seed=3)
        z["weights"] = np.array([-800.0, 900.0])
        z = _cast(z, jnp.float64)
        value, grad = jax.value_and_grad(P.potential)(z, X, jnp.ones(len(X)), prior, "diag")
        assert np.isfinite(float(value))
        assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grad))


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_unconstrain_keeps_leading_axes(ct):
    # The importance-sampling masses unconstrain batches of draws at once.
    with jax.enable_x64(True):
        points = [
            P.constrain(_cast(_case(ct, 2, False, seed=s)[3], jnp.float64), ct) for s in (7, 8)
        ]
        batch = {name: np.stack([np.asarray(p[name]) for p in points]) for name in points[0]}
        got = P.unconstrain(batch, ct)
        for i, p in enumerate(points):
            one = P.unconstrain({name: np.asarray(a) for name, a in p.items()}, ct)
            for name in one:
                np.testing.assert_allclose(got[name][i], one[name], rtol=0, atol=1e-12)
