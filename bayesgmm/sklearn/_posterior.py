"""``PosteriorGaussianMixture``: NUTS on the same model (see :mod:`bayesgmm.sklearn`)."""

from __future__ import annotations

import numbers
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from sklearn.utils import check_random_state

from bayesgmm.api import FitResult
from bayesgmm.params import make_params
from bayesgmm.sklearn._mixture import GaussianMixture, _precision, _precisions
from bayesgmm.stats import choose_block_size, log_prob_fn, map_blocks

__all__ = ["PosteriorGaussianMixture"]


@partial(jax.jit, static_argnames=("covariance_type", "block_size"))
def _posterior_average(Xt, weights, means, covariances, covariance_type, block_size):
    """Averages over S posterior draws, one draw at a time (no (S, n, K) array).

    Parameters
    ----------
    Xt : array of shape (n_features, n_samples)
    weights, means, covariances : arrays with a leading (S,) axis

    Returns
    -------
    log_density : array of shape (n_samples,)
        ``log mean_s p(x | theta_s)``, the posterior predictive density of each row.
    resp : array of shape (n_samples, n_components)
        ``mean_s p(k | x, theta_s)``.
    """
    n, k = Xt.shape[1], weights.shape[1]

    def body(carry, draw):
        lse, resp_sum = carry
        params = make_params(*draw, covariance_type)
        lp = map_blocks(log_prob_fn(params, covariance_type), Xt, block_size)  # (n, K)
        dens = logsumexp(lp, axis=1)
        return (jnp.logaddexp(lse, dens), resp_sum + jnp.exp(lp - dens[:, None])), None

    init = (jnp.full(n, -jnp.inf, Xt.dtype), jnp.zeros((n, k), Xt.dtype))
    (lse, resp_sum), _ = jax.lax.scan(body, init, (weights, means, covariances))
    s = weights.shape[0]
    return lse - jnp.log(s), resp_sum / s


class PosteriorGaussianMixture(GaussianMixture):
    """A Gaussian mixture whose parameters are sampled by NUTS: scikit-learn's interface.

    Fits the MAP estimate by EM (as :class:`GaussianMixture` with the same parameters), then
    samples the posterior of the same model with :meth:`bayesgmm.Mixture.sample_posterior`,
    started from that fit and relabelled to its component order. :meth:`predict_proba` and
    :meth:`score_samples` average over the posterior draws (the posterior predictive).

    Parameters
    ----------
    n_components, covariance_type, tol, reg_covar, max_iter, n_init, init_params, \
weights_init, means_init, precisions_init, random_state, warm_start, verbose, verbose_interval
        As :class:`GaussianMixture`, for the reference EM fit. ``random_state`` also seeds the
        sampler.
    prior : "default" or bayesgmm.Prior, default="default"
        NUTS needs a proper prior.
    num_chains : int, default=4
    num_warmup : int, default=1000
    num_samples : int, default=1000
        Draws kept per chain.

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_ : ndarray
        Posterior means of the weights, means and covariances (and the precisions of those
        covariances).
    posterior_ : xarray.DataTree
        The ArviZ DataTree of :meth:`bayesgmm.Mixture.sample_posterior`.
    fitted_ : bayesgmm.FitResult
        The MAP fit the chains started from; ``converged_``, ``n_iter_`` and ``lower_bound_``
        are its.
    mixture_ : bayesgmm.Mixture
    """

    _default_prior = "default"

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
        prior="default",
        num_chains=4,
        num_warmup=1000,
        num_samples=1000,
    ):
        super().__init__(
            n_components,
            covariance_type=covariance_type,
            tol=tol,
            reg_covar=reg_covar,
            max_iter=max_iter,
            n_init=n_init,
            init_params=init_params,
            weights_init=weights_init,
            means_init=means_init,
            precisions_init=precisions_init,
            random_state=random_state,
            warm_start=warm_start,
            verbose=verbose,
            verbose_interval=verbose_interval,
            prior=prior,
        )
        self.num_chains = num_chains
        self.num_warmup = num_warmup
        self.num_samples = num_samples

    def _check_parameters(self) -> None:
        super()._check_parameters()
        if self.prior is None:
            raise ValueError(
                "prior must be 'default' or a bayesgmm.Prior for NUTS (a proper prior), got None."
            )
        for name, low in (("num_chains", 1), ("num_warmup", 0), ("num_samples", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")

    def _after_em(self, X) -> None:
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        with _precision(self._dtype):
            tree = self.mixture_.sample_posterior(
                X,
                rng_key=seed,
                num_chains=self.num_chains,
                num_warmup=self.num_warmup,
                num_samples=self.num_samples,
                init=self.fitted_,
                progress_bar=bool(self.verbose),
                log_likelihood=False,
            )
        post = tree["posterior"]
        k, d, dt = self.n_components, X.shape[1], self._dtype
        draws = {
            name: np.asarray(post[name].values, np.float64).reshape(-1, *post[name].shape[2:])
            for name in ("weights", "means", "covariances")
        }
        self._draws = {name: a.astype(dt) for name, a in draws.items()}
        self.posterior_ = tree
        mean = {name: a.mean(axis=0) for name, a in draws.items()}
        self.weights_ = (mean["weights"] / mean["weights"].sum()).astype(dt)
        self.means_ = mean["means"].reshape(k, d).astype(dt)
        self.covariances_ = mean["covariances"].astype(dt)
        with _precision(dt):
            at_mean = FitResult.from_params(
                self.mixture_, self.weights_, self.means_, self.covariances_
            )
            prec_chol = np.asarray(at_mean.precisions_cholesky, np.float64)
        self.precisions_cholesky_ = prec_chol.astype(dt)
        self.precisions_ = _precisions(prec_chol, self.covariance_type).astype(dt)

    def _average(self, X):
        X = self._validated(X)
        Xt = np.ascontiguousarray(X.T, self._dtype)
        block = choose_block_size(X.shape[0], self.n_components, X.shape[1])
        d = self._draws
        with _precision(self._dtype):
            dens, resp = _posterior_average(
                Xt,
                d["weights"],
                d["means"],
                d["covariances"],
                covariance_type=self.covariance_type,
                block_size=block,
            )
            return np.asarray(dens), np.asarray(resp)

    def score_samples(self, X):
        """Log posterior predictive density of each row: ``log mean_s p(x | theta_s)``."""
        return self._average(X)[0]

    def predict_proba(self, X):
        """Component probabilities averaged over the posterior draws: (n_samples, n_components)."""
        return self._average(X)[1]

    def predict(self, X):
        """The component of highest posterior-averaged probability: shape (n_samples,)."""
        return np.argmax(self.predict_proba(X), axis=1).astype(np.int64)

    def _predict_validated(self, X):
        return np.argmax(self._average(X)[1], axis=1).astype(np.int64)
