"""Random keys from the ``rng_key`` arguments of the public functions (core helper, no surface)."""

from __future__ import annotations

import jax
import numpy as np
from jax import Array


def as_key(rng_key) -> Array:
    """A JAX PRNG key from an int seed or an existing key."""
    if isinstance(rng_key, (int, np.integer)) and not isinstance(rng_key, bool):
        return jax.random.PRNGKey(int(rng_key))
    if isinstance(rng_key, jax.Array):
        return rng_key
    raise ValueError(
        f"rng_key must be an int seed or a jax.random key, got {type(rng_key).__name__}."
    )


def key_on_host(rng_key):
    """``as_key(rng_key)``, made with NumPy for the usual seeds (0 <= seed < 2**31).

    ``jax.random.PRNGKey(seed)`` is the raw key ``[0, seed]`` there; building it on the host
    spares a compilation on the first fit of a process.
    """
    if isinstance(rng_key, (int, np.integer)) and not isinstance(rng_key, bool):
        if 0 <= int(rng_key) < 2**31:
            return np.array([0, int(rng_key)], np.uint32)
    return as_key(rng_key)
