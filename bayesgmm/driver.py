"""The fitting driver: validated arrays and settings in, plain per-candidate outcomes out.

``Mixture.fit_em`` and ``select`` (and, beside this module, the streamed and sharded drivers)
come here once their arguments are validated. The driver resolves the prior from the data's
moments, runs every candidate and restart of one covariance type in one compiled program
(:func:`bayesgmm.em_run.fit`) and picks each candidate's best restart. It knows nothing of the
user-facing classes: the surface wraps its :class:`Outcome` in a ``FitResult``.
"""

from __future__ import annotations

import operator
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import jax
import numpy as np

from . import em, em_run
from ._transform import (
    Transform,
    check_in_range,
    extreme_outlier,
    fit_transform,
    log_prior_jacobian,
    normalise_weights,
    params_to_working,
    prior_to_working,
    to_working,
)
from ._validation import check_rng_key
from .mixed import merge_types, split_types
from .numerics import float_dtype
from .params import GMMParams
from .priors import DataMoments, Prior, PriorParams, needs_data, resolve_prior
from .stats import choose_block_size
from .stats import data_moments as _data_moments


class Outcome(NamedTuple):
    """The best restart of one candidate (NumPy scalars and arrays; ``params`` on the device)."""

    n_components: int
    params: GMMParams  # the parameters of the K used components
    n_iter: int
    converged: bool
    log_likelihood: float  # total weighted log-likelihood at ``params``
    objective: float  # log-likelihood plus log-prior
    history: np.ndarray  # shape=(n_iter,): the objective after each iteration
    prior: PriorParams | None  # the resolved hyperparameters (NumPy float64)
    # ``params`` are those of (X - shift) / scale; None: of X itself. The scalars above are those
    # of X as given.
    transform: Transform | None = None


def key_on_host(rng_key) -> np.ndarray | jax.Array:
    """A PRNG key from a seed or a key (see :func:`bayesgmm._validation.check_rng_key`)."""
    return check_rng_key(rng_key)


_moments_jit = jax.jit(_data_moments, static_argnames=("block_size",))


def data_moments(
    X: np.ndarray,
    sample_weight: np.ndarray,
    block_size: int | None = None,
    transform: Transform | None = None,
    working: np.ndarray | None = None,
) -> DataMoments:
    """Weighted mean, covariance and total weight of validated ``X`` (n, D), as given.

    The data are centred and scaled on the host (:func:`bayesgmm._transform.fit_transform`),
    cast to the working precision, their moments taken in one blocked pass of the sufficient
    statistics (:func:`bayesgmm.stats.data_moments`) and mapped back in float64; so float32
    moments of data near 1e8 keep their digits. ``block_size`` defaults to the one the fits use
    for one component.
    """
    n, d = X.shape
    dtype = np.dtype(float_dtype())
    t = fit_transform(X, sample_weight) if transform is None else transform
    # ``working``: X already mapped by ``transform`` into the working layout (a fit's own copy).
    Xt = to_working(X, t, dtype) if working is None else working
    block = choose_block_size(n, 1, d) if block_size is None else block_size
    # Concrete data give concrete moments even when called while JAX traces a function (the
    # NumPyro model, called with data, under jit).
    with jax.ensure_compile_time_eval():
        u, _ = normalise_weights(sample_weight)  # moments do not depend on the weights' scale
        moments = _moments_jit(Xt, u.astype(dtype), block_size=block)
    mean, cov, total = jax.device_get(moments)
    mean = t.shift + t.scale * np.asarray(mean, np.float64)
    cov = t.scale**2 * np.asarray(cov, np.float64)
    return DataMoments(mean, cov, float(np.sum(sample_weight)))


def singular_message(reg_covar: float, n_iter: int, with_prior: bool = False) -> str:
    """What to tell the user when every restart of a candidate ended in a singular covariance."""
    if with_prior:
        return (
            "EM failed: a component's covariance became singular after "
            f"{n_iter} iteration(s) despite the prior: the component collapsed onto a few "
            "(nearly) repeated points and the prior's scale was too small to hold its variance "
            "above zero. To fix it, use a stronger prior (a larger Prior(scale=...) or "
            "degrees_of_freedom) or fewer components."
        )
    return (
        "EM failed: a component's covariance became singular after "
        f"{n_iter} iteration(s): the component collapsed onto a few (nearly) repeated points, "
        "so its variance went to zero. To fix it, use a prior (Mixture(..., prior='default')) "
        f"to keep covariances away from zero, or a larger reg_covar (now {reg_covar:g})."
    )


