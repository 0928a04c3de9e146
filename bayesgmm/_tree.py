"""Reading the DataTree that :meth:`Mixture.sample_posterior` writes: checks shared by the
posterior summaries (:mod:`bayesgmm.posterior`) and the predictive helpers
(:mod:`bayesgmm.predictive`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
