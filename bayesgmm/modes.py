"""Separated modes of a mixture posterior: which configuration each draw is in, and their masses.

A mixture posterior can have modes that are not label permutations of one another (galaxies with
two components: a narrow component on the seven slow galaxies, or a narrow central component with
a broad one). NUTS chains stay in the mode they start in, so the sampler starts chains from every
distinct EM optimum (the *configurations*), and this module

- classifies every draw by the configuration whose allocation probabilities are nearest
  (:func:`bayesgmm.relabel.configuration_distance`, up to a label permutation), and every chain
  by the configuration most of its draws are in (:func:`classify`);
- estimates the posterior mass of each configuration that chains actually occupy by importance
  sampling (:func:`importance_masses`): a multivariate Student-t proposal is fitted to each
  mode's draws in NUTS's unconstrained space, and the deterministic-mixture estimator
  ``mass_m = sum_i w_i 1[z_i in m] / sum_i w_i`` with ``w_i = p(z_i | X) / q_mix(z_i)`` weighs
  them (Owen & Zhou 2000); each proposal covers one labelling of its mode, which is the same
  fraction ``1 / K!`` of every mode's mass (up to overlap between labellings);
- composes the returned draws (:func:`compose`): each output chain takes, at every draw index,
  the draw of one mode's chain, the modes allotted to draw indices in proportion to their masses
  (stratified, in random order), so every chain holds the modes in the same proportions.

Numbers here are NumPy; the log posterior density and the transforms come as callables.
"""

from __future__ import annotations

import jax
import numpy as np

from .relabel import (
    allocation_probabilities,
    apply_permutation,
    configuration_distance,
    log_component_densities,
)

__all__ = [
    "classify",
    "compose",
    "configuration_fractions",
    "fit_gaussian",
    "union_roots",
    "weighted_fractions",
    "importance_masses",
    "mode_masses",
    "report",
    "total_log_likelihood",
]

# Draws per chunk when computing allocation probabilities (memory O(chunk x rows x K)).
CHUNK_DRAWS = 2000
# Importance samples per mode, and the Student-t degrees of freedom of the proposals.
N_IMPORTANCE = 2000
T_DOF = 5.0
# Draws of each mode used to fit its proposal (a fixed number: one compiled transform).
N_FIT = 1000
# A chain is said to have left every configuration when its draws are on average this far
# (nats per row of allocation divergence) from the nearest one.
OUTSIDE_DISTANCE = 0.5
# A chain that spends more than this fraction of its draws near a second configuration joins
# the two into one mode (they are not separated: the chain moves between them).
MERGE_FRACTION = 0.05
# A mode with less estimated mass is not reported as a separate mode in the warning.
MIN_MODE_MASS = 0.01
# Chains of one mode disagree when the R-hat of their total log-likelihood exceeds this.
RHAT_DISAGREE = 1.05
# Importance-sampling effective sample size below which a mode's mass is "not established".
MIN_IS_ESS = 30.0
# The returned chains are not established when, after relabelling, the largest R-hat exceeds
# RHAT_TARGET or the smallest bulk ESS is below ESS_TARGET (Vehtari et al. 2021's thresholds,
# issue 10's targets): either alone warns, so no run that misses them returns silently.
RHAT_TARGET = 1.01
ESS_TARGET = 400.0


def convergence(arrays) -> tuple[float, float]:
    """Largest rank-normalised R-hat and smallest bulk ESS over arrays of shape (C, S, ...)."""
    from arviz_stats.base import array_stats

    rhat, ess = [], []
    for a in arrays:
        a = np.asarray(a, np.float64)
        x = np.moveaxis(a.reshape(a.shape[:2] + (-1,)), -1, 0)
        x = x[np.ptp(x, axis=(1, 2)) > 0]  # constant entries (a tied covariance's zeros) skip
        if x.size:
            rhat.append(np.max(array_stats.rhat(x, chain_axis=1, draw_axis=2)))
            ess.append(np.min(array_stats.ess(x, chain_axis=1, draw_axis=2, method="bulk")))
    return (float(max(rhat)), float(min(ess))) if rhat else (1.0, np.inf)


def allocation(X_rows, samples: dict, covariance_type: str) -> np.ndarray:
    """Allocation probabilities (S, rows, K) of draws ``samples`` (S, ...), in chunks."""
    s = samples["weights"].shape[0]
    out = []
    for start in range(0, s, CHUNK_DRAWS):
        part = {name: a[start : start + CHUNK_DRAWS] for name, a in samples.items()}
        out.append(
            allocation_probabilities(
                log_component_densities(
                    X_rows, part["weights"], part["means"], part["covariances"], covariance_type
                )
            )
        )
    return np.concatenate(out)


