"""The compiled EM driver: ``init_state`` / ``em_step`` / ``fit`` over a pytree state.

One iteration is an E-step (which also gives the objective of the current parameters) followed
by an M-step. The loop is a ``lax.while_loop`` inside one ``jax.jit``; restarts run together
under ``vmap``. Convergence follows scikit-learn: stop when the objective per unit of sample
weight changed by less than ``tol`` between two consecutive E-steps.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from .init import initial_params
from .mstep import m_step
from .params import GMMParams, make_params
from .priors import PriorParams, log_prior
from .stats import SuffStats, e_step, to_blocks

# A covariance pivot below (this * eps)^2 times the data variance is numerically singular.
_SINGULAR_FACTOR = 100.0


class EMState(NamedTuple):
    """State of one EM run."""

    params: GMMParams  # the current parameters
    n_iter: Array  # shape=(), int32: iterations (E-step + M-step) done
    objective: Array  # shape=(): objective of the parameters before the last M-step
    history: Array  # shape=(max_iter + 1,): history[t] = objective after t iterations
    converged: Array  # shape=(), bool
    singular: Array  # shape=(), bool: the last M-step produced a singular covariance


class EMConfig(NamedTuple):
    """Dynamic (traced) settings of a fit."""

    tol: Array  # shape=()
    reg_covar: Array  # shape=()
    prior: PriorParams | None
    singular_threshold: Array  # shape=(D,): variances at or below this are singular


def objective(
    stats: SuffStats, params: GMMParams, prior: PriorParams | None, covariance_type: str
) -> Array:
    """Log-likelihood (from the E-step's statistics) plus the log-prior."""
    if prior is None:
        return stats.loglik
    return stats.loglik + log_prior(params, prior, covariance_type)


def is_singular(params: GMMParams, threshold: Array, covariance_type: str) -> Array:
    """True if any covariance is not (numerically) positive definite.

    ``threshold`` (D,) holds, per feature, the smallest variance that is still resolved at the
    data's precision. For full and tied covariances the squared Cholesky pivots are compared
    (``1 / diag(U)^2`` with ``U`` the precision Cholesky factor).
    """
    pc = params.precisions_chol
    if covariance_type in ("full", "tied"):
        pivots, thr = 1.0 / jnp.diagonal(pc, axis1=-2, axis2=-1) ** 2, threshold
    elif covariance_type == "diag":
        pivots, thr = params.covariances, threshold
    else:
        pivots, thr = params.covariances, jnp.mean(threshold)
    finite = jnp.all(jnp.isfinite(pc)) & jnp.all(jnp.isfinite(params.means))
    return ~finite | jnp.any(~(pivots > thr)) | jnp.any(~(params.weights >= 0))


def init_state(params: GMMParams, max_iter: int) -> EMState:
    dtype = params.means.dtype
    history = jnp.full(max_iter + 1, jnp.nan, dtype)
    return EMState(
        params,
        jnp.zeros((), jnp.int32),
        jnp.array(-jnp.inf, dtype),
        history,
        jnp.zeros((), bool),
        jnp.zeros((), bool),
    )


def em_step(
    state: EMState, X_blocks: Array, w_blocks: Array, cfg: EMConfig, covariance_type: str
) -> EMState:
    """One E-step and one M-step."""
    stats = e_step(X_blocks, w_blocks, state.params, covariance_type)
    obj = objective(stats, state.params, cfg.prior, covariance_type)
    new = m_step(stats, state.params.means, cfg.prior, cfg.reg_covar, covariance_type)
    singular = is_singular(new, cfg.singular_threshold, covariance_type)
    params = jax.tree.map(lambda a, b: jnp.where(singular, a, b), state.params, new)
    converged = jnp.abs(obj - state.objective) < cfg.tol * stats.weight
    history = state.history.at[state.n_iter].set(obj)
    return EMState(params, state.n_iter + 1, obj, history, converged & ~singular, singular)


class FitOutput(NamedTuple):
    """What one compiled run returns (batched over restarts)."""

    params: GMMParams
    n_iter: Array  # int32
    converged: Array  # bool
    singular: Array  # bool
    objective: Array  # objective of the returned parameters
    log_likelihood: Array  # log-likelihood of the returned parameters
    history: Array  # (max_iter + 1,); history[1 : n_iter + 1] are the per-iteration objectives


def _run(params0, X_blocks, w_blocks, cfg, covariance_type, max_iter):
    def cond(s: EMState):
        return (s.n_iter < max_iter) & ~s.converged & ~s.singular

    state = jax.lax.while_loop(
        cond,
        lambda s: em_step(s, X_blocks, w_blocks, cfg, covariance_type),
        init_state(params0, max_iter),
    )
    stats = e_step(X_blocks, w_blocks, state.params, covariance_type)
    obj = objective(stats, state.params, cfg.prior, covariance_type)
    history = state.history.at[state.n_iter].set(obj)
    # A start that is singular already (init) never iterates.
    singular = state.singular | is_singular(state.params, cfg.singular_threshold, covariance_type)
    return FitOutput(
        state.params, state.n_iter, state.converged, singular, obj, stats.loglik, history
    )


@partial(
    jax.jit,
    static_argnames=("n_components", "covariance_type", "init", "max_iter", "n_init", "block_size"),
)
def fit(
    X: Array,
    sample_weight: Array,
    rng_key: Array,
    tol: Array,
    reg_covar: Array,
    prior: PriorParams | None,
    init_params: tuple[Array, Array, Array] | None,
    *,
    n_components: int,
    covariance_type: str,
    init: str,
    max_iter: int,
    n_init: int,
    block_size: int,
) -> FitOutput:
    """Fit by EM from ``n_init`` starts (vmapped); outputs carry a leading restart axis.

    With ``init_params`` (weights, means, covariances) the single start is those parameters.
    """
    X_blocks, w_blocks = to_blocks(X, sample_weight, block_size)
    w = sample_weight / jnp.sum(sample_weight)
    mean = w @ X
    var = w @ (X - mean) ** 2
    eps = jnp.finfo(X.dtype).eps
    cfg = EMConfig(tol, reg_covar, prior, (_SINGULAR_FACTOR * eps) ** 2 * var)

    def one(key):
        if init_params is not None:
            params0 = make_params(*init_params, covariance_type)
        else:
            params0 = initial_params(
                key, X_blocks, w_blocks, n_components, init, prior, reg_covar, covariance_type
            )
        return _run(params0, X_blocks, w_blocks, cfg, covariance_type, max_iter)

    keys = jax.random.split(rng_key, n_init)
    return jax.vmap(one)(keys)
