"""The NumPyro model: the one declaration of the mixture.

``mixture_model`` is a plain function; ``Mixture.model`` binds its structural arguments. The
observations are a marginalised mixture (``MixtureSameFamily``), so NUTS sees only continuous
parameters. With a prior, the sample sites are ``weights``, ``means`` and ``covariances``;
without one (maximum likelihood) the same names are ``numpyro.param`` sites, so that
``numpyro.infer.util.log_density(model, (X,), {}, params)`` gives the log-likelihood.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from .priors import PriorParams


def _component_distribution(means, covariances, covariance_type: str):
    k, d = means.shape
    if covariance_type == "full":
        return dist.MultivariateNormal(means, scale_tril=jnp.linalg.cholesky(covariances))
    if covariance_type == "tied":
        tril = jnp.broadcast_to(jnp.linalg.cholesky(covariances), (k, d, d))
        return dist.MultivariateNormal(means, scale_tril=tril)
    if covariance_type == "diag":
        return dist.Normal(means, jnp.sqrt(covariances)).to_event(1)
    return dist.Normal(means, jnp.sqrt(covariances)[:, None] * jnp.ones(d)).to_event(1)


def _prior_sites(prior: PriorParams, n_components: int, n_features: int, covariance_type: str):
    k, d = n_components, n_features
    weights = numpyro.sample("weights", dist.Dirichlet(prior.alpha * jnp.ones(k)))
    sqrt_kappa = jnp.sqrt(prior.kappa)
    if covariance_type == "tied":
        cov = numpyro.sample(
            "covariances", dist.InverseWishart(prior.dof, scale_matrix=prior.scale)
        )
    with numpyro.plate("components", k):
        if covariance_type == "full":
            cov = numpyro.sample(
                "covariances", dist.InverseWishart(prior.dof, scale_matrix=prior.scale)
            )
        if covariance_type in ("full", "tied"):
            tril = jnp.linalg.cholesky(cov) / sqrt_kappa
            means = numpyro.sample("means", dist.MultivariateNormal(prior.mean, scale_tril=tril))
        elif covariance_type == "diag":
            rate = 0.5 * prior.scale * jnp.ones(d)
            cov = numpyro.sample(
                "covariances", dist.InverseGamma(0.5 * prior.dof, rate).to_event(1)
            )
            means = numpyro.sample(
                "means", dist.Normal(prior.mean, jnp.sqrt(cov) / sqrt_kappa).to_event(1)
            )
        else:
            cov = numpyro.sample(
                "covariances", dist.InverseGamma(0.5 * prior.dof, 0.5 * prior.scale)
            )
            means = numpyro.sample(
                "means",
                dist.Normal(prior.mean, jnp.sqrt(cov)[:, None] / sqrt_kappa * jnp.ones(d)).to_event(
                    1
                ),
            )
    return weights, means, cov


def _param_sites(n_components: int, n_features: int, covariance_type: str, dtype):
    k, d = n_components, n_features
    weights = numpyro.param("weights", jnp.full(k, 1.0 / k, dtype), constraint=constraints.simplex)
    means = numpyro.param("means", jnp.zeros((k, d), dtype))
    if covariance_type == "full":
        cov = numpyro.param(
            "covariances",
            jnp.broadcast_to(jnp.eye(d, dtype=dtype), (k, d, d)),
            constraint=constraints.positive_definite,
        )
    elif covariance_type == "tied":
        cov = numpyro.param(
            "covariances", jnp.eye(d, dtype=dtype), constraint=constraints.positive_definite
        )
    elif covariance_type == "diag":
        cov = numpyro.param("covariances", jnp.ones((k, d), dtype), constraint=constraints.positive)
    else:
        cov = numpyro.param("covariances", jnp.ones(k, dtype), constraint=constraints.positive)
    return weights, means, cov


def mixture_model(
    X=None,
    sample_weight=None,
    *,
    n_components: int,
    n_features: int,
    covariance_type: str,
    prior: PriorParams | None,
    n_samples: int = 1,
):
    """Gaussian mixture with a conjugate prior (or free parameters when ``prior`` is None).

    Parameters
    ----------
    X : array of shape (n_samples, n_features), optional
        Observations; ``None`` draws ``n_samples`` rows from the (prior) predictive.
    sample_weight : array of shape (n_samples,), optional
        Multiplies each row's log-likelihood (a ``numpyro.handlers.scale``).
    """
    dtype = jnp.result_type(float)
    if prior is not None:
        weights, means, cov = _prior_sites(prior, n_components, n_features, covariance_type)
    else:
        weights, means, cov = _param_sites(n_components, n_features, covariance_type, dtype)
    mix = dist.MixtureSameFamily(
        dist.Categorical(probs=weights), _component_distribution(means, cov, covariance_type)
    )
    n = n_samples if X is None else X.shape[0]
    with numpyro.plate("data", n):
        if sample_weight is None:
            numpyro.sample("obs", mix, obs=X)
        else:
            with numpyro.handlers.scale(scale=sample_weight):
                numpyro.sample("obs", mix, obs=X)