def fit_candidates(
    X: np.ndarray,
    sample_weight: np.ndarray,
    n_components: list[int],
    covariance_type: str,
    prior: Prior | str | None,
    *,
    reg_covar: float,
    rng_key,
    n_init: int,
    init: str,
    max_iter: int,
    tol: float,
    init_params: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    moments: DataMoments | None = None,
    block_size: int | None = None,
    n_threads: int | None = None,
) -> list[Outcome | str]:
    """EM fits of one covariance type and prior for several numbers of components.

    The candidates run as :func:`plan_batches` groups them: one program padded to the largest K
    on small data (the candidates in turn), else each candidate alone at a bucketed K, in
    parallel threads. A candidate's restarts run a few iterations each, in turn, and the best
    runs on (``em._restarts_in_turn``).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Validated data, float64 preferably: centred, scaled and cast to the working dtype
        here (:mod:`bayesgmm._transform`).
    sample_weight : ndarray of shape (n_samples,)
        Validated weights.
    n_components : list of int
        The candidates, each at most the number of rows with positive weight.
    covariance_type : str
    prior : None, "default" or Prior
    reg_covar, rng_key, n_init, init, max_iter, tol
        Validated settings, as :meth:`bayesgmm.Mixture.fit_em` documents them.
    init_params : (weights, means, covariances), optional
        The single start of a single candidate (validated); ``n_init`` is then 1. Entries
        left None come from ``init``, restart by restart.
    moments : DataMoments, optional
        The data's moments, for the prior's data-based defaults; computed here when needed and
        not given (a caller fitting several covariance types computes them once).
    block_size : int, optional
        Rows per block; by default :func:`bayesgmm.stats.choose_block_size`.
    n_threads : int, optional
        Forwarded to :func:`bayesgmm.em_run.fit` (``None``: automatic).

    Returns
    -------
    list of Outcome or str
        Per candidate, its best restart, or an error message when every restart ended in a
        singular covariance.
    """
    planned = _plan(X, sample_weight, n_components, covariance_type, prior, reg_covar=reg_covar,
                    rng_key=rng_key, n_init=n_init, init=init, max_iter=max_iter, tol=tol,
                    init_params=init_params, moments=moments, block_size=block_size)  # fmt: skip
    return _collect(planned, _run_jobs(*planned[:3], n_threads), reg_covar, n_threads)


def fit_candidate_groups(
    X: np.ndarray,
    sample_weight: np.ndarray,
    groups: list[tuple[str, list[int]]],
    prior: Prior | str | None,
    *,
    n_threads: int | None = None,
    **settings,
) -> list[list[Outcome | str]]:
    """:func:`fit_candidates` for several (covariance type, n_components) groups.

    The distinct programs of all groups compile first, in parallel threads (XLA's compiler
    releases the GIL, so a search over four covariance types compiles in about half the time on
    two cores); the fits then run group after group in this thread. ``settings`` are the
    keyword arguments of :func:`fit_candidates` (``moments`` included: when it is None and the
    prior needs the data, they are computed once here from the shared transformed copy).
    """
    # One transformed copy of the data for every group (not one per covariance type), and the
    # data-based prior's moments taken from it once, not in a pass of their own per group.
    t = fit_transform(X, sample_weight)
    working = (t, to_working(X, t, np.dtype(float_dtype())))
    if settings.get("moments") is None and needs_data(prior):
        settings["moments"] = data_moments(X, sample_weight, transform=t, working=working[1])
    planned = [
        _plan(X, sample_weight, ks, cov, prior, working=working, **settings) for cov, ks in groups
    ]
    reg_covar = settings["reg_covar"]
    merged = merge_types(planned)
    if merged is not None:
        # One program for every covariance type (small data, maximum likelihood): a cold search
        # traces and compiles one program instead of one per type.
        outs = split_types(planned, _run_jobs(*merged, n_threads)[0])
        return [_collect(p, [o], reg_covar, n_threads) for p, o in zip(planned, outs, strict=True)]
    programs = {}
    for Xt, w, jobs, _ in planned:
        for _, job_settings, static in jobs:
            # As _run_jobs runs them: several jobs of a group each on one thread.
            job_threads = 1 if len(jobs) > 1 else n_threads
            programs.setdefault(static, (Xt, w, job_settings, static, job_threads))
    threads = em.available_threads() if n_threads is None else n_threads
    threads = max(1, min(threads, len(programs)))
    if threads > 1:
        x64 = bool(jax.config.jax_enable_x64)

        def compile_one(args):
            # JAX's x64 switch is thread-local: the worker must see the caller's.
            with jax.enable_x64(x64):
                em_run.precompile(*args)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(compile_one, programs.values()))
    return [_collect(p, _run_jobs(*p[:3], n_threads), reg_covar, n_threads) for p in planned]


