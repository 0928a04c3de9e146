"""Code that only large data reach, reached on small data through the driver's hooks.

Old Faithful (272 rows) in blocks of 64 rows: five blocks, the last one overlapping its
predecessor by 48 rows (272 is not a multiple of 64), compared with the one-block fit, with the
threaded driver (forced with ``n_threads=2`` on data far below the size that turns it on; thread 1
also gets a block index past the end) and with scikit-learn, all from the same start for a fixed
number of iterations (``tol=0``).

Tolerances: float64, 1e-10 relative between blockings (only the order of the sums differs) and
1e-8 against scikit-learn (as tests/test_em_sklearn.py); float32, 1e-4 relative (with an absolute
floor of 1e-4 times the largest entry) between blockings and 1e-3 against scikit-learn's float64
(ten iterations of float32 rounding, which EM contracts but does not remove).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesgmm import _validation as v
from bayesgmm import driver
from bayesgmm.stats import sum_blocks

K, BLOCK, N_ITER = 3, 64, 10
TOL = {np.float64: (1e-10, 1e-8), np.float32: (1e-4, 1e-3)}


def _fit(X, covariance_type, start, dtype, block_size=None, n_threads=None):
    Xa = np.asarray(X, dtype)
    (out,) = driver.fit_candidates(
        Xa,
        np.ones(len(Xa)),
        [K],
        covariance_type,
        None,
        reg_covar=1e-6,
        rng_key=0,
        n_init=1,
        init="kmeans",
        max_iter=N_ITER,
        tol=0.0,
        init_params=start,
        block_size=block_size,
        n_threads=n_threads,
    )
    assert not isinstance(out, str), out
    assert out.n_iter == N_ITER
    return out


def _arrays(out):
    # The driver's parameters are those of the centred and scaled data: map them back.
    p = out.params._replace(
        means=out.transform.shift + out.transform.scale * np.asarray(out.params.means, np.float64),
        covariances=out.transform.scale**2 * np.asarray(out.params.covariances, np.float64),
    )
    return {
        "weights": np.asarray(p.weights, np.float64),
        "means": np.asarray(p.means, np.float64),
        "covariances": np.asarray(p.covariances, np.float64),
    }


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_blocked_and_threaded_fits(dtype, ref, faithful, covariance_type):
    X = faithful
    assert len(X) % BLOCK != 0 and len(X) // BLOCK >= 2
    params, sk_init = ref.init_params(X, K, covariance_type, seed=5)
    start = v.check_init_params(params, K, X.shape[1], covariance_type)
    one = _fit(X, covariance_type, start, dtype, block_size=len(X), n_threads=1)
    blocked = _fit(X, covariance_type, start, dtype, block_size=BLOCK, n_threads=1)
    threaded = _fit(X, covariance_type, start, dtype, block_size=BLOCK, n_threads=2)
    assert np.asarray(one.params.means).dtype == dtype
    between, vs_sklearn = TOL[dtype]
    gm = ref.sklearn_fit(X, K, covariance_type, max_iter=N_ITER, **sk_init)
    want = {"weights": gm.weights_, "means": gm.means_, "covariances": gm.covariances_}
    base = _arrays(one)
    for label, out in (("blocked", blocked), ("threaded", threaded)):
        got = _arrays(out)
        for name in base:
            ref.assert_close(got[name], base[name], between, f"{label} {name}")
        np.testing.assert_allclose(out.log_likelihood, one.log_likelihood, rtol=between)
        np.testing.assert_allclose(out.history, one.history, rtol=between)
    for name in base:
        ref.assert_close(base[name], want[name], vs_sklearn, f"one block {name} vs sklearn")
        ref.assert_close(_arrays(blocked)[name], want[name], vs_sklearn, f"blocked {name}")
    np.testing.assert_allclose(one.log_likelihood, gm.score(X) * len(X), rtol=vs_sklearn)


def test_overlapping_last_block_counts_each_row_once(x64):
    """sum_blocks over 5 blocks of 64 of 203 rows: the overlap of the last block weighs nothing."""
    rng = np.random.default_rng(0)
    n = 203
    Xt = rng.normal(size=(2, n))
    w = rng.uniform(0.5, 2.0, n)

    def block_fn(xt, wb, i):
        return jnp.sum(wb), xt @ wb, jnp.sum(wb > 0)

    total, sums, rows = jax.jit(sum_blocks, static_argnums=(2, 3))(Xt, w, BLOCK, block_fn)
    assert int(rows) == n
    np.testing.assert_allclose(float(total), w.sum(), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(sums), Xt @ w, rtol=1e-12)
