"""The DataTree that :meth:`Mixture.sample_posterior` writes: building it (for
:mod:`bayesgmm.nuts`), and checks shared by the posterior summaries (:mod:`bayesgmm.posterior`)
and the predictive helpers (:mod:`bayesgmm.predictive`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import xarray

PARAMETERS = ("weights", "means", "covariances")


def posterior_group(post, name: str = "post") -> xarray.Dataset:
    """The ``posterior`` group of a :meth:`Mixture.sample_posterior` tree, checked."""
    try:
        ds = post["posterior"]
    except (KeyError, TypeError):
        raise ValueError(
            f"{name} must be the DataTree returned by Mixture.sample_posterior, with a "
            f"'posterior' group; got {type(post).__name__} without one."
        ) from None
    ds = getattr(ds, "dataset", ds)
    missing = [p for p in PARAMETERS if p not in ds]
    if missing:
        raise ValueError(
            f"{name}.posterior lacks {missing}: it must hold 'weights', 'means' and "
            "'covariances' as Mixture.sample_posterior writes them."
        )
    return ds


# The dims after (chain, draw) of posterior.covariances, per covariance type.
COVARIANCE_DIMS = {
    "full": ("component", "feature", "feature_"),
    "tied": ("feature", "feature_"),
    "diag": ("component", "feature"),
    "spherical": ("component",),
}


def covariance_type_of(ds) -> str:
    dims = tuple(ds["covariances"].dims[2:])
    for ct, expected in COVARIANCE_DIMS.items():
        if dims == expected:
            return ct
    raise ValueError(
        f"post.posterior.covariances has dims {dims}; expected one of the layouts "
        f"{list(COVARIANCE_DIMS.values())} as Mixture.sample_posterior writes them."
    )


# --------------------------------------------------------------------------- writing


def package_version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def sample_stats(stats: dict, relabeled: np.ndarray, max_tree_depth: int) -> dict:
    """ArviZ-named sample statistics, as ``arviz.from_numpyro`` names them."""
    n_steps = np.asarray(stats["num_steps"])
    tree_depth = np.floor(np.log2(np.maximum(n_steps, 1))).astype(np.int64) + 1
    return {
        "lp": -np.asarray(stats["potential_energy"], np.float64),
        "energy": np.asarray(stats["energy"], np.float64),
        "acceptance_rate": np.asarray(stats["accept_prob"], np.float64),
        "step_size": np.asarray(stats["step_size"], np.float64),
        "n_steps": n_steps.astype(np.int64),
        "tree_depth": tree_depth,
        "reached_max_tree_depth": tree_depth >= max_tree_depth,
        "diverging": np.asarray(stats["diverging"], bool),
        "relabeled": relabeled,
    }


def to_datatree(data: dict, k: int, d: int, n: int, ct: str, attrs: dict, n_points: int = 0):
    """The DataTree of ``data`` (group -> variables); dims and coords by variable name."""
    from arviz_base import from_dict

    cov_dims = {
        "full": ["component", "feature", "feature_"],
        "tied": ["feature", "feature_"],
        "diag": ["component", "feature"],
        "spherical": ["component"],
    }[ct]
    dims = {
        "weights": ["component"],
        "means": ["component", "feature"],
        "covariances": cov_dims,
        # observed_data.obs is (obs_id, feature); log_likelihood.obs drops the event dimension.
        "obs": ["obs_id", "feature"],
        "sample_weight": ["obs_id"],
        "log_density_at": ["point"],
    }
    coords = {
        "component": np.arange(k),
        "feature": np.arange(d),
        "feature_": np.arange(d),
        "obs_id": np.arange(n),
        "point": np.arange(n_points),
    }
    return from_dict(data, dims=dims, coords=coords, attrs=attrs, save_warmup=False)