def _plan(
    X,
    sample_weight,
    n_components,
    covariance_type,
    prior,
    *,
    reg_covar,
    rng_key,
    n_init,
    init,
    max_iter,
    tol,
    init_params=None,
    moments=None,
    block_size=None,
    working=None,
):
    """The compiled runs of :func:`fit_candidates`: ``(Xt, w, jobs, ctx)``.

    ``working``: ``(transform, Xt)`` already made from ``X`` (:func:`fit_candidate_groups`
    shares one between its groups), else made here.

    ``ctx`` holds what :func:`_collect` needs to turn the runs' outputs into outcomes.
    """
    n, d = X.shape
    dtype = np.dtype(float_dtype())
    # Host-side, in float64: centre and scale the data, normalise the weights (see
    # bayesgmm._transform), then cast to the working dtype. Every batch job below fits the
    # same transformed data; outcomes are mapped back to the data as given.
    if working is None:
        t = fit_transform(X, sample_weight)
        working = (t, to_working(X, t, dtype))  # the data as columns, see bayesgmm.stats
    t, Xt = working
    w, factor = _working_weights(sample_weight, prior, dtype)
    if moments is None and needs_data(prior):
        moments = data_moments(X, sample_weight, transform=t, working=Xt)
    priors = [resolve_prior(prior, moments, k, covariance_type) for k in n_components]
    reg_w = reg_covar / t.scale**2
    check_in_range(reg_w, dtype, f"reg_covar={reg_covar:g}")
    if init_params is not None:
        if all(a is not None for a in init_params):
            n_init = 1  # a fully given start leaves nothing to restart
        init_params = params_to_working(
            *init_params, t, covariance_type, dtype, name="init_params['{}']"
        )
    # NumPy arguments of the right dtype go straight into the compiled program: jnp.asarray
    # with a dtype conversion would compile a small program of its own for each of them.
    common = dict(
        rng_key=key_on_host(rng_key),
        tol=dtype.type(tol),
        reg_covar=dtype.type(reg_w),
        init_params=init_params,
    )
    if priors[0] is not None:
        working = [
            prior_to_working(p, t, k, dtype) for p, k in zip(priors, n_components, strict=True)
        ]
    plan = plan_batches(n, d, n_components, n_init)
    jobs = []
    for bucket, members in plan:
        k_max = max(bucket, max(n_components[c] for c in members))
        block = choose_block_size(n, k_max, d) if block_size is None else block_size
        prior_batch = None
        if priors[0] is not None:
            prior_batch = jax.tree.map(
                lambda *a: np.stack(a).astype(dtype), *(working[c] for c in members)
            )
        settings = em.FitSettings(
            **common,
            prior=prior_batch,
            n_active=np.asarray([n_components[c] for c in members], np.int32),
        )
        static = em.FitStatic(
            n_components=k_max,
            covariance_type=covariance_type,
            init=init,
            max_iter=max_iter,
            n_init=n_init,
            block_size=block,
            n_candidates=len(members),
            short_restarts=True,
            # Expanded first (see _collect); float32 only on data large enough for its speed
            # to matter, small data fit in a fraction of their compile time either way.
            centred=False if dtype == np.float64 or n * k_max * d >= _EXPAND_F32_SIZE else None,
        )
        jobs.append((members, settings, static))
    ctx = dict(n_components=n_components, priors=priors, t=t, d=d, factor=factor,
               covariance_type=covariance_type, max_iter=max_iter, dtype=dtype, X=X)  # fmt: skip
    return Xt, w, jobs, ctx


