"""The user-facing classes: ``Mixture`` (a model declaration) and ``FitResult`` (an EM fit)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from . import _validation as v
from . import stream
from ._transform import (
    Transform,
    identity,
    params_to_data,
)
from .driver import Outcome, data_moments, fit_candidates
from .init import DEFAULT_INIT, DEFAULT_N_INIT
from .numerics import float_dtype
from .params import GMMParams, n_parameters
from .predictive import finish_posterior, sample_prior_predictive
from .priors import Prior, PriorParams, cast_prior, needs_data, resolve_prior
from .scoring import clamp, draw, score_array, total_of, working_params
from .sources import is_source

as_key = v.as_key  # re-exported: the samplers take their keys from here


@dataclass(frozen=True)
class Mixture:
    """A Gaussian mixture, declared once as a NumPyro model and fitted by EM or NUTS.

    Parameters
    ----------
    n_components : int
        Number of mixture components K.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Structure of the covariances, with scikit-learn's shapes.
    prior : None, "default" or Prior, default=None
        ``None`` fits maximum likelihood. ``"default"`` uses mclust's data-based conjugate prior
        (``defaultPrior``, Fraley & Raftery 2007): with V the data covariance and
        f = K^(-2/D), scale f V for full and tied, and for diag and spherical one scale for
        every coordinate, f trace(V) / D; D + 2 degrees of freedom, mean precision 0.01 about
        the data mean, a flat Dirichlet (see :class:`Prior`, also for ``scale="per_feature"``).
        A :class:`Prior` sets hyperparameters explicitly.
    reg_covar : float, default=1e-6
        Added to the covariance diagonal in maximum-likelihood fits (as scikit-learn does).
        Ignored with a prior, which regularises the covariances itself.

    Examples
    --------
    >>> import bayesgmm as bg
    >>> X = bg.datasets.load_faithful()
    >>> res = bg.Mixture(2, prior="default").fit_em(X)
    >>> res.means.shape
    (2, 2)
    """

    n_components: int
    covariance_type: str = "full"
    prior: Prior | str | None = None
    reg_covar: float = 1e-6

    def __post_init__(self) -> None:
        # A frozen dataclass: the validated values are set once, here, and never change.
        prior = self.prior
        if prior is not None and not (isinstance(prior, Prior) or prior == "default"):
            raise ValueError(f"prior must be None, 'default' or a bayesgmm.Prior, got {prior!r}.")
        set_ = partial(object.__setattr__, self)
        set_("n_components", v.check_n_components(self.n_components))
        set_("covariance_type", v.check_covariance_type(self.covariance_type))
        set_("reg_covar", v.check_nonnegative_float(self.reg_covar, "reg_covar"))

    def __hash__(self) -> int:
        # A Prior may hold arrays, which do not hash; equal mixtures still hash equal.
        prior = self.prior if self.prior is None or isinstance(self.prior, str) else "Prior"
        return hash((self.n_components, self.covariance_type, prior, self.reg_covar))

    # ------------------------------------------------------------------ the NumPyro model
    def resolve_prior(
        self, X: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> PriorParams | None:
        """The prior's hyperparameters for data ``X`` (data-based defaults filled in).

        The data's moments are computed in the working precision, as :meth:`fit_em` does, so
        that the result equals the ``prior`` of a fit on the same data.

        Returns
        -------
        PriorParams or None
            NumPy float64 arrays; ``None`` for maximum likelihood.
        """
        Xa = v.check_X(X)
        w = v.check_sample_weight(sample_weight, Xa.shape[0])
        return self._resolve(Xa, w)

    def _resolve(self, Xa: np.ndarray, w: np.ndarray) -> PriorParams | None:
        moments = data_moments(Xa, w) if needs_data(self.prior) else None
        return resolve_prior(self.prior, moments, self.n_components, self.covariance_type)

    def model(
        self,
        X=None,
        sample_weight=None,
        *,
        n_samples: int = 1,
        n_features: int | None = None,
        prior: PriorParams | None = None,
    ):
        """The NumPyro model of the mixture.

        Parameters
        ----------
        X : array of shape (n_samples, n_features) or (n_samples,), optional
            Observations. ``None`` draws ``n_samples`` rows from the prior predictive.
        sample_weight : array of shape (n_samples,), optional
            Per-row weights of the log-likelihood.
        n_samples : int, default=1
            Rows to draw when ``X`` is None.
        n_features : int, optional
            Dimension when ``X`` is None and the mixture has no prior (``prior=None``).
        prior : PriorParams, optional
            Resolved hyperparameters, e.g. a fit's ``res.prior`` or
            ``mix.resolve_prior(X)``: needed when ``X`` is None and the mixture's prior has
            data-based defaults (``"default"``, or a :class:`Prior` without ``mean`` and
            ``scale``). With ``X`` given they replace the ones resolved from ``X``.

        Sample sites (with a prior): ``weights`` (K,), ``means`` (K, D), ``covariances`` (per
        covariance type), and the observed ``obs``.
        """
        dtype = jnp.result_type(float)
        if prior is not None:
            prior = self._check_resolved(prior)
        if X is not None:
            if isinstance(X, jax.core.Tracer):
                raise ValueError("Mixture.model needs concrete data X, not a traced array.")
            Xa = v.check_X(X, dtype=float_dtype())
            w = None if sample_weight is None else v.check_sample_weight(sample_weight, Xa.shape[0])
            if prior is None:
                prior = self._resolve(Xa, np.ones(Xa.shape[0]) if w is None else w)
            d = Xa.shape[1]
            X_in = jnp.asarray(Xa, dtype)
            w_in = None if w is None else jnp.asarray(w, dtype)
        else:
            d, prior = self._predictive_setup(n_features, prior)
            X_in, w_in = None, None
        from .model import mixture_model  # NumPyro: imported on first use

        mixture_model(
            X_in,
            w_in,
            n_components=self.n_components,
            n_features=d,
            covariance_type=self.covariance_type,
            prior=cast_prior(prior, dtype),
            n_samples=n_samples,
        )

    def _check_resolved(self, prior) -> PriorParams:
        if self.prior is None:
            raise ValueError(
                "Mixture.model got prior=..., but the mixture has no prior (prior=None)."
            )
        if not isinstance(prior, PriorParams):
            raise ValueError(
                "Mixture.model's prior must be resolved hyperparameters (a PriorParams, e.g. "
                f"res.prior or mix.resolve_prior(X)), got {type(prior).__name__}."
            )
        return prior

    def _predictive_setup(self, n_features, prior):
        if prior is not None:
            return int(np.shape(prior.mean)[0]), prior
        if self.prior is not None and not needs_data(self.prior):
            resolved = resolve_prior(self.prior, None, self.n_components, self.covariance_type)
            return int(np.shape(resolved.mean)[0]), resolved
        if self.prior is None and n_features is not None:
            return v.check_positive_int(n_features, "n_features"), None
        raise ValueError(
            "Mixture.model(None) draws from the prior predictive and needs the prior's "
            "data-based hyperparameters: pass prior=res.prior (a fit's) or "
            "prior=mix.resolve_prior(X), or declare Prior(mean=..., scale=...) "
            "(with prior=None, pass n_features=...)."
        )

    # ------------------------------------------------------------------ EM
    def fit_em(
        self,
        X: ArrayLike,
        *,
        rng_key: int | Array = 0,
        n_init: int = DEFAULT_N_INIT,
        init: str = DEFAULT_INIT,
        max_iter: int = 1000,
        tol: float = 1e-6,
        sample_weight: ArrayLike | None = None,
        init_params: dict | None = None,
        chunk_size: int | None = None,
    ) -> FitResult:
        """Fit maximum-likelihood (``prior=None``) or MAP estimates by EM.

        Parameters
        ----------
        X : array of shape (n_samples, n_features) or (n_samples,), a source, or sharded rows
            A source (``np.load(path, mmap_mode="r")``, ``h5py.Dataset``, ``zarr.Array``,
            ``dask.array.Array``: anything with ``.shape``, ``.dtype`` and row slicing that is
            not an in-memory array) is streamed: every iteration is one pass over it, chunk by
            chunk. The output of :func:`bayesgmm.shard_rows` is fitted on all its devices and
            processes. Either gives the in-memory fit up to rounding.
        rng_key : int or jax.random key, default=0
        n_init : int, default=10
            Starts: 20 EM iterations together, then the best one alone to convergence.
        init : {"kmeans", "kmeans++", "k-means++", "random", "random_from_data"}, default="kmeans++"
        max_iter : int, default=1000
            Maximum number of iterations (E-step + M-step); 0 returns the start, scored.
        tol : float, default=1e-6
            Stop when the objective per sample changes by less than ``tol``.
        sample_weight : array of shape (n_samples,), optional
            Non-negative row weights; integer weights equal repeating rows.
        init_params : dict, optional
            ``dict(weights=, means=, covariances=)`` to start from; the first E-step uses them.
            Any of the three may be left out: ``init`` gives the rest, as scikit-learn's
            ``weights_init``, ``means_init`` and ``precisions_init`` do.
        chunk_size : int, optional
            Rows read at a time when ``X`` is streamed (given, it also streams an in-memory
            ``X``); by default about 32 MiB of rows. ``sample_weight`` may then be a source too.

        Returns
        -------
        FitResult

        Notes
        -----
        The objective never falls with a prior or ``reg_covar=0``; with ``reg_covar > 0`` the
        M-step is not an exact maximiser (falls up to ~1e-5 relative, see docs/design.md).
        """
        settings = v.check_em_settings(
            init=init, n_init=n_init, max_iter=max_iter, tol=tol, rng_key=rng_key
        )
        v.check_em_prior(self.prior)
        if chunk_size is not None or stream.streamed_or_sharded(X):
            ((out,),), _, d = stream.fit_rows(
                [(self.covariance_type, [self.n_components])],
                X,
                sample_weight,
                prior=self.prior,
                reg_covar=self.reg_covar,
                chunk_size=chunk_size,
                init_params=init_params,
                **settings,
            )
            if isinstance(out, str):
                raise ValueError(out)
            return FitResult.from_outcome(self, out, d)
        Xa = v.check_X(X)
        w = v.check_sample_weight(sample_weight, Xa.shape[0])
        v.check_enough_samples(Xa.shape[0], w, self.n_components)
        ip = None
        if init_params is not None:
            ip = v.check_init_params(
                init_params, self.n_components, Xa.shape[1], self.covariance_type, partial=True
            )
        (out,) = fit_candidates(
            Xa,
            w,
            [self.n_components],
            self.covariance_type,
            self.prior,
            reg_covar=self.reg_covar,
            init_params=ip,
            **settings,
        )
        if isinstance(out, str):
            raise ValueError(out)
        return FitResult.from_outcome(self, out, Xa.shape[1])

    # ------------------------------------------------------------------ NUTS
    def sample_posterior(
        self,
        X: ArrayLike,
        *,
        rng_key: int | Array = 0,
        num_chains: int = 4,
        num_warmup: int = 1000,
        num_samples: int = 1000,
        init: FitResult | dict | None = None,
        sample_weight: ArrayLike | None = None,
        progress_bar: bool | None = None,
        chain_method: str | None = None,
        target_accept_prob: float = 0.8,
        max_tree_depth: int = 10,
        dense_mass: bool = False,
        log_likelihood: bool = True,
        posterior_predictive: bool = False,
    ):
        """Sample the posterior of the weights, means and covariances with NUTS.

        The sampler runs NumPyro's NUTS on the model that :meth:`model` declares (the component
        assignments are marginalised), so it needs a proper prior: ``prior="default"`` or a
        :class:`Prior`, resolved from ``X`` as :meth:`fit_em` does. Chains start from every
        distinct optimum of many EM restarts; when chains settle in basins they do not leave,
        tempered SMC from those basins weighs them (:mod:`bayesgmm.basins`), and the modes are
        named, with their masses, by a :class:`bayesgmm.MultimodalPosteriorWarning` (see
        :mod:`bayesgmm.sampler`).

        Parameters
        ----------
        X : array of shape (n_samples, n_features) or (n_samples,)
        rng_key : int or jax.random key, default=0
        num_chains : int, default=4
        num_warmup : int, default=1000
            Warm-up (adaptation) iterations per chain, discarded.
        num_samples : int, default=1000
            Draws kept per chain.
        init : FitResult, dict or None, default=None
            A fit of this mixture (or a dict of ``weights``, ``means``, ``covariances``) to
            start chains from, besides the EM optima.
        sample_weight : array of shape (n_samples,), optional
            Per-row weights of the log-likelihood, as in :meth:`fit_em`.
        progress_bar : bool or None, default=None
            ``None`` shows a bar on a terminal for runs of at least 1000 chain-iterations (never
            under ``CI`` or pytest-xdist).
        chain_method : {"parallel", "vectorized", "sequential"} or None, default=None
            ``None`` runs one chain per device (``"parallel"``) when
            ``jax.local_device_count() >= num_chains``; otherwise ``"sequential"`` on a CPU
            (each chain its own compiled calls, one chain per CPU core at a time, in threads)
            and ``"vectorized"`` (all chains on one device under
            ``vmap``) on an accelerator. See :mod:`bayesgmm.nuts`.
        target_accept_prob : float, default=0.8
        max_tree_depth : int, default=10
        dense_mass : bool, default=False
            Adapt a dense mass matrix instead of a diagonal one.
        log_likelihood : bool, default=True
            Store the pointwise log-likelihood (n_chains x n_draws x n_samples values).
        posterior_predictive : bool, default=False
            Add a ``posterior_predictive`` group (``obs``: chain, draw, obs_id, feature).

        Returns
        -------
        xarray.DataTree
            ArviZ groups:

            - ``posterior``: ``weights`` (chain, draw, component), ``means`` (chain, draw,
              component, feature), ``covariances`` (chain, draw, ...) with the trailing shape of
              :attr:`FitResult.covariances` (dims ``component``, ``feature``, ``feature_``).
            - ``sample_stats``: ``lp``, ``energy``, ``acceptance_rate``, ``step_size``,
              ``n_steps``, ``tree_depth``, ``reached_max_tree_depth``, ``diverging`` and
              ``relabeled`` (whether the draw's components were permuted to the reference order;
              the fraction is in ``sample_stats.attrs["relabeled_fraction"]``) and ``mode`` (each
              draw's EM configuration; ``posterior.attrs``: ``mode_masses``, ``multimodal``...).
            - ``posterior_invariant``: ``log_likelihood_total`` (chain, draw) and
              ``log_density_at`` (chain, draw, point), at feature quantiles 0.1, 0.5, 0.9.
            - ``log_likelihood``: ``obs`` (chain, draw, obs_id), the log-density of each row
              (not multiplied by ``sample_weight``), for ``arviz.loo`` and ``arviz.compare``.
            - ``observed_data``: ``obs`` (obs_id, feature); ``constant_data``: ``sample_weight``
              when given.
            - ``log_prior``: ``weights``, ``means``, ``covariances`` (chain, draw), for ``psense``.

        Examples
        --------
        Compare the number of components by PSIS-LOO:

        >>> import arviz as az
        >>> import bayesgmm as bg
        >>> X = bg.datasets.load_faithful()
        >>> post2 = bg.Mixture(2, prior="default").sample_posterior(X)  # doctest: +SKIP
        >>> post3 = bg.Mixture(3, prior="default").sample_posterior(X)  # doctest: +SKIP
        >>> az.compare({"K=2": post2, "K=3": post3})  # doctest: +SKIP
        """
        from .sampler import sample_posterior

        if isinstance(init, FitResult):  # the sampler takes arrays: check and unpack here
            init = init._for_sampler(self, v.check_X(X).shape[1])
        skip = ("self", "X", "posterior_predictive", "sample_posterior", "skip")
        post = sample_posterior(self, X, **{k: a for k, a in locals().items() if k not in skip})
        return finish_posterior(self, post, X, sample_weight, rng_key, posterior_predictive)

    sample_prior_predictive = sample_prior_predictive  # see bayesgmm.predictive


class FitResult:
    """The outcome of :meth:`Mixture.fit_em`.

    Attributes
    ----------
    weights : array of shape (n_components,)
    means : array of shape (n_components, n_features)
    covariances : array
        full (K, D, D), tied (D, D), diag (K, D), spherical (K,).
    precisions_cholesky : array
        Same shape as ``covariances``; as scikit-learn's ``precisions_cholesky_``.
    params : dict
        ``weights``, ``means``, ``covariances``: the NumPyro model's sites.
    covariance_type : str
    n_iter : int
    converged : bool
    log_likelihood : float
        Total (weighted) log-likelihood of the data at the returned parameters.
    objective : float
        ``log_likelihood`` plus the log-prior: the model's log joint density at ``params``.
    history : ndarray of shape (n_iter,)
        The objective after each iteration.
    """

    def __init__(
        self,
        *,
        mixture: Mixture,
        params_internal: GMMParams,
        n_iter: int,
        converged: bool,
        log_likelihood: float,
        objective: float,
        history: np.ndarray,
        prior: PriorParams | None,
        n_features_in: int,
        transform: Transform | None = None,
    ) -> None:
        # _params: those of (X - shift) / scale in the working dtype, on the device; the public
        # attributes are those of X as given, float64 (see bayesgmm._transform).
        self.mixture, self._params, self.n_features_in = mixture, params_internal, n_features_in
        self._transform = identity(n_features_in) if transform is None else transform
        self._data_params: tuple[np.ndarray, ...] | None = None
        self.covariance_type, self.n_iter, self.converged = (
            mixture.covariance_type,
            n_iter,
            converged,
        )
        self.log_likelihood, self.objective, self.history = log_likelihood, objective, history
        self.prior = prior

    @classmethod
    def from_outcome(cls, mixture: Mixture, outcome: Outcome, n_features: int) -> FitResult:
        """The result of a driver's fit of ``mixture`` (whose K is ``outcome.n_components``)."""
        if mixture.n_components != outcome.n_components:
            mixture = replace(mixture, n_components=outcome.n_components)
        return cls(
            mixture=mixture,
            params_internal=outcome.params,
            n_iter=outcome.n_iter,
            converged=outcome.converged,
            log_likelihood=outcome.log_likelihood,
            objective=outcome.objective,
            history=outcome.history,
            prior=outcome.prior,
            n_features_in=n_features,
            transform=getattr(outcome, "transform", None),
        )

    @classmethod
    def from_params(cls, mixture: Mixture, weights, means, covariances) -> FitResult:
        """A result for given parameters (no fitting), e.g. to score or sample.

        Validated as ``init_params`` (weights may be 0); a ValueError names the parameter.
        """
        if not isinstance(mixture, Mixture):
            raise ValueError(f"mixture must be a bayesgmm.Mixture, got {type(mixture).__name__}.")
        ct = mixture.covariance_type
        p, t = working_params(
            v.check_params(*(weights, means, covariances), mixture.n_components, None, ct), ct
        )
        kw = dict(mixture=mixture, params_internal=p, prior=None, transform=t, n_iter=0)
        kw |= dict(n_features_in=p.means.shape[1], converged=False, history=np.zeros(0))
        return cls(log_likelihood=float("nan"), objective=float("nan"), **kw)

    def __repr__(self) -> str:
        return (
            f"FitResult(n_components={self.n_components}, "
            f"covariance_type={self.covariance_type!r}, "
            f"log_likelihood={self.log_likelihood:.6g}, objective={self.objective:.6g}, "
            f"n_iter={self.n_iter}, converged={self.converged})"
        )

    @property
    def n_components(self) -> int:
        return self.mixture.n_components

    def _host_params(self) -> tuple[np.ndarray, ...]:
        if self._data_params is None:
            p = jax.device_get(self._params)
            self._data_params = params_to_data(*p, self._transform)
        return self._data_params

    # float64 in both precisions: the means of float64 data near 1e8 keep their digits.
    @property
    def weights(self) -> np.ndarray:
        return self._host_params()[0]

    @property
    def means(self) -> np.ndarray:
        return self._host_params()[1]

    @property
    def covariances(self) -> np.ndarray:
        return self._host_params()[2]

    @property
    def precisions_cholesky(self) -> np.ndarray:
        return self._host_params()[3]

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "means": self.means, "covariances": self.covariances}

    @property
    def n_parameters(self) -> int:
        return n_parameters(self.n_components, self.n_features_in, self.covariance_type)

    # ------------------------------------------------------------------ scoring
    def _score_rows(self, X, output: str) -> np.ndarray:
        score = partial(score_array, self._params, self._transform, self.covariance_type, output)
        if stream.streamed_or_sharded(X):  # in chunks, or this process's rows
            X = stream.local_rows(X)
            if is_source(X):
                return stream.map_source(
                    X, self._params, self.n_features_in,
                    lambda xt, block: score(np.asarray(xt, np.float64).T),
                )  # fmt: skip
        return score(v.check_X(X, n_features=self.n_features_in))

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Log-density of each row under the mixture: shape (n_samples,), working dtype.

        Finite for every finite row: beyond the dtype's range, its most negative value.
        """
        lp = self._score_rows(X, "score_samples")
        dtype = lp.dtype
        return np.maximum(
            lp - self.n_features_in * self._transform.log_scale, -np.finfo(dtype).max
        ).astype(dtype)

    def score(self, X: ArrayLike) -> float:
        """Mean log-likelihood per sample (finite for finite X; over every process's rows for
        ``shard_rows`` data, a collective)."""
        lp = np.asarray(self.score_samples(X), np.float64)
        return stream.global_mean(float(np.sum(lp / max(lp.shape[0], 1))), lp.shape[0], X)

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Posterior component probabilities (responsibilities): shape (n_samples, n_components)."""
        return self._score_rows(X, "predict_proba")

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The most probable component of each row: shape (n_samples,)."""
        return self._score_rows(X, "predict")

    def bic(self, X: ArrayLike) -> float:
        """Bayesian information criterion, scikit-learn's sign (lower is better).

        For MAP fits the log-likelihood is taken at the MAP estimate, as mclust does.
        """
        # In chunks for sources; over every process's rows for shard_rows data.
        total, n = stream.process_total(*total_of(self.score_samples(X)), X)
        return clamp(-2 * total + self.n_parameters * np.log(n))

    def aic(self, X: ArrayLike) -> float:
        """Akaike information criterion (lower is better)."""
        total, _ = stream.process_total(*total_of(self.score_samples(X)), X)
        return clamp(-2 * total + 2 * self.n_parameters)

    def sample(self, n_samples: int = 1, rng_key: int | Array = 0) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n_samples`` rows from the fitted mixture: ``(X_new, labels)``.

        ``X_new`` is float64; drawn for a bucket of sizes (no compilation per ``n_samples``).
        """
        n_samples = v.check_positive_int(n_samples, "n_samples")
        key = as_key(rng_key)
        return draw(key, self._params, self._transform, self.covariance_type, n_samples)

    def _for_sampler(self, mixture: Mixture, n_features: int) -> dict[str, np.ndarray]:
        """This fit's parameters (NumPy float64) as a sampler's start; it must fit ``mixture``."""
        got = (self.n_components, self.covariance_type, self.n_features_in)
        want = (mixture.n_components, mixture.covariance_type, n_features)
        if got != want:
            names = "(n_components, covariance_type, n_features)"
            raise ValueError(f"init must be a fit of the same mixture: {names} {want}, got {got}.")
        return {name: np.asarray(a, np.float64) for name, a in self.params.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python summary (lists and floats), e.g. for JSON."""
        return {
            "n_components": self.n_components,
            "covariance_type": self.covariance_type,
            "weights": np.asarray(self.weights).tolist(),
            "means": np.asarray(self.means).tolist(),
            "covariances": np.asarray(self.covariances).tolist(),
            "log_likelihood": self.log_likelihood,
            "objective": self.objective,
            "n_iter": self.n_iter,
            "converged": self.converged,
        }
