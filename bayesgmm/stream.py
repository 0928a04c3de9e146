"""Streamed and sharded EM: the fit as a host loop of passes over data held outside one array.

The compiled EM (:mod:`bayesgmm.em`) needs the rows as one array on one device. Here the rows
are a source read in chunks, or a row-sharded array over several devices and processes
(:mod:`bayesgmm.passes`). The numerics are the same: every iteration is one pass whose pieces
(chunks, shards) each give the sufficient statistics of the SAME E-step
(:func:`bayesgmm.stats.e_step`), summed over pieces, devices and processes, followed by the SAME
:func:`bayesgmm.em.advance` (objective, M-step, convergence and singularity checks). Given the
same start, a streamed or sharded fit therefore equals the in-memory one up to the order of the
sums.

Every pass serves all the fits at once: the candidates and restarts of a covariance type run
together under ``vmap`` (as in the compiled driver), and every covariance type of a
:func:`bayesgmm.select` search reads the same chunks.

Passes of a fit:

1. Data moments (one K=1 pass about process 0's first row, subtracted on the host before the
   cast to the working dtype: the mean and covariance behind the default prior, the
   singularity threshold and the transformation of :mod:`bayesgmm._transform`) while a uniform
   sample of at most ``SAMPLE_ROWS`` rows is collected across the chunks and processes. Every
   later pass centres and scales the rows by that transformation as they are read (on the
   devices for sharded arrays), and parameters, prior, ``reg_covar`` and the log-likelihood are
   mapped as for an in-memory fit.
2. Starting values (unless ``init_params``): k-means++ (and Lloyd's iterations for ``"kmeans"``)
   on the sample in memory, then, when the sample is not all the data, Lloyd's iterations as
   passes over the data (at most ``LLOYD_PASSES``), then one pass for the M-step from the
   nearest-centre assignments, as :func:`bayesgmm.init.initial_params` does in memory.
3. EM: one pass per iteration, and a last one scoring the result.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validation as v
from . import distributed as dist
from ._compile import bounded_jit
from ._transform import (
    Transform,
    check_in_range,
    params_to_working,
    prior_to_working,
    transform_of_moments,
)

# Scoring spread over processes (api).
from .distributed import global_mean as global_mean
from .distributed import process_total as process_total
from .driver import Outcome, best_restart, key_on_host, to_data_units
from .em import SINGULAR_FACTOR, EMConfig, advance, finish, init_state
from .init import initial_params, kmeans_plusplus, lloyd, nearest, nearest_resp_fn
from .mstep import m_step
from .numerics import float_dtype
from .params import GMMParams, make_params
from .passes import UNOPTIMIZED, Job, rows_of
from .priors import DataMoments, PriorParams, resolve_prior
from .sources import ArraySource, Centring, check_chunk_size, choose_chunk_size, is_source, prefetch
from .stats import accumulate, choose_block_size, e_step, sum_blocks

# Rows of the sample behind the starting values: k-means++ costs K x rows x D per start.
SAMPLE_ROWS = 2**15
# At most this many Lloyd iterations as passes over the data after those on the sample.
LLOYD_PASSES = 20


def _per_fit(fn, single: bool, n_shared: int = 0):
    """``fn`` over the (candidate, restart) axes of its first arguments; the last ``n_shared``
    arguments are the same for every fit."""
    if single:
        return fn

    def batched(*args):
        k = len(args) - n_shared
        inner = jax.vmap(fn, in_axes=(0,) * k + (None,) * n_shared)
        return jax.vmap(inner, in_axes=(0,) * k + (None,) * n_shared)(*args)

    return batched


# --------------------------------------------------------------------------- piece functions
# fn(xt (D, B), w (B,), index, operand, static) -> (sums, keep): see bayesgmm.passes.


def _moments_fn(xt, w, index, shift, static):
    block = choose_block_size(xt.shape[1], 1, xt.shape[0])

    def block_fn(xb, wb, i):
        xc = xb - shift[:, None]
        xw = xc * wb[None, :]
        return jnp.sum(wb), jnp.sum(xw, axis=1), xw @ xc.T

    return sum_blocks(xt, w, block, block_fn), None


def _estep_fn(xt, w, index, params, static):
    covariance_type, single = static
    k, d = params.means.shape[-2:]
    block = choose_block_size(xt.shape[1], k, d)
    stats, ref = _per_fit(lambda p: e_step(xt, w, block, p, covariance_type), single)(params)
    return stats, ref


def _lloyd_fn(xt, w, index, operand, static):
    centers, active = operand
    k, d = centers.shape[-2:]
    block = choose_block_size(xt.shape[1], k, d)

    def one(c, a):
        def block_fn(xb, wb, i):
            one_hot = nearest(xb, c, a) * wb[None, :]
            return jnp.sum(one_hot, axis=1), one_hot @ xb.T

        return sum_blocks(xt, w, block, block_fn)

    return _per_fit(one, static)(centers, active), None


def _nearest_fn(xt, w, index, operand, static):
    centers, active = operand
    covariance_type, single = static
    k, d = centers.shape[-2:]
    block = choose_block_size(xt.shape[1], k, d)

    def one(c, a):
        return accumulate(xt, w, block, c, nearest_resp_fn(c, a), covariance_type)

    return _per_fit(one, single)(centers, active), None


# --------------------------------------------------------------------------- compiled steps


@partial(bounded_jit, static_argnames=("n_components", "init", "n_init", "single"))
def _sample_centres(rng_key, sample_t, sample_w, n_active, n_components, init, n_init, single):
    """Centres (fits..., K, D) and active masks (fits..., K) of every start, from the sample."""
    block = choose_block_size(sample_t.shape[1], n_components, sample_t.shape[0])

    def one(k_active, key):
        active = jnp.arange(n_components) < k_active
        if init == "random_from_data":
            noise = jax.random.gumbel(key, sample_w.shape, sample_w.dtype)
            _, idx = jax.lax.top_k(jnp.where(sample_w > 0, noise, -jnp.inf), n_components)
            return sample_t[:, idx].T, active
        centers = kmeans_plusplus(key, sample_t, sample_w, n_components)
        if init == "kmeans":
            centers = lloyd(sample_t, sample_w, block, centers, active)
        return centers, active

    keys = jax.random.split(rng_key, n_init)
    if single:
        return one(n_active[0], keys[0])
    return jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None))(n_active, keys)


@partial(bounded_jit, static_argnames=("n_components", "covariance_type", "n_init", "single"))
def _sample_random(
    rng_key, sample_t, sample_w, n_active, prior, reg_covar, n_components, covariance_type,
    n_init, single,
):  # fmt: skip
    """``init="random"``: random responsibilities of the sample's rows, then an M-step."""
    block = choose_block_size(sample_t.shape[1], n_components, sample_t.shape[0])

    def one(k_active, prior, key):
        active = jnp.arange(n_components) < k_active
        params = initial_params(
            key, sample_t, sample_w, block, n_components, "random", prior, reg_covar,
            covariance_type, active,
        )  # fmt: skip
        return params, active

    keys = jax.random.split(rng_key, n_init)
    if single:
        return one(n_active[0], jax.tree.map(lambda a: a[0], prior), keys[0])
    per = jax.vmap(one, in_axes=(None, None, 0))
    return jax.vmap(per, in_axes=(0, 0, None))(n_active, prior, keys)