def _collect(planned, outs, reg_covar: float, n_threads) -> list[Outcome | str]:
    """Per candidate of a :func:`_plan`, its best restart (in data units) from ``outs``."""
    Xt, w, jobs, ctx = planned
    covariance_type, n_components = ctx["covariance_type"], ctx["n_components"]
    priors = ctx["priors"]
    outs = list(outs)
    # Components too far apart (in their own standard deviations) for the expanded E-step: its
    # cancellation would show in the objective, which then falls or cycles. Those jobs run
    # again, centring the rows on every component (bayesgmm.stats). So do float32 fits that
    # ended singular: there the cancellation (eps |xbar_k - c|^2 in a variance) reaches the
    # variances of a maximum-likelihood reg_covar floor, which centring resolves.
    f32 = ctx["dtype"] != np.float64
    redo = [
        i
        for i, (out, job) in enumerate(zip(outs, jobs, strict=True))
        if job[2].centred is False
        and (
            _expansion_too_coarse(out.params, covariance_type)
            or (f32 and bool(np.any(np.asarray(out.singular))))
        )
    ]
    if redo:
        again = [(m, s, st._replace(centred=True)) for m, s, st in (jobs[i] for i in redo)]
        for i, out in zip(redo, _run_jobs(Xt, w, again, n_threads), strict=True):
            outs[i] = out
    total = float(np.sum(w, dtype=np.float64))
    results: list[Outcome | str | None] = [None] * len(n_components)
    for (members, _, _), out in zip(jobs, outs, strict=True):
        for i, c in enumerate(members):
            k = n_components[c]
            best = best_restart(out, covariance_type, reg_covar, i, k, priors[c])
            if not isinstance(best, str):
                _warn_if_cycled(best, ctx["max_iter"])
                best = to_data_units(
                    best, ctx["t"], ctx["d"], covariance_type, ctx["factor"], total
                )
            results[c] = best
    if any(isinstance(r, str) for r in results):
        hint = extreme_outlier(ctx["X"])  # the cause of a collapse, when it is an extreme outlier
        if hint is not None:
            results = [f"{r} {hint}" if isinstance(r, str) else r for r in results]
    return results


def _warn_if_cycled(best: Outcome, max_iter: int) -> None:
    """Warn when EM stopped early without converging: the cycle test of bayesgmm.em.advance."""
    if not best.converged and best.n_iter < max_iter:
        warnings.warn(
            f"EM for n_components={best.n_components} stopped after {best.n_iter} iterations "
            "without converging: the objective returned to its value of two iterations before "
            "(it cycles at the limit of the working precision, typically from nearly singular "
            "covariances). The parameters are as good as this precision allows; "
            "converged=False.",
            RuntimeWarning,
            stacklevel=4,
        )


# Rows x largest K x features up to which a search over K runs as one program padded to the
# largest K (the candidates in turn): on small data a fit costs little more at K = 9 than at
# K = 1, and one compilation serves every candidate.
_ONE_BATCH = 2**15
# Beyond it each candidate runs alone (its own while_loop, no waiting for the slowest
# candidate) in a program for the smallest bucket that holds its K: k_max, k_max / 4, k_max / 16,
# ... (rounded up, down to 1). Every program costs seconds to compile, and the large K dominate a
# search's work (they take the most iterations: on the 20,000 x 5 set of bench_select.py, K = 1..4
# converge in 2-6 iterations, K = 5..9 in 10-200), so padding the small K costs little: there,
# three programs per covariance type instead of seven, for about a fifth more work.
_BUCKET_FACTOR = 4