def classify(X_rows, samples: dict, configurations: np.ndarray, covariance_type: str, P=None):
    """Configuration of every draw, and of every chain.

    Parameters
    ----------
    X_rows : array of shape (n_rows, D)
    samples : dict of arrays of shape (R, C, S, ...)
        Constrained draws of R runs (one per starting configuration) of C chains.
    configurations : array of shape (M, n_rows, K)
        Allocation probabilities of the configurations.
    P : array of shape (R * C * S, n_rows, K), optional
        The draws' allocation probabilities, if already computed.

    Returns
    -------
    draw_mode (R, C, S), draw_perm (R, C, S, K), chain_mode (R, C), outside (R, C), roots (M,),
    nearest (R, C, S)
        Configurations that chains move between are merged into one mode (``roots`` maps a
        configuration to its mode, the lowest index); ``draw_perm`` aligns each draw's labels
        with its mode's configuration; ``nearest`` is each draw's configuration before merging.
    """
    r, c, s = samples["weights"].shape[:3]
    flat = {name: a.reshape((r * c * s,) + a.shape[3:]) for name, a in samples.items()}
    if P is None:
        P = allocation(X_rows, flat, covariance_type)
    dist, perm = configuration_distance(P, configurations)
    nearest = np.argmin(dist, axis=1)
    m = configurations.shape[0]
    counts = np.stack([(nearest.reshape(r, c, s) == j).sum(-1) for j in range(m)], -1)
    roots = _merge_visited(counts, s)
    draw_mode = roots[nearest]
    draw_perm = perm[np.arange(len(nearest)), draw_mode].reshape(r, c, s, -1)
    draw_mode = draw_mode.reshape(r, c, s)
    counts = np.stack([(draw_mode == j).sum(-1) for j in range(m)], axis=-1)  # (R, C, M)
    chain_mode = np.argmax(counts, axis=-1)
    chain_dist = dist.min(1).reshape(r, c, s).mean(-1)
    outside = chain_dist > OUTSIDE_DISTANCE
    return draw_mode, draw_perm, chain_mode, outside, roots, nearest.reshape(r, c, s)


def union_roots(n: int, pairs) -> np.ndarray:
    """Groups of ``0..n-1`` joined by ``pairs`` (union-find): each item's group is its lowest
    member."""
    parent = np.arange(n)

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    for i, j in pairs:
        a, b = find(int(i)), find(int(j))
        parent[max(a, b)] = min(a, b)
    return np.array([find(j) for j in range(n)])


def _merge_visited(counts: np.ndarray, n_draws: int) -> np.ndarray:
    """Configurations that one chain moves between are one mode: ``roots[j]`` is j's mode.

    ``counts`` (R, C, M) holds how many draws of each chain are nearest each configuration; a
    chain that spends more than ``MERGE_FRACTION`` of its draws near a configuration other than
    its main one joins the two.
    """
    rows = counts.reshape(-1, counts.shape[-1])
    pairs = [
        (int(np.argmax(row)), int(j))
        for row in rows
        for j in np.flatnonzero(row > MERGE_FRACTION * n_draws)
    ]
    return union_roots(counts.shape[-1], pairs)


