"""bayesgmm: Gaussian mixture models on JAX and NumPyro, by EM and by NUTS."""

from . import datasets
from .api import FitResult, Mixture
from .posterior import compare, plot_compare
from .priors import Prior
from .select import Selection, select
from .warnings import MultimodalPosteriorWarning

__all__ = [
    "FitResult",
    "Mixture",
    "MultimodalPosteriorWarning",
    "Prior",
    "Selection",
    "compare",
    "datasets",
    "plot_compare",
    "select",
]
__version__ = "0.1.0"
