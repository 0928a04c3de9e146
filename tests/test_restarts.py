"""Short restarts run in turn (one compiled loop) against the threaded driver's batched restarts.

The compiled driver (``n_threads=1``) runs the ``n_init`` short restarts one after the other in
one ``fori_loop`` and resumes the best; the threaded driver (forced with ``n_threads=2``) runs
them together under ``vmap`` (`em.prepare_restarts`) and the rest from Python. Both must
pick the same restart and reach the same iterates: float64, 1e-8 relative (only the order of
sums differs), the same iteration counts. A search over covariance types with its programs
compiled in parallel first (:func:`bayesgmm.driver.fit_candidate_groups`) must give what one
:func:`bayesgmm.driver.fit_candidates` per type gives.
"""

import jax
import numpy as np
import pytest

from bayesgmm import driver
from bayesgmm.datasets import load_faithful

SETTINGS = dict(reg_covar=1e-6, rng_key=3, init="kmeans++", max_iter=60, tol=1e-6)


@pytest.fixture(scope="module")
def X():
    with jax.enable_x64(True):
        yield np.asarray(load_faithful(), np.float64)


@pytest.mark.parametrize("ks", [[3], [2, 4]], ids=["one", "batch"])
def test_restarts_in_turn_match_batched_restarts(X, ks):
    w = np.ones(len(X))
    with jax.enable_x64(True):
        fits = [
            driver.fit_candidates(X, w, ks, "full", None, n_init=4, n_threads=t, **SETTINGS)
            for t in (1, 2)
        ]
    # The best restart of the largest K goes on past the short runs.
    assert max(o.n_iter for o in fits[0]) > 20
    for in_turn, batched in zip(*fits, strict=True):
        assert in_turn.n_iter == batched.n_iter
        np.testing.assert_allclose(in_turn.objective, batched.objective, rtol=1e-8)
        for a, b in zip(in_turn.params, batched.params, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("prior", [None, "default"])
def test_groups_equal_one_search_per_type(X, prior):
    # Maximum likelihood runs every type in one program of full covariances (bayesgmm.mixed),
    # equal to the per-type programs up to the order of the floating-point operations (1e-12);
    # with a prior each type keeps a program of its own, equal to the last bit.
    w = np.ones(len(X))
    types = ["full", "tied", "diag", "spherical"]
    settings = dict(SETTINGS, init="kmeans")
    with jax.enable_x64(True):
        groups = driver.fit_candidate_groups(
            X, w, [(t, [1, 2, 3]) for t in types], prior, n_init=1, n_threads=2, **settings
        )
        alone = [
            driver.fit_candidates(X, w, [1, 2, 3], t, prior, n_init=1, **settings) for t in types
        ]
    rtol = 1e-12 if prior is None else 0
    for got, want in zip(groups, alone, strict=True):
        for g, a in zip(got, want, strict=True):
            assert g.n_iter == a.n_iter
            for name in ("weights", "means", "covariances", "precisions_chol"):
                a_, g_ = np.asarray(getattr(a.params, name)), np.asarray(getattr(g.params, name))
                assert g_.shape == a_.shape, name
                np.testing.assert_allclose(g_, a_, rtol=rtol, atol=rtol * np.max(np.abs(a_)))
            np.testing.assert_allclose(g.objective, a.objective, rtol=rtol)
