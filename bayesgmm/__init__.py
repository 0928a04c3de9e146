"""bayesgmm: Gaussian mixture models on JAX and NumPyro, by EM and by NUTS."""

from . import datasets
from .api import FitResult, Mixture
from .distributed import shard_rows
from .posterior import compare, plot_compare
from .priors import Prior
from .select import Selection, select

__all__ = [
    "FitResult",
    "Mixture",
    "Prior",
    "Selection",
    "compare",
    "datasets",
    "plot_compare",
    "select",
    "shard_rows",
]
__version__ = "0.1.0"
