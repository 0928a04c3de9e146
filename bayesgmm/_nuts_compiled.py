"""The compiled pieces of the posterior sampler (:mod:`bayesgmm.nuts`), and their compilation
ahead of time.

``kernel_pieces`` jits NumPyro's NUTS kernel for one model structure, with the potential of
:mod:`bayesgmm.potential`: an ``init`` that builds a chain's first state and a ``run`` that
advances it ``CHUNK`` iterations, returning the constrained draws and the per-iteration
statistics. ``potential_transforms`` gives the maps between constrained and unconstrained
parameters and the log density that the importance-sampling mode masses use. :func:`precompile`
compiles a kernel's pair in a worker thread, so that the front end's reference EM fits and this
compilation overlap on a first call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import potential as _potential
from .numerics import float_dtype
from .priors import PriorParams

# Iterations per compiled call. The chunk length is static (one compilation serves any number of
# warm-up and sampling iterations); a run that is not a multiple of it runs at most CHUNK - 1
# extra iterations at the end, which are discarded.
CHUNK = 50

# Potential energy given to each chain's start (see ``kernel_pieces``): high enough that any
# point of the first trajectory outweighs it, finite in float32.
START_POTENTIAL = 1e30


# --------------------------------------------------------------------------- compiled pieces


class _Kernel(NamedTuple):
    """Jitted NUTS pieces for one model structure; arguments ``(X, w, prior)`` are traced."""

    init: Any  # (z, rng_key, X, w, prior) -> HMCState, one chain (z: potential.pack's vector)
    run: Any  # (state, X, w, prior) -> (state, stats of the CHUNK iterations), one chain
    vinit: Any  # vmapped over chains
    vrun: Any
    pinit: Any  # pmapped over chains (one per device)
    prun: Any


@lru_cache(maxsize=32)
def kernel_pieces(
    n_components: int,
    n_features: int,
    covariance_type: str,
    num_warmup: int,
    dense_mass: bool,
    target_accept_prob: float,
    max_tree_depth: int,
) -> _Kernel:
    # NumPyro's hmc() keeps the warm-up schedule in closure variables set by init_kernel, so a
    # kernel pair serves exactly one num_warmup: it is part of the cache key.
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import ParamInfo

    k, d, ct = n_components, n_features, covariance_type

    def potential_fn_gen(X, w, prior):
        # The model's potential written out (bayesgmm.potential, tested against NumPyro's
        # potential_energy of mixture_model), on one flat vector of the unconstrained sites.
        def potential_fn(v):
            return _potential.potential(_potential.unpack(v, k, d, ct), X, w, prior, ct)

        return potential_fn

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_fn_gen, algo="NUTS")

    def init(z, rng_key, X, w, prior):
        # The start's potential is set high and its gradient to zero instead of computed: the
        # gradient of the potential is the costliest piece to compile, and this program would
        # hold a second copy of it. The first warm-up transition then moves away from the start
        # (its trajectory's points all outweigh it) and every later state carries its true
        # potential and gradient; warm-up draws are discarded.
        dtype = jax.tree.leaves(z)[0].dtype
        start = ParamInfo(z, jnp.asarray(START_POTENTIAL, dtype), jax.tree.map(jnp.zeros_like, z))
        return init_kernel(
            start,
            num_warmup,
            dense_mass=dense_mass,
            target_accept_prob=target_accept_prob,
            max_tree_depth=max_tree_depth,
            model_args=(X, w, prior),
            rng_key=rng_key,
        )

    def run(state, X, w, prior):
        def step(s, _):
            s = sample_kernel(s, model_args=(X, w, prior))
            # The constrained draw is computed here, inside the sampling program, rather than by
            # a program of its own afterwards.
            params = _potential.constrain(_potential.unpack(s.z, k, d, ct), ct)
            stats = {
                "params": params,
                "potential_energy": s.potential_energy,
                "energy": s.energy,
                "num_steps": s.num_steps,
                "accept_prob": s.accept_prob,
                "diverging": s.diverging,
                "step_size": s.adapt_state.step_size,
            }
            return s, stats

        return jax.lax.scan(step, state, None, length=CHUNK)

    batched = (0, 0, None, None, None)
    return _Kernel(
        init=jax.jit(init),
        run=jax.jit(run),
        vinit=jax.jit(jax.vmap(init, in_axes=batched)),
        vrun=jax.jit(jax.vmap(run, in_axes=(0, None, None, None))),
        pinit=jax.pmap(init, in_axes=batched),
        prun=jax.pmap(run, in_axes=(0, None, None, None)),
    )


class _Transforms(NamedTuple):
    """Flat unconstrained vectors (``potential.pack``'s layout) and constrained parameters."""

    unconstrain: Any  # (params dict (S, ...)) -> (S, dim) NumPy float64
    constrain: Any  # ((S, dim), X, w, prior) -> params dict (S, ...)
    log_density: Any  # ((S, dim), X, w, prior) -> (S,) log posterior density in that space


@lru_cache(maxsize=32)
def potential_transforms(n_components: int, n_features: int, covariance_type: str):
    """What the importance-sampling mode masses use (:func:`bayesgmm.modes.mode_masses`).

    The maps and the density of the written-out potential (:mod:`bayesgmm.potential`, tested
    against NumPyro's for the model) on the sampler's own flat vectors; unconstraining is host
    NumPy, the other two are one small program each.
    """
    k, d, ct = n_components, n_features, covariance_type

    def unconstrain(params):
        return _potential.pack(_potential.unconstrain(params, ct))

    @jax.jit
    def constrain(v, X, w, prior):
        return jax.vmap(lambda x: _potential.constrain(_potential.unpack(x, k, d, ct), ct))(v)

    @jax.jit
    def log_density(v, X, w, prior):
        def one(x):
            return _potential.log_joint(_potential.unpack(x, k, d, ct), X, w, prior, ct)

        return jax.vmap(one)(v)

    return _Transforms(unconstrain, constrain, log_density)


# --------------------------------------------------------------------------- ahead of time

# Compiled (init, run) pairs, by structure and argument types: compiled in a worker thread while
# the front end runs the reference EM fits, so that the two compilations overlap (XLA compiles
# outside the GIL). Executables are kept here, not in jax.jit's cache: a repeat call finds them.
_AOT: OrderedDict = OrderedDict()
_AOT_LOCK = threading.Lock()
_AOT_KEEP = 8
_POOL: list = []


def device_args(X: np.ndarray, w: np.ndarray, prior: PriorParams) -> tuple:
    """The traced arguments ``(X, w, prior)`` of the compiled pieces, in the working precision."""
    # NumPy arrays: the compiled programs take them as they are (jnp.asarray would compile a
    # conversion program per argument on a first call).
    dtype = np.dtype(float_dtype())
    prior = PriorParams(*(np.asarray(a, dtype) for a in prior))
    return np.asarray(X, dtype), np.asarray(w, dtype), prior


def abstract_args(n_samples: int, n_features: int, covariance_type: str) -> tuple:
    """Shapes and dtypes of :func:`device_args`'s result, known before the prior is resolved.

    Compilation needs only these, so the sampler's programs can start compiling before the
    data-based prior has been computed.
    """
    dtype = float_dtype()
    n, d = n_samples, n_features
    scale = {"full": (d, d), "tied": (d, d), "diag": (d,), "spherical": ()}[covariance_type]
    shapes = PriorParams(alpha=(), kappa=(), mean=(d,), dof=(), scale=scale)
    prior = PriorParams(*(jax.ShapeDtypeStruct(shape, dtype) for shape in shapes))
    return jax.ShapeDtypeStruct((n, d), dtype), jax.ShapeDtypeStruct((n,), dtype), prior


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return (treedef,) + tuple(
        (np.shape(a), str(a.dtype), bool(getattr(a, "weak_type", False))) for a in leaves
    )


def precompile(args: tuple, n_components: int, covariance_type: str, settings):
    """Start compiling the sampler's programs for ``args``; a Future of (init, run) or None.

    ``settings`` is :class:`bayesgmm.nuts.Settings`. None for ``chain_method="parallel"`` (pmap
    compiles on its first call).
    """
    s = settings
    if s.chain_method == "parallel":
        return None
    d = int(args[0].shape[1])
    structure = (n_components, d, covariance_type, s.num_warmup, bool(s.dense_mass))
    structure += (s.target_accept_prob, s.max_tree_depth)
    lead = () if s.chain_method == "sequential" else (s.num_chains,)
    key = (structure, lead, _signature(args), bool(jax.config.jax_enable_x64))
    with _AOT_LOCK:
        future = _AOT.get(key)
        if future is None:
            if not _POOL:
                _POOL.append(ThreadPoolExecutor(1, thread_name_prefix="bayesgmm-compile"))
            x64 = bool(jax.config.jax_enable_x64)
            future = _POOL[0].submit(_compile_pair, structure, lead, args, x64)
            _AOT[key] = future
            while len(_AOT) > _AOT_KEEP:
                _AOT.popitem(last=False)
        else:
            _AOT.move_to_end(key)
    return future


def _compile_pair(structure: tuple, lead: tuple, args: tuple, x64: bool):
    with jax.enable_x64(x64):  # the caller's precision (a thread-local setting)
        k, d, ct = structure[:3]
        kernel = kernel_pieces(*structure)
        dtype = args[0].dtype
        z = jax.ShapeDtypeStruct(lead + (_potential.flat_size(k, d, ct),), dtype)
        rng = jax.ShapeDtypeStruct(lead + (2,), np.uint32)
        init_fn, run_fn = (kernel.init, kernel.run) if not lead else (kernel.vinit, kernel.vrun)
        state = jax.eval_shape(init_fn, z, rng, *args)
        run_lowered = run_fn.lower(state, *args)
        init_lowered = init_fn.lower(z, rng, *args)
    # XLA compiles outside the GIL: the small init compiles beside run instead of after it.
    with ThreadPoolExecutor(1, thread_name_prefix="bayesgmm-compile-init") as pool:
        init = pool.submit(init_lowered.compile)
        run = run_lowered.compile()
        return init.result(), run
