"""bayesgmm: Gaussian mixture models on JAX and NumPyro, by EM and by NUTS."""

from . import datasets
from .api import FitResult, Mixture
from .posterior import compare, plot_compare
from .predictive import posterior_membership
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
    "posterior_membership",
    "select",
]
__version__ = "0.1.0"
