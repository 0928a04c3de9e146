"""Weigh the basins that NUTS chains settle in but do not cross, by tempered SMC from the chains.

On some posteriors chains started from different EM optima each stay in a basin of their own
(iris with three full components: some chains keep a small component on a few flowers, others
split versicolor from virginica), and the chains' share of draws says nothing about each
basin's posterior mass. Importance sampling with proposals fitted to each basin
(:func:`bayesgmm.modes.importance_masses`) weighs separated modes in a few dimensions, but its
weights degenerate in tens of dimensions. Here the proposal is annealed instead:

1. chains whose means lie within a standard deviation of each other in every coordinate form
   one basin (:func:`group_chains`); a Gaussian is fitted in the sampler's flat unconstrained
   space to each basin's draws under every label permutation, and their equal-weight mixture
   ``q`` covers every basin a chain found (:func:`basin_base`);
2. tempered SMC (:func:`bayesgmm.smc.tempered_smc`) moves particles from ``q`` to the posterior
   through ``q^(1 - beta) p(z | X)^beta``, reweighting and resampling at each stage and moving
   the particles with HMC (each with the mass matrix of the component it was drawn from), so the
   particles end in each basin in proportion to its posterior mass;
3. a basin's weight is the share of final particles descended from it, averaged over two
   independent runs whose difference is reported.

The returned draws are then composed of the chains' draws in proportion to those weights
(:func:`bayesgmm.modes.compose`), so a stuck chain counts for its basin's mass, not for one
chain in twelve. A basin that no chain found is not weighed: the warning says which chains and
configurations were.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from . import potential as _potential
from . import smc as _smc
from .modes import allocation, fit_gaussian, union_roots
from .relabel import apply_permutation, configuration_distance

__all__ = ["basin_base", "group_chains", "weigh_chains"]

# Particles of the tempered SMC (the standard error of a basin's fraction p is about
# sqrt(p (1 - p) / ESS) with an ESS of a fraction of this).
NUM_PARTICLES = 2000
# Draws of each chain used to fit its Gaussian (thinned evenly).
FIT_DRAWS = 500
# Two chains are in one basin when their means differ by less than this many of their own
# standard deviations in every coordinate (chains of one basin differ by Monte Carlo error, a
# small fraction of a standard deviation; chains of different basins by several somewhere).
SAME_BASIN = 1.0


# Independent SMC runs whose basin weights are averaged; when two differ by more than AGREEMENT
# (absolute, on any basin's weight) the masses are reported as not established. A basin that a
# chain explores as a funnel (iris with three full components: a chain stuck near a small
# component, 14 nats below the others) can have a Gaussian start so unlike it that one run's
# weight for it is anywhere from 0.01 to 0.37; two runs expose that.
REPEATS = 2
AGREEMENT = 0.05
# Work bound of the bridge's start: components (basins x K! permutations) times the squared
# dimension, per particle and density evaluation. Beyond it (many components with many basins,
# or a large dimension) SMC would cost more than the chains did, and the weighing is not tried.
MAX_BASE_WORK = 400_000


def group_chains(z: np.ndarray) -> np.ndarray:
    """Basin of every chain (the lowest chain index of its group), from draws (chains, S, size)."""
    means = z.mean(1)
    var = z.var(1) + 1e-12
    c = z.shape[0]
    pairs = [
        (i, j)
        for i in range(c)
        for j in range(i + 1, c)
        if np.max((means[i] - means[j]) ** 2 / (0.5 * (var[i] + var[j]))) < SAME_BASIN**2
    ]
    return union_roots(c, pairs)


def basin_base(aligned: dict, groups: np.ndarray, covariance_type: str):
    """The bridge's start: per basin and label permutation, a Gaussian fitted to its draws.

    ``aligned`` holds constrained draws (chains, S, ...) with labels aligned within each chain.
    The posterior is invariant under the K! label permutations, and where a basin's label copies
    overlap (two close components) particles drift between them; a start that covered one copy
    only would give the drifting particles unbounded weights. So every basin contributes one
    Gaussian per permutation, each fitted to the permuted draws in the unconstrained space (the
    stick-breaking map of the weights is not permutation-equivariant there). Basins weigh equally.

    Returns the mixture and the basin of each component.
    """
    c, s = aligned["weights"].shape[:2]
    k = aligned["weights"].shape[-1]
    idx = np.linspace(0, s - 1, min(s, FIT_DRAWS)).astype(int)
    basins = np.unique(groups)
    perms = list(itertools.permutations(range(k)))
    means, chols, owner = [], [], []
    for g in basins:
        members = np.flatnonzero(groups == g)
        draws = {n: a[members][:, idx].reshape((-1,) + a.shape[2:]) for n, a in aligned.items()}
        for perm in perms:
            p = np.broadcast_to(np.asarray(perm), (draws["weights"].shape[0], k))
            permuted = apply_permutation(draws, p, covariance_type)
            z = _potential.pack(_potential.unconstrain(permuted, covariance_type))
            mean, chol = fit_gaussian(z)
            means.append(mean)
            chols.append(chol)
            owner.append(g)
    n = len(means)
    base = _smc.GaussianMixtureBase(np.full(n, -np.log(n)), np.stack(means), np.stack(chols))
    return base, np.asarray(owner)


def weigh_chains(
    X, w, prior, all_samples: dict, draw_perm: np.ndarray, X_rows, configurations: np.ndarray,
    covariance_type: str, rng_seed, progress_bar: bool = False,
) -> dict:  # fmt: skip
    """Posterior weight of every chain's basin, and the fraction near each configuration.

    Parameters
    ----------
    X, w : the data (n, D) and sample weights (n,), float64
    prior : PriorParams
    all_samples : dict of arrays (R, C, S, ...), constrained draws of every chain
    draw_perm : (R, C, S, K) label permutation aligning each draw with its mode's configuration
    X_rows, configurations : as in :func:`bayesgmm.modes.classify`
    progress_bar : bool
        Show the stages' progress (inverse temperature from 0 to 1) on stderr.

    Returns
    -------
    dict with ``chain_weights`` (R, C) summing to 1 (a basin's weight, averaged over ``REPEATS``
    runs, shared by its chains), ``fractions`` (M,) of particles nearest each configuration,
    ``basin_weights_per_run``, their largest ``spread`` between runs and whether it is within
    ``AGREEMENT`` (``established``), ``basins`` (R, C), and the runs' ``stages`` (the most),
    ``seconds`` (in all), ``unique_ancestors`` (the fewest) and ``log_evidence`` (the mean).
    """
    r, c, s = all_samples["weights"].shape[:3]
    k = all_samples["weights"].shape[-1]
    flat = {name: a.reshape((r * c * s,) + a.shape[3:]) for name, a in all_samples.items()}
    aligned = apply_permutation(flat, draw_perm.reshape(-1, k), covariance_type)
    z = _potential.pack(_potential.unconstrain(aligned, covariance_type)).reshape(r * c, s, -1)
    groups = group_chains(z)
    n_components = len(np.unique(groups)) * math.factorial(k)
    if n_components * z.shape[-1] ** 2 > MAX_BASE_WORK:
        raise RuntimeError(
            f"{len(np.unique(groups))} basins x {math.factorial(k)} label permutations in "
            f"{z.shape[-1]} dimensions is beyond the SMC start's work bound"
        )
    aligned = {name: a.reshape((r * c, s) + a.shape[1:]) for name, a in aligned.items()}
    base, component_basin = basin_base(aligned, groups, covariance_type)
    runs = []
    seeds = np.random.SeedSequence(np.asarray(rng_seed, np.uint32).tolist()).spawn(REPEATS)
    for run, seed in enumerate(seeds):
        runs.append(
            _one_run(
                X, w, prior, k, covariance_type, seed, base, component_basin, groups,
                X_rows, configurations,
                f"weighing basins (tempered SMC {run + 1}/{REPEATS})" if progress_bar else None,
            )
        )  # fmt: skip
    basin_ids = np.unique(groups)
    per_run = np.array([[run["basin_weights"][g] for g in basin_ids] for run in runs])
    spread = float(np.max(np.ptp(per_run, axis=0))) if len(basin_ids) > 1 else 0.0
    basin_weights = per_run.mean(0)
    weights = np.zeros(r * c)
    for g, lam in zip(basin_ids, basin_weights, strict=True):
        members = groups == g
        weights[members] = lam / members.sum()
    return {
        "chain_weights": weights.reshape(r, c),
        "fractions": np.mean([run["fractions"] for run in runs], axis=0),
        "basin_weights_per_run": per_run,
        "spread": spread,
        "established": spread <= AGREEMENT,
        "stages": int(max(run["stages"] for run in runs)),
        "seconds": float(sum(run["seconds"] for run in runs)),
        "unique_ancestors": int(min(run["unique_ancestors"] for run in runs)),
        "log_evidence": float(np.mean([run["log_evidence"] for run in runs])),
        "num_particles": NUM_PARTICLES,
        "repeats": REPEATS,
        "basins": groups.reshape(r, c),
    }


def _one_run(
    X, w, prior, k, covariance_type, seed, base, component_basin, groups, X_rows,
    configurations, bar_label,
) -> dict:  # fmt: skip
    """One tempered SMC run from ``base``: each basin's share of the particles, and more."""
    bar = None
    if bar_label is not None:
        from tqdm.auto import tqdm

        bar = tqdm(total=1.0, desc=bar_label, unit="beta")

    def progress(beta, stage):
        if bar is not None:
            bar.update(beta - bar.n)
            bar.set_postfix(stage=stage, refresh=False)

    try:
        result = _smc.tempered_smc(
            X, w, prior, k, covariance_type, seed, _smc.SMCSettings(num_particles=NUM_PARTICLES),
            base=base, progress=progress,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    P = allocation(X_rows, result.params, covariance_type)
    dist, _ = configuration_distance(P, configurations)
    nearest = np.argmin(dist, axis=1)
    # Each particle belongs to the basin its ancestor was drawn from. Not the basin whose
    # Gaussian its final position is most likely under: a chain's own draws already include its
    # excursions towards another basin's configuration (iris: the main basin's brief visits near
    # a small-component configuration), and counting such particles for the other basin as well
    # gave that basin about twice its mass.
    owner = component_basin[result.origin]
    return {
        "basin_weights": {g: float(np.mean(owner == g)) for g in np.unique(groups)},
        "fractions": np.bincount(nearest, minlength=configurations.shape[0]) / nearest.size,
        "stages": len(result.betas) - 1,
        "seconds": result.seconds,
        "unique_ancestors": result.unique_ancestors,
        "log_evidence": result.log_evidence,
    }