@partial(bounded_jit, compiler_options=UNOPTIMIZED)
def _lloyd_update(centers, sums):
    nk, total = sums
    new = jnp.where(nk[..., None] > 0, total / jnp.where(nk > 0, nk, 1)[..., None], centers)
    return new, jnp.max(jnp.abs(new - centers))


def _prior_of_fit(prior, single):
    # Priors come per candidate (n_candidates, ...); a single fit takes the first.
    return jax.tree.map(lambda a: a[0], prior) if single else prior


# The per-iteration programs below handle parameters, not rows: small whatever the data, so
# compiled without LLVM's optimisations (which would cost seconds of compile time).
@partial(
    bounded_jit,
    static_argnames=("covariance_type", "max_iter", "single"),
    compiler_options=UNOPTIMIZED,
)
def _start_from_stats(stats, centers, active, prior, settings, covariance_type, max_iter, single):
    """The M-step from the starting assignments, and the EM state and configuration."""
    tol, reg_covar, threshold = settings

    def one(stats, centers, active, prior):
        params = m_step(stats, centers, prior, reg_covar, covariance_type, active)
        return EMConfig(tol, reg_covar, prior, threshold, active), init_state(params, max_iter)

    if single:
        return one(stats, centers, active, _prior_of_fit(prior, True))

    def per_candidate(stats, centers, active, prior):
        return jax.vmap(one, in_axes=(0, 0, 0, None))(stats, centers, active, prior)

    return jax.vmap(per_candidate)(stats, centers, active, prior)


