"""Front end of the posterior sampler: validation, the prior, and the reference fits.

``Mixture.sample_posterior`` calls :func:`sample_posterior` here. It checks the arguments (once,
at the public boundary), resolves the prior from the data exactly as ``fit_em`` does, finds the
distinct optima of many cheap EM restarts (the configurations the chains start from, see
:mod:`bayesgmm.modes`) and hands arrays to :func:`bayesgmm.nuts.sample_posterior`.

The reference EM runs with a weight concentration of at least ``1 + REFERENCE_ALPHA_MARGIN``: with
a flat Dirichlet (the default, alpha = 1) the MAP weight ``(n_k + alpha - 1) / (n + K (alpha - 1))``
of a component that holds no data is exactly 0, which EM cannot continue from; the margin keeps
such a component at a tiny positive weight with its covariance from the prior, a valid start for
the chains (which sample the prior as declared).
"""

from __future__ import annotations

import jax
import numpy as np

from . import _validation as v
from . import em, em_run
from ._nuts_compiled import abstract_args, precompile
from .driver import key_on_host
from .numerics import float_dtype
from .nuts import Settings, choose_chain_method, host_keys
from .priors import PriorParams
from .relabel import (
    allocation_probabilities,
    configuration_distance,
    log_component_densities,
    row_subset,
)
from .stats import choose_block_size

__all__ = ["find_references", "reference_prior", "sample_posterior"]

# Restarts of the reference EM (one vmapped program), from random data points: different starts
# end in the posterior's separated modes where k-means starts would agree.
N_RESTARTS = 24
REFERENCE_INIT = "random_from_data"
REFERENCE_ALPHA_MARGIN = 1e-3
# Optima whose log posterior density is within this many nats of the best become references: a
# mode's mass is its peak density times its volume, and a lower but broader peak can hold most
# of the mass (galaxies with two components: 4 nats lower, over 80% of the mass).
REFERENCE_GAP = 10.0
# At most this many references (chains run from each).
MAX_REFERENCES = 3
# Two optima are the same configuration when their allocation probabilities differ by less
# than this (mean Kullback-Leibler divergence per row, nats, minimised over label permutations).
SAME_CONFIGURATION = 0.05

_NEED_PRIOR = (
    "NUTS needs a proper prior: with prior=None the model is maximum likelihood, whose 'posterior' "
    "(a flat prior on the weights, means and covariances) is improper, so there is nothing to "
    'sample. Declare the mixture with a prior, e.g. Mixture({k}, "{ct}", prior="default") or '
    'Mixture({k}, "{ct}", prior=bayesgmm.Prior(...)).'
)


def reference_prior(prior: PriorParams) -> PriorParams:
    """The prior of the reference EM fits: weight concentration at least 1 + a margin."""
    return prior._replace(alpha=np.maximum(prior.alpha, 1.0 + REFERENCE_ALPHA_MARGIN))


def find_references(
    X: np.ndarray,
    w: np.ndarray,
    prior: PriorParams,
    n_components: int,
    covariance_type: str,
    rng_key,
    init: dict | None = None,
) -> tuple[list[dict], np.ndarray]:
    """Distinct EM optima, best first, as NumPy float64 parameter dicts.

    Parameters
    ----------
    X : ndarray (n, D), validated
    w : ndarray (n,)
    prior : PriorParams
    n_components, covariance_type
    rng_key : PRNG key
    init : dict, optional
        A user's reference (``weights``, ``means``, ``covariances``): it comes first.

    Returns
    -------
    references : list of dict
    objectives : ndarray
        The reference EM objective (log posterior density up to a constant) of each.
    """
    n, d = X.shape
    k, ct = n_components, covariance_type
    dtype = np.dtype(float_dtype())
    prior_batch = jax.tree.map(lambda a: np.asarray(a, dtype)[None], reference_prior(prior))
    settings = em.FitSettings(
        rng_key=key_on_host(rng_key),
        tol=dtype.type(1e-8),
        reg_covar=dtype.type(0.0),
        prior=prior_batch,
        init_params=None,
        n_active=np.array([k], np.int32),
    )
    static = em.FitStatic(
        n_components=k,
        covariance_type=ct,
        init=REFERENCE_INIT,
        max_iter=1000,
        n_init=N_RESTARTS,
        block_size=choose_block_size(n, k, d),
        n_candidates=1,
    )
    out = em_run.fit(np.asarray(X.T, dtype), np.asarray(w, dtype), settings, static)
    out = jax.device_get(out)
    ok = ~out.singular[0] & np.isfinite(out.objective[0])
    candidates = []
    if init is not None:
        candidates.append((np.inf, init))
    for i in np.flatnonzero(ok):
        p = jax.tree.map(lambda a, i=i: np.asarray(a[0, i], np.float64), out.params)
        params = {"weights": p.weights, "means": p.means, "covariances": p.covariances}
        candidates.append((float(out.objective[0, i]), params))
    if not candidates:
        raise ValueError(
            "The reference MAP-EM fits all ended in a singular covariance; pass init= (a fit or "
            "a dict of weights, means and covariances) to start the chains from."
        )
    candidates.sort(key=lambda c: -c[0])
    best = max(c[0] for c in candidates if np.isfinite(c[0])) if ok.any() else np.inf
    rows = row_subset(n)
    kept, kept_p, objectives = [], [], []
    for objective, params in candidates:
        if objective < best - REFERENCE_GAP or len(kept) >= MAX_REFERENCES:
            break
        p = allocation_probabilities(
            log_component_densities(
                X[rows],
                np.asarray(params["weights"])[None],
                np.asarray(params["means"])[None],
                np.asarray(params["covariances"])[None],
                ct,
            )
        )
        if kept_p:
            dist, _ = configuration_distance(p, np.concatenate(kept_p))
            if dist.min() < SAME_CONFIGURATION:
                continue
        kept.append({name: np.asarray(a, np.float64) for name, a in params.items()})
        kept_p.append(p)
        objectives.append(objective)
    return kept, np.asarray(objectives)


