"""NUTS on the mixture's NumPyro model, from every distinct EM optimum, with modes weighed.

This module receives arrays: the data, the resolved prior and the reference parameters (EM
optima, best first) built by the front end (:mod:`bayesgmm.sampler`); it never sees the
user-facing classes.

The sampler is NumPyro's NUTS kernel (``numpyro.infer.hmc.hmc(algo="NUTS")``, the kernel behind
``numpyro.infer.NUTS``) driven by a small compiled loop, BlackJAX style: a jitted ``init`` that
builds the first state of a chain, and a jitted ``run`` that advances it a fixed number of
iterations (a chunk) and returns the constrained draws and per-iteration statistics (both in
:mod:`bayesgmm._nuts_compiled`). The potential is that of :func:`bayesgmm.model.mixture_model`, the
one NumPyro declaration that ``Mixture.model`` binds, written out in NumPyro's unconstrained
parametrisation (:mod:`bayesgmm.potential`, tested against NumPyro's ``potential_energy`` of the
model, because its gradient compiles in a fraction of the time), with the data and the prior passed
as arguments rather than baked into the compiled code; the chains move one flat vector.

Why not ``numpyro.infer.MCMC``? On a CPU its set-up runs the model and the first NUTS state op by op
(hundreds of small XLA compilations) and recompiles on every call. Here each piece compiles once
per process and structure (number of components, dimension, covariance type, ``num_warmup``,
tuning options); a later call on data of the same shape starts sampling at once. On a first call
the front end starts compiling ``init`` and ``run`` in a worker thread before it runs the
reference EM fits, so the two overlap; ``init`` holds no gradient (the start's potential is set
high, so the first warm-up transition leaves it), the draws are constrained inside ``run``, and
the keys, the jitter, the log-likelihood and the log prior are NumPy work rather than programs
of their own.

Chains. ``chain_method="parallel"`` runs one chain per device with ``jax.pmap``; ``"sequential"``
runs each chain as its own sequence of calls of the same compiled code, as many at a time as the
process has CPU cores (in threads; XLA runs outside the GIL), ``"vectorized"`` under ``jax.vmap``
on one device (all chains in lock step, each iteration costing the longest tree among them, which
a CPU does not pay back; see ``benchmarks/README.md`` for measurements).

Modes. ``num_chains`` chains start, jittered, from each reference (a distinct EM optimum). Every
draw is classified by the configuration whose allocation probabilities are nearest, and each
chain by where most of its draws are (:mod:`bayesgmm.modes`). With more than one occupied mode,
their masses are estimated by importance sampling and the returned chains are composed of the
modes' draws in those proportions; ``MultimodalPosteriorWarning`` then says so, naming the modes.
When the chains disagree (R-hat of the total log-likelihood over all of them above
``modes.RHAT_DISAGREE``), whether or not their configurations differ, they settled in basins they
do not leave: tempered SMC from those basins weighs them (:mod:`bayesgmm.basins`), those weights
supersede the importance-sampling masses, and the returned chains are composed chain by chain.

Label switching. The returned draws are relabelled by Stephens' (2000) KL algorithm on the
allocation probabilities (:mod:`bayesgmm.relabel`), started from the best reference so that the
labels follow its order. Permutation-invariant quantities (the total log-likelihood and the
mixture log-density at a few fixed points) are stored beside them, in ``posterior_invariant``.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _tree, em
from . import basins as _basins
from . import modes as _modes
from . import potential as _potential
from ._nuts_compiled import CHUNK, device_args, kernel_pieces, potential_transforms
from ._progress import Progress, show_progress
from .exceptions import MultimodalPosteriorWarning
from .numerics import float_dtype
from .priors import PriorParams
from .relabel import (
    apply_permutation,
    log_component_densities,
    relabel_permutations,
    row_subset,
    stephens_relabel,
)

if TYPE_CHECKING:
    import xarray

__all__ = ["MultimodalPosteriorWarning", "Settings", "relabel_permutations", "sample_posterior"]


CHAIN_METHODS = ("parallel", "vectorized", "sequential")

# Scale of the per-chain jitter around the reference fit, in posterior standard deviations for
# the means and in absolute units of the unconstrained space for the other sites (log-variances,
# stick-breaking logits): for tens to hundreds of rows per component both are about one
# posterior standard deviation.
JITTER = 1.0
JITTER_UNCONSTRAINED = 0.1

# Quantiles of each feature at which the mixture log-density is recorded (fixed points).
DENSITY_QUANTILES = (0.1, 0.5, 0.9)


class Settings(NamedTuple):
    """Validated sampler settings (the front end checks them)."""

    num_chains: int = 4
    num_warmup: int = 1000
    num_samples: int = 1000
    chain_method: str = "sequential"
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    dense_mass: bool = False
    log_likelihood: bool = True
    progress_bar: bool | None = None


# --------------------------------------------------------------------------- helpers


def _variances(covariances: np.ndarray, covariance_type: str, k: int, d: int) -> np.ndarray:
    """Per-component, per-feature variances, shape (K, D)."""
    c = np.asarray(covariances, np.float64)
    if covariance_type == "full":
        return np.diagonal(c, axis1=-2, axis2=-1)
    if covariance_type == "tied":
        return np.broadcast_to(np.diagonal(c), (k, d))
    if covariance_type == "diag":
        return c
    return np.broadcast_to(c[:, None], (k, d))


def _jittered_starts(
    z_ref: dict,
    reference: dict,
    covariance_type: str,
    n_effective: float,
    num_chains: int,
    rng_key,
) -> dict:
    """Per-chain starting points in unconstrained space: shape (num_chains, ...) per site.

    The noise is drawn with NumPy (seeded from ``rng_key``): drawn with JAX it would compile a
    small program per site on the first call of a process.
    """
    w_ref, mu_ref = reference["weights"], reference["means"]
    k, d = mu_ref.shape
    # Posterior standard deviation of each mean, roughly sqrt(var_kd / n_k).
    variances = _variances(reference["covariances"], covariance_type, k, d)
    mean_sd = np.sqrt(variances / np.maximum(w_ref * n_effective, 1.0)[:, None])
    dtype = np.dtype(float_dtype())
    rng = np.random.default_rng(_numpy_seed(rng_key))
    starts = {}
    for name, z in sorted(z_ref.items()):
        z = np.asarray(z, np.float64)
        noise = rng.standard_normal((num_chains,) + z.shape)
        scale = JITTER * mean_sd if name == "means" else JITTER_UNCONSTRAINED
        starts[name] = np.asarray(z[None] + scale * noise, dtype)
    return starts


def host_keys(rng_key, shape: tuple[int, ...], stream: int) -> np.ndarray:
    """Raw PRNG keys (``shape + (2,)``, uint32) derived on the host from ``rng_key``.

    ``stream`` separates independent uses of one key. Derived with NumPy rather than by
    ``jax.random.split``/``fold_in``, which compile a program each on a first call.
    """
    rng = np.random.default_rng([*_numpy_seed(rng_key).tolist(), stream])
    return rng.integers(0, 2**32, size=tuple(shape) + (2,), dtype=np.uint32)


def choose_chain_method(chain_method: str | None, num_chains: int) -> str:
    """The chain method for ``chain_method`` (None: chosen for the devices), validated."""
    if chain_method is None:
        if num_chains > 1 and jax.local_device_count() >= num_chains:
            return "parallel"
        return "sequential" if jax.default_backend() == "cpu" else "vectorized"
    if chain_method not in CHAIN_METHODS:
        raise ValueError(
            f"chain_method must be None or one of {', '.join(map(repr, CHAIN_METHODS))}, "
            f"got {chain_method!r}."
        )
    if chain_method == "parallel" and jax.local_device_count() < num_chains:
        raise ValueError(
            f"chain_method='parallel' needs one device per chain: num_chains={num_chains} but "
            f"jax.local_device_count()={jax.local_device_count()}. Use 'vectorized' or "
            "'sequential', or fewer chains."
        )
    return chain_method


def _run_chains(kernel, method, starts, keys, args, num_warmup, num_samples, progress, pair=None):
    """Run all chains; returns stats with leading axes (chain, draw), warm-up dropped.

    ``pair``: (init, run) compiled ahead of time for this method, or None (the jitted ones).
    """
    n_iter = num_warmup + num_samples
    n_chunks = math.ceil(n_iter / CHUNK)
    first_kept_chunk = num_warmup // CHUNK
    jitted = (kernel.init, kernel.run) if method == "sequential" else (kernel.vinit, kernel.vrun)
    if method == "parallel":
        jitted = (kernel.pinit, kernel.prun)

    stop = threading.Event()

    def loop(fns, z0, key, chain):
        init_fn, run_fn = fns
        try:
            state = init_fn(z0, key, *args)
        except TypeError:  # arguments unlike those compiled ahead of time: jit compiles anew
            init_fn, run_fn = jitted
            state = init_fn(z0, key, *args)
        kept = []
        divergences = 0
        for c in range(n_chunks):
            if stop.is_set():
                raise _Stopped
            state, stats = run_fn(state, *args)
            if c >= first_kept_chunk:
                kept.append(stats)
            if progress.bar is not None:
                # Count divergences after warm-up only (during warm-up they are expected).
                post_warmup = stats["diverging"][..., max(0, num_warmup - c * CHUNK) :]
                divergences += int(np.sum(np.asarray(post_warmup)))
                n_chains_here = 1 if chain is not None else jax.tree.leaves(z0)[0].shape[0]
                done = min((c + 1) * CHUNK, n_iter)
                progress.update(done, (done - c * CHUNK) * n_chains_here, divergences, chain)
        # stats are (..., CHUNK) per chunk along the iteration axis; join and trim.
        axis = 0 if chain is not None else 1
        joined = jax.tree.map(lambda *a: np.concatenate(a, axis=axis), *kept)
        start = num_warmup - first_kept_chunk * CHUNK
        return jax.tree.map(
            lambda a: np.take(a, np.arange(start, start + num_samples), axis=axis), joined
        )

    fns = jitted if pair is None else pair
    if method == "sequential":
        n_chains = keys.shape[0]
        x64 = bool(jax.config.jax_enable_x64)

        def one(i):
            # The caller's precision: enable_x64 is thread-local, and a chain that had to trace
            # its programs in a worker thread would otherwise trace them in the default one.
            with jax.enable_x64(x64):
                return loop(fns, starts[i], keys[i], i)

        # Each chain is its own sequence of calls of the compiled ``run``; XLA runs them outside
        # the GIL, so on a multi-core CPU several chains advance at once, one per core. The draws
        # do not depend on the number of threads (every chain has its own key).
        workers = min(n_chains, em.available_threads())
        if workers > 1:
            pool = ThreadPoolExecutor(workers, thread_name_prefix="bayesgmm-chain")
            try:
                futures = [pool.submit(one, i) for i in range(n_chains)]
                # Waiting in short slices keeps the main thread responsive to Ctrl-C (a wait
                # without a timeout would hold off the interrupt until every chain has ended).
                while True:
                    done, running = wait(futures, timeout=0.1, return_when=FIRST_EXCEPTION)
                    if not running or any(f.exception() is not None for f in done):
                        break
                per_chain = [f.result() for f in futures]
            except BaseException:
                # Ctrl-C (or an error) in the caller: the running chains stop at their next
                # chunk instead of being waited for.
                stop.set()
                raise
            finally:
                pool.shutdown(wait=False, cancel_futures=True)
        else:
            per_chain = [one(i) for i in range(n_chains)]
        return jax.tree.map(lambda *a: np.stack(a), *per_chain)
    return loop(fns, starts, keys, None)


class _Stopped(Exception):
    """A chain stopped because the call was interrupted."""


# --------------------------------------------------------------------------- the entry point


def sample_posterior(
    X: np.ndarray,
    sample_weight: np.ndarray | None,
    prior: PriorParams,
    references: list[dict],
    *,
    covariance_type: str,
    rng_key: jax.Array,
    settings: Settings,
    compiled=None,
) -> xarray.DataTree:
    """Sample the posterior of a mixture's parameters with NUTS, from every reference.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float64, validated
    sample_weight : ndarray of shape (n_samples,) or None
    prior : PriorParams
        The resolved prior (NumPy arrays).
    references : list of dict
        ``weights`` (K,), ``means`` (K, D), ``covariances`` (the covariance type's shape), NumPy
        float64: the distinct EM optima, best first. ``settings.num_chains`` chains start from
        each.
    covariance_type : str
    rng_key : jax.Array or ndarray
        A PRNG key (typed, or raw uint32).
    settings : Settings
    compiled : Future, optional
        From :func:`precompile`: the (init, run) programs being compiled ahead of time.

    Returns
    -------
    xarray.DataTree
        See :meth:`bayesgmm.Mixture.sample_posterior`.
    """
    s, ct = settings, covariance_type
    k, d = np.shape(references[0]["means"])
    n = X.shape[0]
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    t_start = time.perf_counter()
    args = device_args(X, w, prior)
    pair = None
    if compiled is not None:
        try:
            pair = compiled.result()
        except Exception:  # noqa: BLE001 - the jitted programs below compile it again, and
            pair = None  # raise whatever error it has where it belongs
    n_effective = float(w.sum())
    tf = potential_transforms(k, d, ct)
    kernel = kernel_pieces(
        k, d, ct, s.num_warmup, bool(s.dense_mass), s.target_accept_prob, s.max_tree_depth
    )
    n_runs, n_iter = len(references), s.num_warmup + s.num_samples
    total = n_runs * s.num_chains * n_iter
    progress = Progress(show_progress(s.progress_bar, 1, total), total, s.num_warmup)
    chain_keys = host_keys(rng_key, (n_runs, s.num_chains), stream=0)
    jitter_keys = host_keys(rng_key, (n_runs,), stream=1)
    runs = []
    try:
        t_sample = time.perf_counter()
        for r, ref in enumerate(references):
            z_ref = _potential.unconstrain(ref, ct)  # host float64; the starts are cast below
            starts = _jittered_starts(z_ref, ref, ct, n_effective, s.num_chains, jitter_keys[r])
            starts = _potential.pack(starts)  # (num_chains, size): the sampler's flat position
            chains = (kernel, s.chain_method, starts, chain_keys[r], args)
            runs.append(_run_chains(*chains, s.num_warmup, s.num_samples, progress, pair))
        sampling_time = time.perf_counter() - t_sample
    finally:
        progress.close()
    stats = jax.tree.map(lambda *a: np.stack(a), *runs)  # leading axes (run, chain, draw)

    # Every draw of every run, constrained (float64 NumPy), shape (R, C, S, ...).
    n_all = n_runs * s.num_chains * s.num_samples
    all_samples = {name: np.asarray(a, np.float64) for name, a in stats.pop("params").items()}
    single = n_runs == 1

    rows = row_subset(n)
    X_rows = X[rows]
    configurations = np.stack(
        [
            _modes.allocation(X_rows, {name: np.asarray(a)[None] for name, a in ref.items()}, ct)[0]
            for ref in references
        ]
    )
    flat_all = {name: a.reshape((n_all,) + a.shape[3:]) for name, a in all_samples.items()}
    P_all = _modes.allocation(X_rows, flat_all, ct)
    draw_mode, draw_perm, chain_mode, outside, roots, nearest = _modes.classify(
        X_rows, all_samples, configurations, ct, P_all
    )
    pointwise_all = None
    if single and s.log_likelihood:
        # One run: the returned draws are all the draws, so the pointwise log-likelihood serves
        # both the totals below and the log_likelihood group (one pass over the draws, not two).
        pointwise_all = _modes.pointwise_log_likelihood(X, all_samples, ct)  # (1, C, S, n)
        loglik_all = pointwise_all @ w
    else:
        loglik_all = _modes.total_log_likelihood(X, w, all_samples, ct)  # (R, C, S)
    occupied = sorted({int(m) for m in chain_mode.ravel()})
    rng = np.random.default_rng(host_keys(rng_key, (), stream=2))
    weighed = _weigh_basins(
        X, w, prior, all_samples, draw_perm, X_rows, configurations, ct, loglik_all,
        host_keys(rng_key, (), stream=3), progress.bar is not None,
    )  # fmt: skip
    lam = None if weighed is None else weighed.get("chain_weights")
    if lam is not None:
        # The chains' basins weighed by tempered SMC: each chain counts for its basin's mass
        # (these supersede importance sampling, which is not run), and the returned draws and
        # their configuration fractions are composed chain by chain.
        masses = {m: float(lam[chain_mode == m].sum()) for m in occupied}
        # No importance-sampling ESS: SMC's own check (two runs agreeing) is in the report.
        is_ess = dict.fromkeys(occupied, np.nan)
        chain_id = np.arange(lam.size).reshape(lam.shape)
        weights = {int(i): float(x) for i, x in enumerate(lam.ravel())}
        idx = _modes.compose(rng, chain_id, weights, s.num_chains, s.num_samples)
        fractions = _modes.weighted_fractions(nearest, lam, n_runs)
    else:
        masses, is_ess = {occupied[0]: 1.0}, {}
        if len(occupied) > 1:
            masses, is_ess = _modes.mode_masses(
                rng, tf, args, all_samples, (draw_mode, draw_perm, chain_mode, roots), occupied,
                X_rows, configurations, ct,
            )  # fmt: skip
        if single:
            idx = np.stack(
                np.meshgrid(0, np.arange(s.num_chains), np.arange(s.num_samples), indexing="ij"),
                -1,
            )[0]
        else:
            idx = _modes.compose(rng, chain_mode, masses, s.num_chains, s.num_samples)
        fractions = _modes.configuration_fractions(nearest, chain_mode, masses, n_runs)
    # The returned draws are all the draws, in their order (one run, not recomposed).
    all_draws = single and lam is None
    pick = (idx[..., 0], idx[..., 1], idx[..., 2])  # each (C, S)
    out_stats = jax.tree.map(lambda a: np.asarray(a)[pick], stats)
    samples = {name: a[pick] for name, a in all_samples.items()}
    ll = None
    if pointwise_all is not None:
        ll = pointwise_all[pick]
    elif s.log_likelihood:
        ll = _modes.pointwise_log_likelihood(X, samples, ct)

    # Stephens relabelling of the returned draws, started from the best occupied configuration.
    shape = (s.num_chains, s.num_samples)
    flat = {
        name: a.reshape((s.num_chains * s.num_samples,) + a.shape[2:])
        for name, a in samples.items()
    }
    start = occupied[int(np.argmax([masses[m] for m in occupied]))]
    start = 0 if 0 in occupied and masses[0] >= _modes.MIN_MODE_MASS else start
    P = P_all if all_draws else _modes.allocation(X_rows, flat, ct)
    perm, _ = stephens_relabel(P, configurations[start])
    relabeled = np.any(perm != np.arange(k), axis=1)
    flat = apply_permutation(flat, perm, ct)
    posterior = {name: flat[name].reshape(shape + flat[name].shape[1:]) for name in flat}

    points = np.quantile(X, DENSITY_QUANTILES, axis=0)  # (P, D)
    log_dens = log_component_densities(
        points, flat["weights"], flat["means"], flat["covariances"], ct
    )
    invariant = {
        "log_likelihood_total": loglik_all[pick],
        "log_density_at": _modes.logsumexp(log_dens, -1).reshape(shape + (len(points),)),
    }

    diagnostics = _modes.convergence(
        [posterior["weights"], posterior["means"], *invariant.values()]
    )
    report = _modes.report(
        references, occupied, masses, is_ess, chain_mode, outside, loglik_all, s.num_chains,
        diagnostics, fractions, weighed,
    )  # fmt: skip
    if report["message"]:
        warnings.warn(report["message"], MultimodalPosteriorWarning, stacklevel=3)

    sample_stats = _tree.sample_stats(out_stats, relabeled.reshape(shape), s.max_tree_depth)
    sample_stats["mode"] = draw_mode[pick].astype(np.int64)
    data: dict[str, dict[str, np.ndarray]] = {
        "posterior": posterior,
        "posterior_invariant": invariant,
        "sample_stats": sample_stats,
    }
    if ll is not None:
        data["log_likelihood"] = {"obs": ll}
    data["observed_data"] = {"obs": X}
    if sample_weight is not None:
        data["constant_data"] = {"sample_weight": w}
    mode_masses = np.array([masses.get(m, 0.0) for m in range(n_runs)])
    attrs = {
        "/": {
            "inference_library": "numpyro",
            "inference_library_version": _tree.package_version("numpyro"),
            "sampler": "NUTS",
            "bayesgmm_version": _tree.package_version("bayesgmm"),
            "n_components": k,
            "covariance_type": ct,
            "chain_method": s.chain_method,
            "num_warmup": s.num_warmup,
            "num_samples": s.num_samples,
            "num_chains": s.num_chains,
            "sampling_time": sampling_time,
            "total_time": time.perf_counter() - t_start,
        },
        "posterior": {
            "multimodal": int(bool(report["message"])),
            "n_modes": report["n_modes"],
            "mode_masses": mode_masses,
            "mode_is_ess": np.array([is_ess.get(m, np.nan) for m in range(n_runs)]),
            "mode_summary": report["summary"],
            "chains_outside": int(outside.sum()),
            "configuration_fractions": fractions,
            "max_rhat": diagnostics[0],
            "min_ess_bulk": diagnostics[1],
            **_basin_attrs(weighed),
        },
        "posterior_invariant": {
            "density_quantiles": np.asarray(DENSITY_QUANTILES),
            "density_points": points.ravel(),
        },
        "sample_stats": {"relabeled_fraction": float(np.mean(relabeled))},
    }
    return _tree.to_datatree(data, k, d, n, ct, attrs, n_points=len(points))


def _weigh_basins(
    X, w, prior, all_samples, draw_perm, X_rows, configurations, ct, loglik_all, seed,
    progress_bar=False,
):  # fmt: skip
    """Tempered-SMC weights of the chains' basins, when the chains disagree; else None.

    The chains disagree when the R-hat of the total log-likelihood over all of them (every
    reference's) exceeds ``modes.RHAT_DISAGREE``: they settled in basins they do not leave, and
    their share of the draws is no estimate of the basins' masses (:mod:`bayesgmm.basins`).
    Returns the weighing, ``{"error": message}`` when SMC fails, or None when not needed.
    """
    from arviz_stats.base import array_stats

    r, c, s = loglik_all.shape
    if r * c < 2:
        return None
    rhat = float(array_stats.rhat(loglik_all.reshape(r * c, s), chain_axis=0, draw_axis=1))
    if not rhat > _modes.RHAT_DISAGREE:
        return None
    try:
        out = _basins.weigh_chains(
            X, w, prior, all_samples, draw_perm, X_rows, configurations, ct,
            np.asarray(seed, np.uint32), progress_bar=progress_bar,
        )  # fmt: skip
    except (RuntimeError, FloatingPointError, np.linalg.LinAlgError) as err:
        return {"error": f"{type(err).__name__}: {err}", "loglik_rhat": rhat}
    out["loglik_rhat"] = rhat
    return out


def _basin_attrs(weighed) -> dict:
    if weighed is None:
        return {"basin_weighting": "none"}
    if "error" in weighed:
        return {"basin_weighting": "failed", "basin_weighting_error": weighed["error"]}
    return {
        "basin_weighting": "tempered SMC",
        "chain_weights": weighed["chain_weights"].ravel(),
        "smc_particles": weighed["num_particles"],
        "smc_stages": weighed["stages"],
        "smc_unique_ancestors": weighed["unique_ancestors"],
        "smc_log_evidence": weighed["log_evidence"],
        "smc_seconds": weighed["seconds"],
        "smc_configuration_fractions": weighed["fractions"],
        "smc_established": int(weighed["established"]),
        "smc_basin_weights_per_run": np.asarray(weighed["basin_weights_per_run"]).ravel(),
        "chain_basins": weighed["basins"].ravel(),
        "loglik_rhat_all_chains": weighed["loglik_rhat"],
    }


def _numpy_seed(key) -> np.ndarray:
    """A NumPy seed from a JAX key (raw uint32 or typed)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key, np.uint32).ravel()
