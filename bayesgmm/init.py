"""Starting parameters: k-means, k-means++ seeding, random responsibilities, random data points.

Every start ends in one M-step from (hard or soft) responsibilities, as scikit-learn does.
``"kmeans++"`` and ``"random_from_data"`` choose K centres (by D^2 seeding or uniformly among
the rows) and assign every row to its nearest centre; scikit-learn instead gives each chosen row
alone to its component, which starts every covariance at ``reg_covar``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from .mstep import m_step
from .params import GMMParams
from .priors import PriorParams
from .stats import accumulate

INIT_METHODS = ("kmeans", "kmeans++", "random", "random_from_data")
_KMEANS_MAX_ITER = 100


def kmeans_plusplus(rng_key: Array, Xt: Array, w: Array, n_components: int) -> Array:
    """D^2 seeding (Arthur & Vassilvitskii 2007) of the columns of ``Xt``, weighted by ``w``.

    Returns the centres, shape (K, D).
    """
    first_key, loop_key = jax.random.split(rng_key)
    d, n = Xt.shape
    first = jax.random.choice(first_key, n, p=w / jnp.sum(w))
    centers = jnp.zeros((n_components, d), Xt.dtype).at[0].set(Xt[:, first])
    d2 = jnp.sum((Xt - Xt[:, first, None]) ** 2, axis=0)

    def body(k, carry):
        centers, d2, key = carry
        key, sub = jax.random.split(key)
        p = w * d2
        total = jnp.sum(p)
        # All remaining mass at distance 0 (fewer distinct rows than K): fall back on w.
        p = jnp.where(total > 0, p / jnp.where(total > 0, total, 1), w / jnp.sum(w))
        idx = jax.random.choice(sub, n, p=p)
        d2 = jnp.minimum(d2, jnp.sum((Xt - Xt[:, idx, None]) ** 2, axis=0))
        return centers.at[k].set(Xt[:, idx]), d2, key

    centers, _, _ = jax.lax.fori_loop(1, n_components, body, (centers, d2, loop_key))
    return centers


def _nearest_resp_fn(centers: Array, active: Array):
    k = centers.shape[0]

    def resp_fn(xt, xk, i):
        del xt, i
        d2 = jnp.where(active[:, None], jnp.sum(xk * xk, axis=1), jnp.inf)  # (K, B)
        labels = jnp.argmin(d2, axis=0)
        one_hot = jax.nn.one_hot(labels, k, dtype=xk.dtype, axis=0)
        return one_hot, jnp.zeros(xk.shape[-1], xk.dtype)

    return resp_fn


def lloyd(Xt: Array, w: Array, block_size: int, centers: Array, active: Array) -> Array:
    """Weighted Lloyd iterations until the centres stop moving (at most 100)."""

    def cond(carry):
        it, _, shift = carry
        return (it < _KMEANS_MAX_ITER) & (shift > 0)

    def body(carry):
        it, c, _ = carry
        st = accumulate(Xt, w, block_size, c, _nearest_resp_fn(c, active), "spherical")
        # Empty clusters keep their centre.
        new = c + jnp.where(st.nk[:, None] > 0, st.s1 / jnp.maximum(st.nk, 1e-30)[:, None], 0)
        return it + 1, new, jnp.max(jnp.abs(new - c))

    _, centers, _ = jax.lax.while_loop(cond, body, (0, centers, jnp.array(jnp.inf, centers.dtype)))
    return centers


def initial_params(
    rng_key: Array,
    Xt: Array,
    w: Array,
    block_size: int,
    n_components: int,
    init: str,
    prior: PriorParams | None,
    reg_covar: Array,
    covariance_type: str,
    active: Array,
) -> GMMParams:
    """Starting parameters by ``init``; one M-step from the starting responsibilities.

    Only the ``active`` components (a prefix of the K) get data. The k-means seeding draws the
    same random numbers whatever ``active`` is, so a padded k-means start equals an unpadded one.
    """
    if init in ("kmeans", "kmeans++"):
        centers = kmeans_plusplus(rng_key, Xt, w, n_components)
        if init == "kmeans":
            centers = lloyd(Xt, w, block_size, centers, active)
        resp_fn = _nearest_resp_fn(centers, active)
    elif init == "random_from_data":
        p = (w > 0) / jnp.sum(w > 0)
        idx = jax.random.choice(rng_key, Xt.shape[1], (n_components,), replace=False, p=p)
        centers = Xt[:, idx].T
        resp_fn = _nearest_resp_fn(centers, active)
    elif init == "random":
        centers = jnp.zeros((n_components, Xt.shape[0]), Xt.dtype)

        def resp_fn(xt, xk, i):
            b = xt.shape[1]
            u = jax.random.uniform(jax.random.fold_in(rng_key, i), (n_components, b), xt.dtype)
            u = jnp.where(active[:, None], u, 0)
            return u / jnp.sum(u, axis=0, keepdims=True), jnp.zeros(b, xt.dtype)

        # Statistics about the data mean keep the scatter accurate.
        centers = centers + Xt @ w / jnp.sum(w)
    else:  # pragma: no cover - validated at the surface
        raise ValueError(f"unknown init {init!r}")
    stats = accumulate(Xt, w, block_size, centers, resp_fn, covariance_type)
    return m_step(stats, centers, prior, reg_covar, covariance_type, active)