def sample_posterior(
    mixture,
    X,
    *,
    rng_key=0,
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    init: dict | None = None,
    sample_weight=None,
    progress_bar: bool | None = None,
    chain_method: str | None = None,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    log_likelihood: bool = True,
):
    """Validate, resolve the prior, find the references and sample; see ``Mixture``."""
    from . import nuts

    k, ct = mixture.n_components, mixture.covariance_type
    if mixture.prior is None:
        raise ValueError(_NEED_PRIOR.format(k=k, ct=ct))
    Xa = v.check_X(X)
    n, d = Xa.shape
    w = v.check_sample_weight(sample_weight, n)
    v.check_enough_samples(n, w, k)
    num_chains = v.check_positive_int(num_chains, "num_chains")
    num_samples = v.check_positive_int(num_samples, "num_samples")
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, (int, np.integer)):
        raise ValueError(f"num_warmup must be a non-negative integer, got {num_warmup!r}.")
    num_warmup = int(num_warmup)
    if num_warmup < 0:
        raise ValueError(f"num_warmup must be a non-negative integer, got {num_warmup}.")
    target_accept_prob = float(target_accept_prob)
    if not 0.0 < target_accept_prob < 1.0:
        raise ValueError(f"target_accept_prob must lie in (0, 1), got {target_accept_prob}.")
    max_tree_depth = v.check_positive_int(max_tree_depth, "max_tree_depth")
    method = choose_chain_method(chain_method, num_chains)
    if init is not None and not isinstance(init, dict):
        raise ValueError(
            "init must be None, a FitResult (e.g. from Mixture.fit_em) or a dict with "
            f"'weights', 'means' and 'covariances'; got {type(init).__name__}."
        )
    if init is not None:
        checked = v.check_init_params(init, k, d, ct)
        init = {
            name: np.asarray(a, np.float64)
            for name, a in zip(("weights", "means", "covariances"), checked, strict=True)
        }
    # Keys derived on the host: jax.random.split would compile a program on a first call.
    base_key = key_on_host(v.check_rng_key(rng_key))
    key_ref, key_sampler = host_keys(base_key, (), stream=10), host_keys(base_key, (), stream=11)
    settings = Settings(
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_samples=num_samples,
        chain_method=method,
        target_accept_prob=target_accept_prob,
        max_tree_depth=max_tree_depth,
        dense_mass=bool(dense_mass),
        log_likelihood=bool(log_likelihood),
        progress_bar=progress_bar,
    )
    # The sampler's programs start compiling in a worker thread (they need only shapes) while
    # the prior is resolved and the reference EM fits run.
    compiled = precompile(abstract_args(n, d, ct), k, ct, settings)
    # The prior as fit_em resolves it (data moments in the working precision).
    prior = mixture.resolve_prior(Xa, w)
    X64 = np.asarray(Xa, np.float64)
    references, _ = find_references(Xa, w, prior, k, ct, key_ref, init)
    return nuts.sample_posterior(
        X64,
        None if sample_weight is None else w,
        prior,
        references,
        covariance_type=ct,
        rng_key=key_sampler,
        settings=settings,
        compiled=compiled,
    )