def k_bucket(k: int, k_max: int) -> int:
    """The padded number of components a candidate with ``k`` runs at (at most ``k_max``)."""
    if k >= k_max:
        return k
    buckets, div = [k_max], _BUCKET_FACTOR
    while buckets[-1] > 1:
        buckets.append(-(-k_max // div))
        div *= _BUCKET_FACTOR
    return min(b for b in buckets if b >= k)


def plan_batches(
    n: int, d: int, n_components: list[int], n_init: int
) -> list[tuple[int, list[int]]]:
    """How the candidates of one search are grouped into compiled runs.

    Returns
    -------
    list of (int, list of int)
        Per run, the padded K and the indices of its candidates. A single candidate runs
        unpadded; a search on small data (``n * max(K) * d <= _ONE_BATCH``) runs as one batch;
        otherwise every candidate runs alone in a program for :func:`k_bucket` of its K,
        largest first (the longest runs start first when they run in parallel).
    """
    k_max = max(n_components)
    if len(n_components) == 1:
        return [(n_components[0], [0])]
    if n * k_max * d <= _ONE_BATCH:
        return [(k_max, list(range(len(n_components))))]
    order = sorted(range(len(n_components)), key=lambda c: -n_components[c])
    return [(k_bucket(n_components[c], k_max), [c]) for c in order]


def _run_jobs(Xt, w, jobs, n_threads):
    """Run each (members, settings, static) job; several at once on several cores.

    XLA runs one program on one core, and programs launched from separate threads run in
    parallel, so independent candidates share the cores; each then runs its compiled loop
    (``n_threads=1``) rather than splitting every iteration among threads.
    """
    if len(jobs) == 1:
        _, settings, static = jobs[0]
        return [jax.device_get(em_run.fit(Xt, w, settings, static, n_threads))]
    threads = em.available_threads() if n_threads is None else n_threads
    threads = max(1, min(threads, len(jobs)))

    def run(job):
        _, settings, static = job
        return jax.device_get(em_run.fit(Xt, w, settings, static, 1))

    if threads == 1:
        return [run(job) for job in jobs]
    # Compile each distinct program once (in parallel: XLA's compiler releases the GIL), then
    # run the candidates.
    firsts = {}
    for job in jobs:
        firsts.setdefault(job[2], job)
    with ThreadPoolExecutor(threads) as pool:
        early = dict(zip(firsts, pool.map(run, firsts.values()), strict=True))
        rest = [job for job in jobs if firsts[job[2]] is not job]
        later = iter(pool.map(run, rest))
    return [early[job[2]] if firsts[job[2]] is job else next(later) for job in jobs]


# The expanded E-step loses about eps * |mu_k - c|^2 / sigma_k^2 of a log-density (c the
# mixture mean). Above this, relative to 1, the fit is redone with rows centred on every
# component. float64: this keeps the EM objective monotone to round-off
# (tests/test_property.py). float32: components up to about 90 of their own standard
# deviations from the mixture mean (a bound; the errors measured against float64 are tens of
# times smaller, benchmarks/README.md), where float32 expanded runs about 1.8x faster than
# float64 and centred slower.
_EXPANSION_NOISE = {np.dtype(np.float64): 1e-11, np.dtype(np.float32): 1e-3}
# float32 expands from this many row-component-feature products (n K D) of a job.
_EXPAND_F32_SIZE = 2**18


def _expansion_too_coarse(params: GMMParams, covariance_type: str) -> bool:
    """Whether any fit's components sit too far from the mixture mean for the expansion.

    ``params`` have leading (candidate, restart) axes; components of weight 0 (padding) and
    non-finite fits are ignored.
    """
    w = np.asarray(params.weights, np.float64)
    mu = np.asarray(params.means, np.float64)
    pc = np.asarray(params.precisions_chol, np.float64)
    with np.errstate(all="ignore"):
        dev = mu - np.einsum("...k,...kd->...d", w, mu)[..., None, :]
        if covariance_type == "full":
            y = np.einsum("...kd,...kde->...ke", dev, pc)
        elif covariance_type == "tied":
            y = np.einsum("...kd,...de->...ke", dev, pc)
        elif covariance_type == "diag":
            y = dev * pc
        else:
            y = dev * pc[..., None]
        sep2 = np.where(w > 0, np.sum(y * y, axis=-1), 0.0)
        sep2 = np.where(np.isfinite(sep2), sep2, 0.0)
    dtype = np.dtype(params.means.dtype)
    return bool(np.finfo(dtype).eps * np.max(sep2) > _EXPANSION_NOISE[dtype])


def _working_weights(sample_weight: np.ndarray, prior, dtype) -> tuple[np.ndarray, float]:
    """The weights the compiled fit sees, and the factor that maps its sums back.

    Maximum likelihood does not depend on the weights' scale: they are normalised to mean 1
    (:func:`bayesgmm._transform.normalise_weights`). A MAP fit does (the weights count rows
    against the prior), so its weights go in as given and must be representable.
    """
    if prior is None:
        u, factor = normalise_weights(sample_weight)
        return u.astype(dtype), factor
    w = np.asarray(sample_weight, np.float64)
    check_in_range(np.sum(w), dtype, "sample_weight (their sum)")
    positive = w[w > 0]
    if np.min(positive) < np.finfo(dtype).tiny * 2**24:
        raise ValueError(
            f"sample_weight underflows {np.dtype(dtype).name}: the smallest positive weight is "
            f"{np.min(positive):.3g}. With a prior the weights' scale matters (they count rows "
            "against the prior); rescale them or use float64."
        )
    return w.astype(dtype), 1.0


def to_data_units(
    out: Outcome, t: Transform, d: int, covariance_type: str, factor: float, weight: float
) -> Outcome:
    """The log-likelihood, objective and history of the data as given (see _transform)."""
    shift = weight * d * t.log_scale  # sum of the weights times log|det| of the map
    jac = 0.0 if out.prior is None else log_prior_jacobian(t, out.n_components, d, covariance_type)
    ll = factor * (out.log_likelihood - shift)
    obj = factor * (out.objective - shift) - jac
    history = factor * (np.asarray(out.history, np.float64) - shift) - jac
    return out._replace(log_likelihood=ll, objective=obj, history=history, transform=t)


def best_restart(
    out: em.FitOutput, covariance_type: str, reg_covar: float, c: int, k: int, prior
) -> Outcome | str:
    """Candidate ``c``'s best restart of ``out`` (the in-memory and the streamed drivers'), or
    the message of a fit whose every restart ended singular (restarts that did are dropped with
    a warning)."""
    ok = ~out.singular[c] & np.isfinite(out.objective[c])
    if not np.any(ok):
        return singular_message(reg_covar, int(out.n_iter[c][0]), prior is not None)
    if not np.all(ok):
        helps = (
            "a stronger prior (a larger Prior(scale=...) or degrees_of_freedom) or fewer "
            "components avoids this"
            if prior is not None
            else f"a prior (prior='default') or a larger reg_covar (now {reg_covar:g}) avoids this"
        )
        warnings.warn(
            f"{int(np.sum(~ok))} of {len(ok)} restarts of K={k} ended in a singular covariance "
            f"and were discarded; {helps}.",
            RuntimeWarning,
            stacklevel=4,
        )
    best = int(np.argmax(np.where(ok, out.objective[c], -np.inf)))
    n_iter = int(out.n_iter[c][best])
    p = jax.tree.map(operator.itemgetter((c, best)), out.params)
    cov = p.covariances if covariance_type == "tied" else p.covariances[:k]
    pc = p.precisions_chol if covariance_type == "tied" else p.precisions_chol[:k]
    # device_put, not jnp.asarray, which compiles a small program per shape.
    params = GMMParams(*jax.device_put((p.weights[:k], p.means[:k], cov, pc)))
    return Outcome(
        n_components=k,
        params=params,
        n_iter=n_iter,
        converged=bool(out.converged[c][best]),
        log_likelihood=float(out.log_likelihood[c][best]),
        objective=float(out.objective[c][best]),
        history=np.asarray(out.history[c][best][1 : n_iter + 1]),
        prior=prior,
    )