def fit_gaussian(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and lower Cholesky factor of the covariance of points ``z`` (N, dim)."""
    mean = z.mean(0)
    cov = np.cov(z, rowvar=False).reshape(z.shape[1], z.shape[1])
    # A ridge keeps the Gaussian proper when a coordinate barely moved.
    cov = cov + 1e-8 * np.eye(z.shape[1]) * max(1.0, float(np.trace(cov)) / z.shape[1])
    return mean, np.linalg.cholesky(cov)


def _t_logpdf(z: np.ndarray, mean: np.ndarray, chol: np.ndarray, dof: float) -> np.ndarray:
    from scipy.special import gammaln

    p = z.shape[1]
    sol = np.linalg.solve(chol, (z - mean).T)
    maha = np.sum(sol**2, axis=0)
    log_det = np.sum(np.log(np.diag(chol)))
    return (
        gammaln(0.5 * (dof + p))
        - gammaln(0.5 * dof)
        - 0.5 * p * np.log(dof * np.pi)
        - log_det
        - 0.5 * (dof + p) * np.log1p(maha / dof)
    )


def importance_masses(
    rng: np.random.Generator,
    mode_draws: dict[int, dict],
    *,
    unconstrain,
    constrain,
    log_density,
    X_rows,
    configurations: np.ndarray,
    roots: np.ndarray,
    covariance_type: str,
) -> tuple[dict[int, float], dict[int, float]]:
    """Posterior mass of each occupied mode by importance sampling.

    Parameters
    ----------
    rng : numpy Generator
    mode_draws : dict mode -> constrained draws (N, ...) in that mode's label order
    unconstrain : callable (dict of (N_FIT, ...) arrays) -> (N_FIT, dim) unconstrained vectors
    constrain : callable ((N_IMPORTANCE, dim)) -> dict of constrained draws
    log_density : callable ((N_IMPORTANCE, dim)) -> (N_IMPORTANCE,) log posterior density in
        the unconstrained space (Jacobian included), up to a constant
    X_rows, configurations, covariance_type : as in :func:`classify`
    roots : array of int, shape (M,)
        The mode of each configuration (:func:`classify`).

    Returns
    -------
    masses : dict mode -> mass (they sum to at most 1; importance samples that land in no
        occupied mode make up the rest)
    ess : dict mode -> Kish effective sample size of the weights of the samples in that mode
    """
    modes = sorted(mode_draws)
    proposals = {}
    for m in modes:
        draws = mode_draws[m]
        n = draws["weights"].shape[0]
        idx = rng.choice(n, size=N_FIT, replace=n < N_FIT)
        z = np.asarray(unconstrain({k: a[idx] for k, a in draws.items()}), np.float64)
        proposals[m] = fit_gaussian(z)
    z_all, log_p, cls = [], [], []
    dim = next(iter(proposals.values()))[0].shape[0]
    for m in modes:
        mean, chol = proposals[m]
        g = rng.standard_normal((N_IMPORTANCE, dim))
        u = rng.chisquare(T_DOF, size=(N_IMPORTANCE, 1))
        z = mean + (g @ chol.T) * np.sqrt(T_DOF / u)
        lp = np.asarray(log_density(z), np.float64)
        P = allocation(X_rows, constrain(z), covariance_type)
        dist, _ = configuration_distance(P, configurations)
        z_all.append(z)
        log_p.append(lp)
        cls.append(roots[np.argmin(dist, axis=1)])
    z_all = np.concatenate(z_all)
    log_p = np.concatenate(log_p)
    cls = np.concatenate(cls)
    # Deterministic-mixture weights: every sample is weighed against the equal-weight mixture
    # of all proposals.
    log_q = np.stack([_t_logpdf(z_all, *proposals[m], T_DOF) for m in modes]).T
    log_q = np.logaddexp.reduce(log_q, axis=1) - np.log(len(modes))
    # A sample counts only where both densities are finite: a proposal's far tail can underflow
    # (log_q = -inf) or the potential overflow (log_p = +-inf), and either would turn every
    # weight into NaN.
    valid = np.isfinite(log_p) & np.isfinite(log_q)
    if not valid.any():
        # Nothing to weigh: no mass is established (effective sample sizes 0); the caller
        # falls back to the chains' shares.
        return {m: np.nan for m in modes}, {m: 0.0 for m in modes}
    log_w = np.where(valid, log_p - log_q, -np.inf)
    w = np.exp(log_w - np.max(log_w))
    total = w.sum()
    masses, ess = {}, {}
    for m in modes:
        wm = w[cls == m]
        masses[m] = float(wm.sum() / total)
        ess[m] = float(wm.sum() ** 2 / np.sum(wm**2)) if wm.size and wm.sum() > 0 else 0.0
    return masses, ess


def configuration_fractions(
    nearest: np.ndarray, chain_mode: np.ndarray, masses: dict[int, float], n_configurations: int
) -> np.ndarray:
    """Posterior fraction nearest each configuration, from every chain of the occupied modes.

    The returned draws hold only ``num_chains`` of a mode's chains (:func:`compose`); when
    chains from several references settle in one mode, the others are left out, and a
    configuration that only they visited would read as empty. Here every chain counts: mode
    ``m``'s chains give the fraction of its draws nearest each configuration, and the modes are
    weighed by their masses.

    Parameters
    ----------
    nearest : array of int, shape (R, C, S)
        Each draw's nearest configuration (:func:`classify`, before merging).
    chain_mode : array of int, shape (R, C)
    masses : dict mode -> mass
    n_configurations : int

    Returns
    -------
    ndarray of shape (n_configurations,), summing to 1.
    """
    total = sum(m for m in masses.values() if m > 0)
    weights = np.zeros(chain_mode.shape)
    for mode, mass in masses.items():
        members = chain_mode == mode
        if mass > 0 and members.any():
            weights[members] = mass / total / members.sum()
    return weighted_fractions(nearest, weights, n_configurations)


def weighted_fractions(
    nearest: np.ndarray, chain_weights: np.ndarray, n_configurations: int
) -> np.ndarray:
    """Fraction of draws nearest each configuration, chain ``(r, c)`` counting ``weights[r, c]``.

    ``nearest`` (R, C, S) as in :func:`configuration_fractions`; the weights (R, C) sum to 1.
    """
    counts = np.stack(
        [(nearest == j).mean(-1) for j in range(n_configurations)], axis=-1
    )  # (R, C, M)
    return np.einsum("rc,rcm->m", chain_weights, counts)


def compose(
    rng: np.random.Generator,
    chain_mode: np.ndarray,
    masses: dict[int, float],
    num_chains: int,
    num_samples: int,
) -> np.ndarray:
    """Which (run, chain, draw) fills each output (chain, draw).

    Every output chain holds ``round(mass_m * num_samples)`` draws of mode ``m`` (largest
    remainders, so the counts add up), at draw indices chosen at random; a draw at index ``t``
    is draw ``t`` of one of the mode's chains (output chain ``c`` takes the mode's chain
    ``c mod n_m``), so each piece keeps its place in its own chain.

    Returns
    -------
    ndarray of int, shape (num_chains, num_samples, 3): (run, chain, draw) indices.
    """
    modes = [m for m in sorted(masses) if np.isfinite(masses[m]) and masses[m] > 0]
    if not modes:  # no usable mass (mode_masses falls back before this; kept as a guard)
        modes = sorted(int(m) for m in np.unique(chain_mode))
        masses = dict.fromkeys(modes, 1.0)
    mass = np.array([masses[m] for m in modes])
    mass = mass / mass.sum()
    raw = mass * num_samples
    counts = np.floor(raw).astype(int)
    short = num_samples - counts.sum()
    counts[np.argsort(-(raw - counts))[:short]] += 1
    members = {m: np.argwhere(chain_mode == m) for m in modes}  # (n_m, 2): (run, chain)
    out = np.full((num_chains, num_samples, 3), -1, dtype=np.intp)
    for c in range(num_chains):
        labels = np.repeat(np.arange(len(modes)), counts)
        rng.shuffle(labels)
        for j, m in enumerate(modes):
            t = np.flatnonzero(labels == j)
            run, chain = members[m][c % len(members[m])]
            out[c, t, 0], out[c, t, 1], out[c, t, 2] = run, chain, t
    if (out < 0).any():  # every output draw must come from somewhere
        raise RuntimeError("internal error: composing the modes' draws left some unfilled")
    return out


def logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def pointwise_log_likelihood(X, samples: dict, ct: str) -> np.ndarray:
    """``log p(x_i | draw)`` for draws (..., params): shape (..., n), in chunks of draws.

    NumPy (no program to compile); the chunks keep the (draws, n, K) intermediate near 16 MB.
    """
    lead = samples["weights"].shape[:-1]
    n_draws = int(np.prod(lead))
    flat = {name: a.reshape((n_draws,) + a.shape[len(lead) :]) for name, a in samples.items()}
    chunk = max(1, 2_000_000 // max(1, X.shape[0] * flat["weights"].shape[1]))
    out = np.empty((n_draws, X.shape[0]))
    for i in range(0, n_draws, chunk):
        part = {name: a[i : i + chunk] for name, a in flat.items()}
        lcd = log_component_densities(X, part["weights"], part["means"], part["covariances"], ct)
        out[i : i + chunk] = logsumexp(lcd, -1)
    return out.reshape(lead + (X.shape[0],))


def total_log_likelihood(X, w, samples: dict, ct: str) -> np.ndarray:
    """``sum_i w_i log p(x_i | draw)`` for draws (R, C, S, ...), in chunks of draws."""
    lead = samples["weights"].shape[:-1]
    n_draws = int(np.prod(lead))
    flat = {name: a.reshape((n_draws,) + a.shape[len(lead) :]) for name, a in samples.items()}
    chunk = max(1, 2_000_000 // max(1, X.shape[0] * flat["weights"].shape[1]))
    out = np.empty(n_draws)
    for i in range(0, n_draws, chunk):
        part = {name: a[i : i + chunk] for name, a in flat.items()}
        out[i : i + chunk] = pointwise_log_likelihood(X, part, ct) @ w
    return out.reshape(lead)


def describe(ref: dict) -> str:
    w = np.asarray(ref["weights"])
    mu = np.asarray(ref["means"])
    order = np.argsort(mu[:, 0])
    ws = ", ".join(f"{x:.3g}" for x in w[order])
    ms = ", ".join("[" + ", ".join(f"{x:.4g}" for x in mu[i]) + "]" for i in order)
    return f"weights ({ws}), means ({ms})"


def _basin_lines(weighed: dict, n_chains: int, parts: list[str], rhat: float, ess: float):
    """The warning's sentences on the tempered-SMC weighing of the chains' basins."""
    lead = (
        f"The {n_chains} chains settled in basins they do not leave (R-hat of the total "
        f"log-likelihood over all of them {weighed['loglik_rhat']:.3f})"
    )
    if "error" in weighed:
        return [
            f"{lead}, and tempered SMC could not weigh their basins ({weighed['error']}): the "
            "modes and their masses are not established."
        ]
    runs = np.round(weighed["basin_weights_per_run"], 3).tolist()
    agreement = (
        f"{weighed['repeats']} independent SMC runs agree on the basins' weights ({runs}, "
        f"largest difference {weighed['spread']:.3f})."
        if weighed["established"]
        else f"But {weighed['repeats']} independent SMC runs disagree on the basins' weights "
        f"({runs}, largest difference {weighed['spread']:.3f}): the masses are not established "
        "(a basin unlike the Gaussian fitted to its chains, such as a funnel around a near-empty "
        "component); the weights used are their mean."
    )
    return [
        f"{lead}, so their share of the draws is no estimate of the basins' masses. Tempered SMC "
        f"from the chains' basins ({weighed['num_particles']} particles, {weighed['stages']} "
        "stages) weighs them; the returned chains hold each chain's draws in proportion to its "
        "basin's weight (posterior.attrs['chain_weights']). Estimated posterior fraction nearest "
        "each EM configuration: " + "; ".join(parts) + f". (The composed chains' largest R-hat is "
        f"{rhat:.3f} and smallest bulk ESS {ess:.0f}; composed of several chains' draws, they are "
        "not Markov chains, and the masses' precision is that of the SMC particles.)",
        agreement,
    ]


def report(
    references, occupied, masses, is_ess, chain_mode, outside, loglik_all, num_chains,
    diagnostics=(1.0, np.inf), fractions=None, weighed=None,
):  # fmt: skip
    """The warning text (empty when there is nothing to warn about) and a one-line summary.

    It warns when more than one mode holds at least ``MIN_MODE_MASS``, when a mode's mass is not
    established (importance-sampling ESS below ``MIN_IS_ESS``), when a mode is held by fewer than
    ``num_chains`` chains (its draws then repeat across the returned chains), when the chains of
    one mode disagree (R-hat of the total log-likelihood above ``RHAT_DISAGREE``) and when
    chains leave every EM configuration.
    """
    from arviz_stats.base import array_stats

    lines = []
    heavy = [m for m in occupied if masses[m] >= MIN_MODE_MASS]
    summary = "; ".join(
        f"mode {m}: mass {masses[m]:.3f}, {describe(references[m])}" for m in occupied
    )
    if len(heavy) > 1:
        lines.append(
            f"The posterior has {len(heavy)} separated modes (configurations that are not label "
            f"permutations of one another): {summary}. The returned chains hold each mode in "
            "proportion to its estimated mass (sample_stats.mode says which mode each draw is "
            "in), so per-component summaries mix components that differ between modes."
        )
    uncertain = [m for m in occupied if len(occupied) > 1 and is_ess.get(m, np.inf) < MIN_IS_ESS]
    if uncertain:
        lines.append(
            f"The masses of modes {uncertain} could not be established (importance-sampling "
            f"effective sample sizes {[round(is_ess[m], 1) for m in uncertain]})."
        )
    few = {
        m: int(np.sum(chain_mode == m))
        for m in heavy
        if len(references) > 1 and np.sum(chain_mode == m) < num_chains
    }
    if few:
        lines.append(
            "Chains left modes "
            + ", ".join(f"{m} (held by {j} of {num_chains} chains)" for m, j in few.items())
            + ": their draws repeat across the returned chains and the masses are uncertain."
        )
    disagree = False
    weighed_ok = weighed is not None and "error" not in weighed
    for m in [] if weighed_ok else occupied:  # with SMC weights the line below replaces these
        members = np.argwhere(chain_mode == m)
        if len(members) < 2:
            continue
        ll = loglik_all[members[:, 0], members[:, 1]]
        rhat = float(array_stats.rhat(ll, chain_axis=0, draw_axis=1))
        if not rhat <= RHAT_DISAGREE:
            disagree = True
            lines.append(
                f"The chains in mode {m} disagree beyond a label permutation (R-hat of the total "
                f"log-likelihood {rhat:.3f}): the mode and its mass are not established."
            )
    if np.any(outside):
        lines.append(
            f"{int(outside.sum())} chain(s) left every reference configuration (their draws "
            "allocate the data unlike any EM optimum): the posterior's mass lies elsewhere than "
            "the EM fits suggest; the labels of such draws are matched to the nearest one."
        )
    moved = int(np.sum(chain_mode != np.arange(len(references))[:, None]))
    if lines and moved:
        lines.append(
            f"{moved} chain(s) started at one EM optimum and settled in another "
            "(sample_stats.mode is each draw's configuration)."
        )
    rhat, ess = diagnostics
    parts = [
        f"configuration {j} ({describe(references[j])}): {f:.2f}"
        for j, f in enumerate(fractions if fractions is not None else [])
        if f > 0
    ]
    basins = weighed is not None
    if basins:
        lines.extend(
            _basin_lines(weighed, loglik_all.shape[0] * loglik_all.shape[1], parts, rhat, ess)
        )
    unconverged = bool(rhat > RHAT_TARGET or ess < ESS_TARGET) and not weighed_ok
    if unconverged:
        lines.append(
            "The chains miss the convergence targets (largest R-hat at most "
            f"{RHAT_TARGET}, smallest bulk ESS at least {ESS_TARGET:.0f}): after Stephens "
            f"relabelling the largest R-hat is {rhat:.3f} and the smallest bulk ESS {ess:.0f} "
            "(weights, means and permutation-invariant quantities), so the modes and their "
            "masses are not established. Fraction of draws nearest each EM configuration: "
            + "; ".join(parts)
            + "."
        )
    if lines and len(heavy) < 2:
        lines.insert(0, f"Modes found: {summary}.")
    warn = len(heavy) > 1 or uncertain or few or disagree or unconverged or outside.any() or basins
    message = " ".join(lines) if warn else ""
    n_modes = len(heavy)
    return {"message": message, "summary": summary, "n_modes": n_modes}


def mode_masses(rng, tf, args, all_samples, classes, occupied, X_rows, configurations, ct):
    """Importance-sampling masses of the occupied modes, with the model's transforms.

    ``tf`` holds the sampler's maps on flat unconstrained vectors
    (:func:`bayesgmm._nuts_compiled.potential_transforms`: ``unconstrain``, ``constrain``,
    ``log_density``) and ``args`` their data arguments; ``classes`` is ``classify``'s outputs
    but ``outside``.
    """
    draw_mode, draw_perm, chain_mode, roots = classes
    dtype = np.dtype(jax.tree.leaves(args)[0].dtype)

    def constrain(v):
        params = tf.constrain(np.asarray(v, dtype), *args)
        return {name: np.asarray(a, np.float64) for name, a in params.items()}

    def log_density(v):
        return np.asarray(tf.log_density(np.asarray(v, dtype), *args), np.float64)

    mode_draws = {}
    for m in occupied:
        sel = (draw_mode == m) & (chain_mode[..., None] == m)
        draws = {name: a[sel] for name, a in all_samples.items()}
        mode_draws[m] = apply_permutation(draws, draw_perm[sel], ct)
    masses, ess = importance_masses(
        rng,
        mode_draws,
        unconstrain=tf.unconstrain,
        constrain=constrain,
        log_density=log_density,
        X_rows=X_rows,
        configurations=configurations,
        roots=roots,
        covariance_type=ct,
    )
    if not all(np.isfinite(v) for v in masses.values()) or sum(masses.values()) <= 0:
        # Importance sampling gave nothing usable: each mode's share of the chains stands in,
        # and its effective sample size 0 makes the report say the masses are not established.
        counts = {m: float(np.sum(chain_mode == m)) for m in occupied}
        total = sum(counts.values())
        masses = {m: counts[m] / total for m in occupied}
        ess = dict.fromkeys(occupied, 0.0)
    return masses, ess
