"""Tempered sequential Monte Carlo over the mixture's posterior: a sampler that weighs modes.

NUTS chains stay in the basin they start in. Where a mixture posterior has several basins that
chains do not cross (iris with three full components: the species split, and configurations with
a small component on a few flowers), no number of chains from EM optima says how much mass each
basin holds. Tempered SMC does (Del Moral, Doucet & Jasra 2006; the adaptive variant of
Jasra et al. 2011, as BlackJAX's ``adaptive_tempered_smc``): particles drawn from the prior move
through the bridge

    pi_beta(z) ∝ p(z) p(X | z)^beta,   beta from 0 to 1,

in NumPyro's unconstrained parametrisation (:mod:`bayesgmm.potential`), or, given a starting
density ``q`` (a Gaussian mixture fitted to NUTS chains, :mod:`bayesgmm.basins`), through
``q(z)^(1 - beta) p(z | X)^beta``. At each stage the next
``beta`` is chosen so that the incremental weights keep an effective sample size of
``TARGET_ESS`` of the particles, the particles are resampled (systematic), and moved by
Hamiltonian Monte Carlo steps that leave ``pi_beta`` invariant (a diagonal mass matrix from the
particles' spread, a step size tuned to the acceptance rate, per-particle jitter). At small
``beta`` the bridge is nearly the prior and particles cross between basins freely; the weights
then carry each basin's share of the evidence to ``beta = 1``, so the particles' basins are in
proportion to their posterior masses. The product of the stages' mean weights estimates the
marginal likelihood ``p(X)`` as a by-product.

Pure pieces here (the prior's draws in NumPy, one compiled HMC move vmapped over particles); the
stage loop runs on the host (the tempering schedule is data-dependent), with progress and a
clean stop on Ctrl-C (the move is one short compiled call).
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import potential as _potential
from .predictive import prior_draws
from .priors import PriorParams

_LOG_2PI = math.log(2.0 * math.pi)

__all__ = ["GaussianMixtureBase", "SMCResult", "SMCSettings", "tempered_smc"]

# The next inverse temperature keeps this fraction of the particles as the effective sample
# size of the incremental weights (the usual choice; smaller means fewer, harder stages).
TARGET_ESS = 0.5
# Step-size control: the mean acceptance rate of the HMC moves is steered towards this value
# (near the optimum of about 0.65 for fixed-length HMC, a little above it because a rejected move
# leaves a resampled duplicate where it was).
TARGET_ACCEPT = 0.7
# Moves per stage: enough that a particle has moved with high probability, given the last
# acceptance rate (the chance of never moving in ``m`` moves is ``(1 - acc)^m``), within bounds.
MIN_MOVES = 2
MAX_MOVES = 12
STAY_PROBABILITY = 0.01
# Moves at beta = 1 after the last stage, so that duplicates of one ancestor separate.
FINAL_MOVES = 5
# Leapfrog steps per HMC move.
LEAPFROG_STEPS = 10
# Stage count beyond which the schedule is abandoned (the posterior is too far from the prior
# for the particles to follow: the caller is told).
MAX_STAGES = 500


class SMCSettings(NamedTuple):
    """Particles, leapfrog steps per HMC move, and moves at beta = 1 after the last stage."""

    num_particles: int = 2000
    leapfrog_steps: int = LEAPFROG_STEPS
    final_moves: int = FINAL_MOVES


class SMCResult(NamedTuple):
    """What :func:`tempered_smc` returns (NumPy).

    particles : (N, size) unconstrained flat vectors (``potential.pack`` layout), equally weighted
    params : the same particles constrained: ``weights``, ``means``, ``covariances`` (N, ...)
    loglik : (N,) log-likelihood of each particle
    origin : (N,) the base component each particle's ancestor was drawn from (0 from the prior)
    log_evidence : estimate of ``log p(X)`` (the model's marginal likelihood)
    betas : inverse temperatures of the stages, from 0 to 1
    acceptance : mean HMC acceptance rate of each stage
    unique_ancestors : distinct particles at the last resampling (before the final moves)
    seconds : wall time
    """

    particles: np.ndarray
    params: dict
    loglik: np.ndarray
    origin: np.ndarray
    log_evidence: float
    betas: np.ndarray
    acceptance: np.ndarray
    unique_ancestors: int
    seconds: float


# --------------------------------------------------------------------------- compiled pieces


class GaussianMixtureBase(NamedTuple):
    """A Gaussian mixture in the flat unconstrained space: the bridge's starting density.

    log_weights (C,), means (C, size), chols (C, size, size) lower Cholesky factors.
    """

    log_weights: np.ndarray
    means: np.ndarray
    chols: np.ndarray


class _Whitening(NamedTuple):
    """The start's components as the compiled move uses them: inverse Cholesky factors, so that
    whitening is a batched matrix product (which vectorises where batched triangular solves do
    not)."""

    log_weights: np.ndarray
    means: np.ndarray
    inv_chols: np.ndarray


def _whitening(base: GaussianMixtureBase) -> _Whitening:
    return _Whitening(base.log_weights, base.means, np.linalg.inv(base.chols))


def _gm_logpdf(v, base: _Whitening):
    white = jnp.einsum("cij,cj->ci", base.inv_chols, v - base.means)  # (C, size)
    log_det = -jnp.sum(jnp.log(jnp.diagonal(base.inv_chols, axis1=-2, axis2=-1)), axis=-1)
    size = v.shape[-1]
    comp = base.log_weights - log_det - 0.5 * jnp.sum(white**2, -1) - 0.5 * size * _LOG_2PI
    return jax.nn.logsumexp(comp)


@lru_cache(maxsize=16)
def compiled_pieces(
    n_components: int, n_features: int, covariance_type: str, n_leapfrog: int, from_prior: bool
):
    """Jitted ``parts``, ``move`` (one HMC step) and ``constrain`` for many particles at once.

    The bridge is ``log pi_beta = a + beta * b``: from the prior, ``a`` is the log prior and ``b``
    the log-likelihood; from a Gaussian mixture ``q`` (``base``), ``a = log q`` and
    ``b = log p(z, X) - log q``.

    ``parts(z, base, X, w, prior) -> (a, b, loglik)``;
    ``move(z, a, b, ll, beta, step, inv_mass, key, base, X, w, prior) -> (z, a, b, ll,
    accepted)``: every particle (rows of ``z``) takes ``n_leapfrog`` leapfrog steps of its own
    size ``step[i]`` and diagonal inverse mass ``inv_mass[i]``, with a Metropolis correction.
    """
    k, d, ct = n_components, n_features, covariance_type

    def parts(v, base, X, w, prior):
        ll, lp = _potential.log_joint_parts(_potential.unpack(v, k, d, ct), X, w, prior, ct)
        if from_prior:
            return lp, ll, ll
        log_q = _gm_logpdf(v, base)
        return log_q, ll + lp - log_q, ll

    def tempered(v, beta, base, X, w, prior):
        a, b, ll = parts(v, base, X, w, prior)
        return a + beta * b, (a, b, ll)

    grad = jax.value_and_grad(tempered, has_aux=True)

    def one(v, a, b, ll, beta, step, inv_mass, key, base, X, w, prior):
        key_p, key_u = jax.random.split(key)
        p0 = jax.random.normal(key_p, v.shape, v.dtype) / jnp.sqrt(inv_mass)
        (logp0, _), g0 = grad(v, beta, base, X, w, prior)

        def leap(carry, _):
            x, p, g = carry
            p = p + 0.5 * step * g
            x = x + step * inv_mass * p
            (_, aux), g = grad(x, beta, base, X, w, prior)
            p = p + 0.5 * step * g
            return (x, p, g), aux

        (x1, p1, _), aux = jax.lax.scan(leap, (v, p0, g0), None, length=n_leapfrog)
        a1, b1, ll1 = (t[-1] for t in aux)
        logp1 = a1 + beta * b1
        kin0 = 0.5 * jnp.sum(inv_mass * p0**2)
        kin1 = 0.5 * jnp.sum(inv_mass * p1**2)
        log_ratio = logp1 - kin1 - logp0 + kin0
        ok = jnp.isfinite(log_ratio) & jnp.all(jnp.isfinite(x1))
        log_u = jnp.log(jax.random.uniform(key_u, (), v.dtype))
        accept = ok & (log_u < jnp.where(ok, log_ratio, -jnp.inf))
        pick = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
        return pick(x1, v), pick(a1, a), pick(b1, b), pick(ll1, ll), accept

    axes = (0, 0, 0, 0, None, 0, 0, 0, None, None, None, None)
    move = jax.jit(jax.vmap(one, in_axes=axes))
    vparts = jax.jit(jax.vmap(parts, in_axes=(0, None, None, None, None)))
    constrain = jax.jit(
        jax.vmap(lambda v: _potential.constrain(_potential.unpack(v, k, d, ct), ct))
    )
    return vparts, move, constrain


# --------------------------------------------------------------------------- the stage loop


def _next_beta(ll: np.ndarray, beta: float) -> float:
    """The largest step in beta whose incremental weights keep ``TARGET_ESS`` of the particles."""
    n = ll.size
    ll = np.where(np.isfinite(ll), ll, -np.inf)

    def ess(b):
        lw = (b - beta) * ll
        lw = lw - np.max(lw)
        w = np.exp(lw)
        return w.sum() ** 2 / np.sum(w**2) / n

    if ess(1.0) >= TARGET_ESS:
        return 1.0
    lo, hi = beta, 1.0
    for _ in range(60):  # bisection to float64 resolution of the step
        mid = 0.5 * (lo + hi)
        if ess(mid) >= TARGET_ESS:
            lo = mid
        else:
            hi = mid
    return max(lo, beta + 1e-12)


def _systematic(rng: np.random.Generator, log_w: np.ndarray) -> np.ndarray:
    w = np.exp(log_w - np.max(log_w))
    c = np.cumsum(w / w.sum())
    c[-1] = 1.0
    u = (rng.random() + np.arange(log_w.size)) / log_w.size
    return np.searchsorted(c, u)


def tempered_smc(
    X: np.ndarray,
    w: np.ndarray,
    prior: PriorParams,
    n_components: int,
    covariance_type: str,
    rng_seed,
    settings: SMCSettings | None = None,
    base: GaussianMixtureBase | None = None,
    progress=None,
) -> SMCResult:
    """Adaptive tempered SMC to the posterior (see the module docstring), in float64.

    Float64 whatever the caller's precision: the weights are differences of log-densities of
    hundreds of rows, and in float32 their rounding alone shifted a basin's weight (galaxies with
    two components: 0.06 against 0.16 in float64, with the importance-sampling reference at 0.18).

    Parameters
    ----------
    X : ndarray (n, D); w : ndarray (n,) sample weights
    prior : PriorParams (NumPy)
    rng_seed : anything ``numpy.random.default_rng`` takes
    base : GaussianMixtureBase, optional
        Where the bridge starts: this Gaussian mixture (in the flat unconstrained space) rather
        than the prior. Each particle then moves with the diagonal mass matrix of the component
        it was drawn from.
    progress : callable (beta, stage) -> None, optional

    Raises
    ------
    RuntimeError
        When the schedule needs more than ``MAX_STAGES`` stages, or no particle has a finite
        density.
    """
    with jax.enable_x64(True):
        return _tempered_smc(
            X, w, prior, n_components, covariance_type, rng_seed,
            SMCSettings() if settings is None else settings, base, progress,
        )  # fmt: skip


def _tempered_smc(X, w, prior, k, ct, rng_seed, settings, base, progress) -> SMCResult:
    t0 = time.perf_counter()
    n, d = X.shape
    rng = np.random.default_rng(rng_seed)
    num = int(settings.num_particles)
    size = _potential.flat_size(k, d, ct)
    vparts, move, constrain = compiled_pieces(k, d, ct, int(settings.leapfrog_steps), base is None)
    args = (
        np.asarray(X, np.float64),
        np.asarray(w, np.float64),
        PriorParams(*(np.asarray(a, np.float64) for a in prior)),
    )
    if base is None:
        z = _potential.pack(_potential.unconstrain(prior_draws(prior, k, ct, num, rng), ct))
        origin = np.zeros(num, np.intp)
        scales = None
        # Not read when starting from the prior (``parts`` ignores it); any valid shape will do.
        start = _Whitening(np.zeros(1), np.zeros((1, size)), np.eye(size)[None])
    else:
        p = np.exp(base.log_weights - np.max(base.log_weights))
        origin = rng.choice(p.size, size=num, p=p / p.sum())
        g = rng.standard_normal((num, size))
        z = base.means[origin] + np.einsum("nij,nj->ni", base.chols[origin], g)
        scales = np.sum(base.chols**2, axis=-1)  # (C, size): each component's variances
        start = _whitening(base)
    a, b, ll = (np.asarray(t) for t in vparts(z, start, *args))
    beta, log_evidence = 0.0, 0.0
    betas, acceptance = [0.0], []
    step = 0.5 / size**0.25
    unique = num
    stage = 0

    def inverse_mass(z, origin):
        if scales is not None:
            return scales[origin]
        spread = np.var(z, axis=0)
        spread = np.maximum(spread, 1e-12 * max(1.0, float(spread.max())))
        return np.broadcast_to(spread, z.shape)

    def run_moves(z, a, b, ll, beta, n_moves, step):
        # The state stays in the compiled move's arrays between moves; only the acceptance
        # rate (for the step size) comes back each time.
        acc_all = []
        inv_mass = inverse_mass(np.asarray(z), origin)
        for _ in range(n_moves):
            steps = step * rng.uniform(0.8, 1.2, num)
            keys = rng.integers(0, 2**32, size=(num, 2), dtype=np.uint32)
            z, a, b, ll, acc = move(z, a, b, ll, beta, steps, inv_mass, keys, start, *args)
            acc = float(np.mean(acc))
            acc_all.append(acc)
            # Multiplicative control of the step towards TARGET_ACCEPT.
            step = float(step * np.exp(1.5 * (acc - TARGET_ACCEPT)))
        return z, a, b, ll, step, float(np.mean(acc_all))

    acc = 0.5
    while beta < 1.0:
        stage += 1
        if stage > MAX_STAGES:
            raise RuntimeError(
                f"tempered SMC needed more than {MAX_STAGES} stages to reach the posterior"
            )
        b = np.where(np.isfinite(b), b, -np.inf)
        new_beta = _next_beta(b, beta)
        log_w = (new_beta - beta) * b
        top = np.max(log_w)
        if not np.isfinite(top):
            raise RuntimeError("tempered SMC: no particle has a finite posterior density")
        log_evidence += float(top + np.log(np.mean(np.exp(log_w - top))))
        idx = _systematic(rng, log_w)
        unique = int(np.unique(idx).size)
        z, a, b, ll, origin = (np.asarray(t)[idx] for t in (z, a, b, ll, origin))
        beta = new_beta
        stay = math.log(max(1e-3, min(1 - 1e-3, 1 - acc)))
        n_moves = int(np.clip(math.ceil(math.log(STAY_PROBABILITY) / stay), MIN_MOVES, MAX_MOVES))
        z, a, b, ll, step, acc = run_moves(z, a, b, ll, beta, n_moves, step)
        b = np.asarray(b)
        betas.append(beta)
        acceptance.append(acc)
        if progress is not None:
            progress(beta, stage)
    z, a, b, ll, step, acc = run_moves(z, a, b, ll, 1.0, int(settings.final_moves), step)
    acceptance.append(acc)
    return SMCResult(
        particles=np.asarray(z),
        params={name: np.asarray(x) for name, x in constrain(z).items()},
        loglik=np.asarray(ll),
        origin=origin,
        log_evidence=log_evidence,
        betas=np.asarray(betas),
        acceptance=np.asarray(acceptance),
        unique_ancestors=unique,
        seconds=time.perf_counter() - t0,
    )