@partial(
    bounded_jit,
    static_argnames=("covariance_type", "max_iter", "single"),
    compiler_options=UNOPTIMIZED,
)
def _start_from_params(params, active, prior, settings, covariance_type, max_iter, single):
    tol, reg_covar, threshold = settings
    if not isinstance(params, GMMParams):  # (weights, means, covariances) given by the user
        params = make_params(*params, covariance_type)

    def one(params, active, prior):
        return EMConfig(tol, reg_covar, prior, threshold, active), init_state(params, max_iter)

    if single:
        return one(params, active, _prior_of_fit(prior, True))
    per = jax.vmap(one, in_axes=(0, 0, None))
    return jax.vmap(per)(params, active, prior)


@partial(
    bounded_jit,
    static_argnames=("covariance_type", "max_iter", "single"),
    compiler_options=UNOPTIMIZED,
)
def _advance(state, stats, ref, cfg, covariance_type, max_iter, single):
    step = partial(advance, covariance_type=covariance_type, max_iter=max_iter)
    new = _per_fit(step, single)(state, stats, ref, cfg)
    return new, jnp.all(new.done)


@partial(bounded_jit, static_argnames=("covariance_type", "single"), compiler_options=UNOPTIMIZED)
def _finish(state, cfg, covariance_type, single):
    out = _per_fit(partial(finish, covariance_type=covariance_type), single)(state, cfg)
    return jax.tree.map(lambda a: a[None, None], out) if single else out


# --------------------------------------------------------------------------- the driver


class Group(NamedTuple):
    """The fits of one covariance type: candidates ``ks``, each with ``n_fits`` restarts."""

    covariance_type: str
    ks: np.ndarray  # shape=(n_candidates,), int32: the candidates' numbers of components
    priors: list  # PriorParams or None per candidate
    prior_batch: PriorParams | None  # the priors stacked (leading axis n_candidates)
    n_fits: int  # restarts per candidate

    @property
    def single(self) -> bool:
        """One fit: the compiled steps take no batch axes."""
        return self.n_fits == 1 and len(self.ks) == 1


