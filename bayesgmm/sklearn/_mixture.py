"""``GaussianMixture``: EM on JAX behind scikit-learn's interface (see :mod:`bayesgmm.sklearn`)."""

from __future__ import annotations

import copy
import numbers
import time
import warnings

import jax
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from bayesgmm.api import FitResult, Mixture
from bayesgmm.priors import Prior

__all__ = ["GaussianMixture"]

_INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")
_FLOATS = [np.float64, np.float32]


def _precision(dtype):
    """The context that computes in ``dtype``: float64 on, anything else off."""
    return jax.enable_x64(np.dtype(dtype) == np.float64)


def _precisions(prec_chol: np.ndarray, covariance_type: str) -> np.ndarray:
    """scikit-learn's ``precisions_`` from ``precisions_cholesky_`` (U with P = U U^T)."""
    if covariance_type in ("full", "tied"):
        return prec_chol @ np.swapaxes(prec_chol, -1, -2)
    return prec_chol**2


def _covariances_from_precisions(precisions: np.ndarray, covariance_type: str) -> np.ndarray:
    if covariance_type in ("full", "tied"):
        return np.linalg.inv(precisions)
    return 1.0 / precisions


def _numpy_copy(result):
    """A shallow copy of ``result`` whose JAX arrays are NumPy arrays.

    JAX rebuilds a pickled array under the unpickling process's x64 setting (a float64 array
    comes back float32 with x64 off); NumPy arrays keep their dtype.
    """
    out = copy.copy(result)
    out.__dict__ = jax.tree.map(
        lambda a: np.asarray(a) if isinstance(a, jax.Array) else a, result.__dict__
    )
    return out


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by EM on JAX, a drop-in for ``sklearn.mixture.GaussianMixture``.

    Parameters
    ----------
    n_components : int, default=1
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    tol : float, default=1e-3
        Convergence threshold on the change of the lower bound (mean log-likelihood per sample,
        plus the log-prior per sample with a prior) between two iterations.
    reg_covar : float, default=1e-6
        Added to the covariance diagonals (maximum likelihood only: a prior regularises).
    max_iter : int, default=100
        EM iterations per run; 0 returns the initialisation.
    n_init : int, default=1
        Runs from different starts (run together, vectorised); the best is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        bayesgmm's own k-means, D^2 seeding, random responsibilities or random rows.
    weights_init : array of shape (n_components,), optional
    means_init : array of shape (n_components, n_features), optional
    precisions_init : array, optional
        Shape per covariance type as scikit-learn's. Any of the three may be given alone; the
        others then come from ``init_params``.
    random_state : int, RandomState or None, default=None
        Seeds the JAX key of the starts (and :meth:`sample`).
    warm_start : bool, default=False
        Continue from the last fit's parameters and lower bound.
    verbose : int, default=0
        Printed after the fit (the iterations run compiled): per run and every
        ``verbose_interval`` iterations of the best run.
    verbose_interval : int, default=10
    prior : None, "default" or bayesgmm.Prior, default=None
        ``None``: maximum likelihood, as scikit-learn. Otherwise MAP estimation under the
        conjugate prior (see :class:`bayesgmm.Mixture`).

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_ : ndarray
        In scikit-learn's shapes and the input's dtype.
    converged_ : bool
    n_iter_ : int
        Iterations of the best run.
    lower_bound_ : float
        Lower bound of the best run: its mean log-likelihood per sample at the last E-step.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        When fitted on a DataFrame with string column names.
    fitted_ : bayesgmm.FitResult
        Its arrays are JAX arrays in the input's precision: for a float64 fit, call its
        methods inside ``with jax.enable_x64(True):`` (the estimator's own methods do).
    mixture_ : bayesgmm.Mixture
        The model, for :meth:`bayesgmm.Mixture.sample_posterior` on the same data.

    Notes
    -----
    Differences from scikit-learn: the starts of ``init_params`` are bayesgmm's own (drawn from
    a JAX key), the ``n_init`` runs are compared by the objective of their final parameters
    (scikit-learn: by their lower bound, one E-step earlier), ``weights_init`` is renormalised
    to sum to 1, and ``lower_bounds_`` (the per-iteration history) is not kept; the objective
    per iteration is ``fitted_.history``.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> import bayesgmm as bg
    >>> from bayesgmm.sklearn import GaussianMixture
    >>> X = bg.datasets.load_faithful()
    >>> pipe = make_pipeline(StandardScaler(), GaussianMixture(2, random_state=0)).fit(X)
    >>> pipe.predict(X).shape
    (272,)
    """

    _default_prior = None

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        prior=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.prior = prior

    # ------------------------------------------------------------------ parameters
    def _check_parameters(self) -> None:
        def integer(name, low):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")

        def real(name):
            value = getattr(self, name)
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not ok or not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative finite number, got {value!r}.")

        integer("n_components", 1)
        integer("max_iter", 0)
        integer("n_init", 1)
        integer("verbose_interval", 1)
        real("tol")
        real("reg_covar")
        if self.covariance_type not in ("full", "tied", "diag", "spherical"):
            raise ValueError(
                "covariance_type must be one of 'full', 'tied', 'diag', 'spherical', "
                f"got {self.covariance_type!r}."
            )
        if self.init_params not in _INIT_PARAMS:
            raise ValueError(
                f"init_params must be one of {', '.join(map(repr, _INIT_PARAMS))}, "
                f"got {self.init_params!r}."
            )
        p = self.prior
        if not (p is None or (isinstance(p, str) and p == "default") or isinstance(p, Prior)):
            raise ValueError(f"prior must be None, 'default' or a bayesgmm.Prior, got {p!r}.")

    def _given_init(self, n_features: int) -> dict:
        """The user's ``*_init`` arrays as ``Mixture.fit_em(init_params=)`` entries."""
        k, d, ct = self.n_components, n_features, self.covariance_type
        given = {}
        if self.weights_init is not None:
            w = np.asarray(self.weights_init, np.float64)
            if w.shape != (k,):
                raise ValueError(f"weights_init must have shape ({k},), got {w.shape}.")
            if np.any(w < 0) or np.any(w > 1) or not np.isclose(w.sum(), 1.0, atol=1e-6):
                raise ValueError(
                    "weights_init must lie in [0, 1] and sum to 1, got "
                    f"min {w.min():.6g}, max {w.max():.6g}, sum {w.sum():.6g}."
                )
            given["weights"] = w
        if self.means_init is not None:
            m = np.asarray(self.means_init, np.float64)
            if m.shape != (k, d):
                raise ValueError(f"means_init must have shape ({k}, {d}), got {m.shape}.")
            given["means"] = m
        if self.precisions_init is not None:
            p = np.asarray(self.precisions_init, np.float64)
            shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[ct]
            if p.shape != shape:
                raise ValueError(
                    f"precisions_init must have shape {shape} for covariance_type={ct!r}, "
                    f"got {p.shape}."
                )
            if ct in ("full", "tied"):
                mats = p if ct == "full" else p[None]
                sym = np.allclose(mats, np.swapaxes(mats, -1, -2))
                if not sym or np.any(np.linalg.eigvalsh(mats) <= 0):
                    raise ValueError("precisions_init must be symmetric, positive-definite.")
            elif np.any(p <= 0):
                raise ValueError("precisions_init must be positive.")
            given["covariances"] = _covariances_from_precisions(p, ct)
        return given

    def _mixture(self) -> Mixture:
        prior = self.prior if self.prior is not None else self._default_prior
        return Mixture(
            self.n_components, self.covariance_type, prior=prior, reg_covar=self.reg_covar
        )

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None):
        """Fit by EM ``n_init`` times and keep the best run.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        self._fit(X)
        return self

    def fit_predict(self, X, y=None):
        """Fit, then the most probable component of each row: shape (n_samples,)."""
        X = self._fit(X)
        return self._predict_validated(X)

    def _fit(self, X) -> np.ndarray:
        X = validate_data(self, X, dtype=_FLOATS, ensure_min_samples=2)
        if X.shape[0] < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components but got "
                f"n_components = {self.n_components}, n_samples = {X.shape[0]}"
            )
        self._check_parameters()
        mixture = self._mixture()
        start = time.perf_counter()
        with _precision(X.dtype):
            result, n_iter, converged, lower_bound = self._run_em(mixture, X)
        seconds = time.perf_counter() - start
        self._report(result, X.shape[0], n_iter, converged, lower_bound, seconds)
        if not converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=3,
            )
        self._set_fitted(mixture, result, X.dtype)
        self.converged_ = bool(converged)
        self.n_iter_ = int(n_iter)
        self.lower_bound_ = float(lower_bound)
        self._after_em(X)
        return X

    def _run_em(self, mixture: Mixture, X: np.ndarray):
        """``(FitResult, n_iter, converged, lower_bound)`` with scikit-learn's meanings.

        The compiled loop tests the change of the objective per sample, as scikit-learn does,
        from the second iteration on (the first compares with -inf). A warm start compares the
        first one with the last fit's lower bound, here, before running the loop.
        """
        n = X.shape[0]
        kw = dict(init=self.init_params, tol=self.tol)
        if self.warm_start and hasattr(self, "converged_"):
            params = {k: np.asarray(a, np.float64) for k, a in self.fitted_.params.items()}
            kw |= dict(init_params=params, rng_key=0)
            scored = mixture.fit_em(X, max_iter=0, **kw)  # the last fit's parameters on X
            first = scored.objective / n
            if self.max_iter == 0:
                return scored, 0, False, -np.inf
            if abs(first - self.lower_bound_) < self.tol:
                return mixture.fit_em(X, max_iter=1, **kw), 1, True, first
            res = mixture.fit_em(X, max_iter=self.max_iter, **kw)
            return res, res.n_iter, res.converged, self._lower_bound(res, n, lambda: first)
        given = self._given_init(X.shape[1])
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        n_init = 1 if len(given) == 3 else self.n_init
        kw |= dict(init_params=given or None, rng_key=seed, n_init=n_init)
        res = mixture.fit_em(X, max_iter=self.max_iter, **kw)
        if self.max_iter == 0:
            # scikit-learn keeps -inf: no iteration computed a lower bound.
            return res, 0, False, -np.inf
        lower_bound = self._lower_bound(
            res, n, lambda: mixture.fit_em(X, max_iter=0, **kw).objective / n
        )
        return res, res.n_iter, res.converged, lower_bound

    @staticmethod
    def _lower_bound(res: FitResult, n: int, first) -> float:
        """The objective per sample before the last M-step (``first()`` scores the start)."""
        if res.n_iter >= 2:
            return float(res.history[res.n_iter - 2]) / n
        return float(first())

    def _report(self, res, n, n_iter, converged, lower_bound, seconds) -> None:
        """scikit-learn's messages, printed after the compiled loop, for the best run."""
        if not self.verbose:
            return
        n_runs = 1 if self.warm_start and hasattr(self, "converged_") else self.n_init
        for i in range(n_runs):
            print(f"Initialization {i}")
        # history[t] is the objective after t + 1 iterations, i.e. the lower bound of t + 2.
        hist = np.asarray(res.history, np.float64) / n
        for it in range(self.verbose_interval, n_iter + 1, self.verbose_interval):
            if self.verbose == 1:
                print(f"  Iteration {it}")
                continue
            change = hist[it - 2] - hist[it - 3] if it >= 3 else np.nan if it == 2 else np.inf
            lapse = seconds * self.verbose_interval / max(n_iter, 1)
            print(f"  Iteration {it}\t time lapse {lapse:.5f}s\t ll change {change:.5f}")
        msg = "converged" if converged else "did not converge"
        if self.verbose == 1:
            print(f"Initialization {msg}.")
        else:
            print(
                f"Initialization {msg}. time lapse {seconds:.5f}s\t lower bound {lower_bound:.5f}."
            )

    def _set_fitted(self, mixture: Mixture, result: FitResult, dtype) -> None:
        ct = self.covariance_type
        self.weights_ = np.asarray(result.weights, dtype)
        self.means_ = np.asarray(result.means, dtype)
        self.covariances_ = np.asarray(result.covariances, dtype)
        self.precisions_cholesky_ = np.asarray(result.precisions_cholesky, dtype)
        prec = _precisions(np.asarray(result.precisions_cholesky, np.float64), ct)
        self.precisions_ = prec.astype(dtype)
        self.fitted_ = result
        self.mixture_ = mixture
        self._dtype = np.dtype(dtype)

    def _after_em(self, X) -> None:
        """Hook for subclasses: runs after the EM fit, inside ``fit``."""

    # ------------------------------------------------------------------ scoring
    def _validated(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, dtype=_FLOATS, reset=False)

    def _call(self, method: str, X) -> np.ndarray:
        with _precision(self._dtype):
            return np.asarray(getattr(self.fitted_, method)(X))

    def _predict_validated(self, X) -> np.ndarray:
        return self._call("predict", X).astype(np.int64)

    def score_samples(self, X):
        """Log-density of each row under the fitted mixture: shape (n_samples,)."""
        return self._call("score_samples", self._validated(X))

    def score(self, X, y=None):
        """Mean log-likelihood per sample."""
        return float(np.mean(self.score_samples(X), dtype=np.float64))

    def predict(self, X):
        """The most probable component of each row: shape (n_samples,)."""
        return self._predict_validated(self._validated(X))

    def predict_proba(self, X):
        """Component probabilities of each row: shape (n_samples, n_components)."""
        return self._call("predict_proba", self._validated(X))

    def bic(self, X):
        """Bayesian information criterion (lower is better)."""
        X = self._validated(X)
        with _precision(self._dtype):
            return float(self.fitted_.bic(X))

    def aic(self, X):
        """Akaike information criterion (lower is better)."""
        X = self._validated(X)
        with _precision(self._dtype):
            return float(self.fitted_.aic(X))

    def sample(self, n_samples=1):
        """Draw rows from the fitted mixture, grouped by component as scikit-learn does.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            Component labels.
        """
        check_is_fitted(self)
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral):
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        if n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples}. The sampling requires at least "
                "one sample."
            )
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        with _precision(self._dtype):
            X_new, labels = self.fitted_.sample(int(n_samples), rng_key=seed)
        labels = np.asarray(labels, np.int64)
        order = np.argsort(labels, kind="stable")
        return np.asarray(X_new, self._dtype)[order], labels[order]

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        state = super().__getstate__()
        if "fitted_" in state:
            state["fitted_"] = _numpy_copy(state["fitted_"])
        return state
