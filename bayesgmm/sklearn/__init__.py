"""scikit-learn estimators: ``GaussianMixture`` (EM) and ``PosteriorGaussianMixture`` (NUTS).

``from bayesgmm.sklearn import GaussianMixture`` replaces ``from sklearn.mixture import
GaussianMixture``: the same parameters, defaults, attributes and methods, plus ``prior``.
scikit-learn is an optional dependency: this module imports it, ``import bayesgmm`` does not.

Precision follows the input, as in scikit-learn: float64 data are fitted and scored in float64
and float32 data in float32, whatever JAX's global ``jax_enable_x64`` setting (each call runs
inside ``jax.enable_x64(...)``, which leaves the global setting as it was; JAX compiles and
caches programs separately per setting). Attributes are NumPy arrays of the input's dtype.
"""

from bayesgmm.sklearn._mixture import GaussianMixture
from bayesgmm.sklearn._posterior import PosteriorGaussianMixture

__all__ = ["GaussianMixture", "PosteriorGaussianMixture"]