def _seed(rng_key) -> list[int]:
    key = rng_key
    if jnp.issubdtype(getattr(key, "dtype", np.uint32), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return [int(x) for x in np.asarray(key, np.uint32).ravel()]


def data_moments(rows, take=None) -> tuple[DataMoments, tuple | None]:
    """The rows' :class:`~bayesgmm.priors.DataMoments` from one pass (about process 0's first
    row, so that the scatter does not cancel), and the rows ``take`` if given: (float64 rows of
    the data as given, weights)."""
    # Centred on the host as the rows are read (before the cast: rows far from the origin keep
    # their digits), the pass itself needs no shift.
    shift = np.asarray(rows.first_row(), np.float64)
    rows.centring = Centring(shift, 1.0)
    try:
        res = rows.run([Job(_moments_fn, np.zeros_like(shift, rows.dtype), None)], take=take)
    finally:
        rows.centring = None
    (((weight, s1, s2), _),), sample = (res, None) if take is None else res
    weight = float(weight)
    s1 = np.asarray(s1, np.float64)
    covariance = (np.asarray(s2, np.float64) - np.outer(s1, s1) / weight) / weight
    mean = shift + s1 / weight
    if sample is not None:
        sample = (np.asarray(sample[0], np.float64) + shift, sample[1])
    return DataMoments(mean, covariance, weight), sample


def fit(
    rows,
    groups: list[tuple[str, list[int]]],
    prior,
    *,
    rng_key,
    n_init: int,
    init: str,
    max_iter: int,
    tol: float,
    reg_covar: float,
    init_params: tuple | None = None,
) -> list[list[Outcome | str]]:
    """EM fits of every group ``(covariance_type, n_components list)`` on ``rows``.

    Parameters
    ----------
    rows : StreamRows or ShardedRows
    groups : list of (str, list of int)
    prior : None, "default" or Prior
        Data-based defaults come from the moments of the first pass.
    init_params : (weights, means, covariances), optional
        The single start of a single fit (validated).

    Returns
    -------
    list of list of Outcome or str
        Per group and candidate, its best restart, or the message of a singular fit.
    """
    dtype = rows.dtype
    rng_key = key_on_host(rng_key)
    rng = np.random.default_rng(_seed(rng_key) + [jax.process_index()])
    take = None if init_params is not None else rows.sample(rng, SAMPLE_ROWS)
    moments, sample = data_moments(rows, take)
    # The fits work on (x - shift) / scale, as in memory (bayesgmm._transform): the rows are
    # centred and scaled as they are read, and parameters, prior, reg_covar and the
    # log-likelihood are mapped.
    t = transform_of_moments(moments.mean, np.diagonal(moments.covariance))
    rows.centring = Centring(t.shift, t.scale)
    if sample is not None:
        sample = (((sample[0] - t.shift) / t.scale).astype(dtype), sample[1])
    eps = np.finfo(dtype).eps
    var = np.diagonal(moments.covariance) / t.scale**2
    threshold = ((SINGULAR_FACTOR * eps) ** 2 * var).astype(dtype)
    reg_w = reg_covar / t.scale**2
    check_in_range(reg_w, dtype, f"reg_covar={reg_covar:g}")
    settings = (dtype.type(tol), dtype.type(reg_w), threshold)

    specs = []
    for covariance_type, ks in groups:
        priors = [resolve_prior(prior, moments, k, covariance_type) for k in ks]
        batch = None
        if priors[0] is not None:
            working = [prior_to_working(p, t, k, dtype) for p, k in zip(priors, ks, strict=True)]
            batch = jax.tree.map(lambda *a: np.stack(a).astype(dtype), *working)
        n_fits = 1 if init_params is not None else n_init
        specs.append(Group(covariance_type, np.asarray(ks, np.int32), priors, batch, n_fits))

    starts = _starts(rows, specs, sample, settings, rng_key, init, init_params, max_iter, t)
    states = [s[1] for s in starts]
    cfgs = [s[0] for s in starts]
    done = [False] * len(specs)
    while not all(done):
        live = [g for g, d in enumerate(done) if not d]
        jobs = [
            Job(_estep_fn, states[g].params, (specs[g].covariance_type, specs[g].single))
            for g in live
        ]
        for g, (stats, ref) in zip(live, rows.run(jobs), strict=True):
            states[g], finished = _advance(
                states[g], stats, ref, cfgs[g], covariance_type=specs[g].covariance_type,
                max_iter=max_iter, single=specs[g].single,
            )  # fmt: skip
            done[g] = bool(finished)
    out = []
    for g, spec in enumerate(specs):
        res = jax.device_get(
            _finish(states[g], cfgs[g], covariance_type=spec.covariance_type, single=spec.single)
        )
        ks, priors = spec.ks, spec.priors
        best = [
            best_restart(res, spec.covariance_type, reg_covar, c, int(k), p)
            for c, (k, p) in enumerate(zip(ks, priors, strict=True))
        ]
        # Scalars of the data as given (the weights are not normalised here: factor 1).
        d, ct, total = rows.n_features, spec.covariance_type, moments.total_weight
        out.append(
            [b if isinstance(b, str) else to_data_units(b, t, d, ct, 1.0, total) for b in best]
        )
    return out


def _starts(rows, specs, sample, settings, rng_key, init, init_params, max_iter, t: Transform):
    """(EMConfig, EMState) of every group (working units: ``t``)."""
    dtype = rows.dtype
    if init_params is not None:
        out = []
        for covariance_type, ks, _, prior, _ in specs:
            params = params_to_working(
                *init_params, t, covariance_type, dtype, name="init_params['{}']"
            )
            active = np.ones(int(ks[0]), bool)
            out.append(
                _start_from_params(
                    params,
                    active,
                    prior,
                    settings,
                    covariance_type=covariance_type,
                    max_iter=max_iter,
                    single=True,
                )  # fmt: skip
            )
        return out
    sample_x, sample_w = sample
    sample_t = jnp.asarray(np.ascontiguousarray(sample_x.T), dtype)
    sample_w = jnp.asarray(sample_w, dtype)
    all_rows = sample_x.shape[0] >= rows.n_total
    out: list = [None] * len(specs)
    centres: dict[int, tuple] = {}
    for g, (covariance_type, ks, _, prior, n_fits) in enumerate(specs):
        single = specs[g].single
        if init == "random":
            params, active = _sample_random(
                rng_key, sample_t, sample_w, ks, prior, settings[1], n_components=int(ks.max()),
                covariance_type=covariance_type, n_init=n_fits, single=single,
            )  # fmt: skip
            out[g] = _start_from_params(
                params, active, prior, settings, covariance_type=covariance_type,
                max_iter=max_iter, single=single,
            )  # fmt: skip
            continue
        centres[g] = _sample_centres(
            rng_key, sample_t, sample_w, ks, n_components=int(ks.max()), init=init,
            n_init=n_fits, single=single,
        )  # fmt: skip
    if init == "kmeans" and not all_rows:
        _lloyd_passes(rows, specs, centres)
    if centres:
        jobs = [
            Job(_nearest_fn, centres[g], (specs[g].covariance_type, specs[g].single))
            for g in centres
        ]
        for g, (stats, _) in zip(centres, rows.run(jobs), strict=True):
            covariance_type, prior = specs[g].covariance_type, specs[g].prior_batch
            out[g] = _start_from_stats(
                stats, *centres[g], prior, settings, covariance_type=covariance_type,
                max_iter=max_iter, single=specs[g].single,
            )  # fmt: skip
    return out


def _lloyd_passes(rows, specs, centres) -> None:
    """Lloyd's iterations as passes over the data, until no centre moves (in place)."""
    moving = set(centres)
    for _ in range(LLOYD_PASSES):
        if not moving:
            return
        live = sorted(moving)
        jobs = [Job(_lloyd_fn, centres[g], specs[g].single) for g in live]
        for g, (sums, _) in zip(live, rows.run(jobs), strict=True):
            new, shift = _lloyd_update(centres[g][0], sums)
            centres[g] = (new, centres[g][1])
            if not float(shift) > 0:
                moving.discard(g)


# --------------------------------------------------------------------------- the entry point


def streamed_or_sharded(X) -> bool:
    """Whether ``X`` is fitted here: a source, a sharded source, or a row-sharded array."""
    return is_source(X) or isinstance(X, dist.ShardedSource) or dist.is_sharded(X)


def fit_rows(
    groups: list[tuple[str, list[int]]],
    X,
    sample_weight,
    *,
    prior,
    reg_covar: float,
    chunk_size,
    rng_key,
    n_init: int,
    init: str,
    max_iter: int,
    tol: float,
    init_params: dict | None = None,
) -> tuple[list[list[Outcome | str]], int, int]:
    """:func:`fit` on ``X`` (a source, sharded rows, or an array streamed in chunks).

    The EM settings and the prior are validated already; ``chunk_size``, ``sample_weight``
    and ``init_params`` are validated here. Returns the outcomes per group and candidate, the
    number of rows (of every process) and of features.
    """
    chunk_size = check_chunk_size(chunk_size)
    dtype = np.dtype(float_dtype())
    w = sample_weight
    if w is not None and not (is_source(w) or dist.is_sharded(w)):
        if dist.is_sharded(X):
            w = np.asarray(w)  # checked against this process's rows by the engine
        else:
            source = X.source if isinstance(X, dist.ShardedSource) else X
            w = v.check_sample_weight(w, source.shape[0])
    rows = rows_of(X, w, chunk_size, dtype)
    d = rows.n_features
    ip = None
    if init_params is not None:
        covariance_type, (k,) = groups[0]
        ip = v.check_init_params(init_params, k, d, covariance_type)
        n_init = 1
    for _, ks in groups:
        for k in ks:
            if k > rows.n_total:
                raise ValueError(f"n_components={k} exceeds n_samples={rows.n_total}.")
    outcomes = fit(
        rows, groups, prior, rng_key=rng_key, n_init=n_init, init=init, max_iter=max_iter,
        tol=tol, reg_covar=reg_covar, init_params=ip,
    )  # fmt: skip
    return outcomes, rows.n_total, d


def local_rows(X):
    """What scoring reads: the source (of this process), or a sharded array's rows in memory."""
    if isinstance(X, dist.ShardedSource):
        return X.source.source
    return dist.local_rows(X) if dist.is_sharded(X) else X


def map_source(X, params, n_features: int, fn) -> np.ndarray:
    """``fn(xt, block_size)`` (a per-row result, (B, ...)) over a source's chunks, joined."""
    src = ArraySource(X)
    if src.n_features != n_features:
        raise ValueError(
            f"X has {src.n_features} features, but the mixture was fitted with {n_features} "
            "features."
        )
    # Rows as precise as the source's (up to float64): the caller maps them to the fit's
    # working space in float64 (bayesgmm.scoring), so a cast first would lose their digits.
    working = np.dtype(params.means.dtype)
    dtype = np.promote_types(src.dtype, working) if src.dtype.kind == "f" else np.float64
    chunk = choose_chunk_size(None, src.n_rows, n_features, dtype.itemsize)
    block = choose_block_size(chunk, params.means.shape[0], n_features)
    parts = [
        np.asarray(fn(c.xt, block))[: c.stop - c.start] for c in prefetch(src, None, chunk, dtype)
    ]
    return np.concatenate(parts)
