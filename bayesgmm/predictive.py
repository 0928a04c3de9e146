"""The Bayesian workflow around a posterior: predictive draws, the log-prior, memberships.

These helpers work on the arrays of a posterior ``DataTree`` (as
:meth:`bayesgmm.Mixture.sample_posterior` returns it) and add ArviZ groups to it:

- :func:`add_posterior_predictive`: a ``posterior_predictive`` group, ``obs`` (chain, draw,
  obs_id, feature), one replicated data set per posterior draw, for ArviZ's predictive checks
  (``arviz_plots.plot_ppc_dist`` and friends);
- :func:`add_log_prior`: a ``log_prior`` group with the log prior density of each draw, one
  variable per parameter (``weights``, ``means``, ``covariances``; their sum is the joint log
  prior of :func:`bayesgmm.priors.log_prior`), as ``arviz_stats.psense`` reads it;
- :func:`sample_prior_predictive`: parameters and data sets drawn from the model's prior, the
  data-based prior defaults taken from the data passed in. The draws (the distributions of
  :func:`bayesgmm.model.mixture_model`'s sample sites, see ``docs/design.md``) are made with
  NumPy from a generator seeded by ``rng_key``: traced through NumPyro, or written with
  ``jax.random.gamma``, they compile for tens of seconds. ``tests/test_predictive.py`` checks
  them against SciPy;
- :func:`posterior_membership`: each row's component probabilities averaged over the posterior
  draws, with an equal-tailed interval.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validation as v
from ._tree import COVARIANCE_DIMS, PARAMETERS, covariance_type_of, posterior_group
from .priors import (
    PriorParams,
)
from .relabel import full_covariance_draws, log_component_densities

if TYPE_CHECKING:
    import xarray

__all__ = [
    "Membership",
    "add_log_prior",
    "add_posterior_predictive",
    "posterior_membership",
    "sample_prior_predictive",
]


# --------------------------------------------------------------------------- inputs


def _flat_draws(ds) -> tuple[dict, tuple[int, int]]:
    """The parameters as float64 arrays with (chain, draw) flattened into one axis."""
    shape = ds["weights"].shape[:2]
    out = {}
    for name in PARAMETERS:
        a = np.asarray(ds[name].values, np.float64)
        out[name] = a.reshape((shape[0] * shape[1],) + a.shape[2:])
    return out, shape


def _as_datatree_group(post, name: str, data: dict, dims: dict, coords: dict):
    import xarray as xr

    ds = xr.Dataset(
        {key: (dims[key], value) for key, value in data.items()},
        coords={c: coords[c] for c in {d for key in data for d in dims[key]} if c in coords},
    )
    post[name] = xr.DataTree(dataset=ds)
    return post


# --------------------------------------------------------------------------- predictive draws


def numpy_rng(rng_key, stream: int = 0) -> np.random.Generator:
    """A NumPy generator determined by ``rng_key`` (an int seed or a JAX key) and ``stream``.

    The predictive draws are made with NumPy on the host: ``jax.random.gamma`` (behind the
    Dirichlet, inverse-gamma and Wishart draws) compiles for about ten seconds, far longer than
    the draws take.
    """
    if isinstance(rng_key, (int, np.integer)) and not isinstance(rng_key, bool):
        if int(rng_key) < 0:
            raise ValueError(f"rng_key must be a non-negative int seed, got {rng_key}.")
        return np.random.default_rng([int(rng_key), int(stream)])
    if isinstance(rng_key, jax.Array):
        data = (
            jax.random.key_data(rng_key)
            if jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key)
            else rng_key
        )
        words = np.asarray(data, np.uint32).ravel().tolist()
        return np.random.default_rng([*words, int(stream)])
    raise ValueError(
        f"rng_key must be an int seed or a jax.random key, got {type(rng_key).__name__}."
    )


def predictive_draws(
    weights, means, covariances, covariance_type: str, n_rows: int, rng
) -> np.ndarray:
    """``n_rows`` rows from the mixture of each parameter draw (NumPy).

    Parameters
    ----------
    weights : array of shape (S, K)
    means : array of shape (S, K, D)
    covariances : array of shape (S, ...)
        The trailing shape of ``covariance_type`` (full (K, D, D), tied (D, D), diag (K, D),
        spherical (K,)).
    covariance_type : str
    n_rows : int
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of shape (S, n_rows, D)
        Row ``i`` of draw ``s``: a component label drawn from ``weights[s]``, then a normal
        row from that component.
    """
    w = np.asarray(weights, np.float64)
    mu = np.asarray(means, np.float64)
    s, k, d = mu.shape
    cov = full_covariance_draws(np.asarray(covariances, np.float64), covariance_type, k, d)
    chol = np.linalg.cholesky(cov)  # (S, K, D, D)
    cdf = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
    u = rng.random((s, n_rows))
    labels = np.minimum((u[:, :, None] >= cdf[:, None, :]).sum(axis=-1), k - 1)  # (S, n)
    z = rng.standard_normal((s, n_rows, d))
    idx = np.arange(s)[:, None]
    return mu[idx, labels] + np.einsum("snde,sne->snd", chol[idx, labels], z)


def add_posterior_predictive(post, rng_key=0, stream: int = 0):
    """Add a ``posterior_predictive`` group: one data set like the observed one per draw.

    Parameters
    ----------
    post : xarray.DataTree
        From :meth:`bayesgmm.Mixture.sample_posterior` (with ``observed_data``).
    rng_key : int or jax.random key, default=0
    stream : int, default=0
        Selects an independent stream of draws for the same ``rng_key``.

    Returns
    -------
    xarray.DataTree
        ``post`` itself, with ``posterior_predictive.obs`` of dims (chain, draw, obs_id,
        feature): row ``i`` of draw ``s`` is drawn from the mixture with draw ``s``'s
        parameters (a fresh component label per row).
    """
    ds = posterior_group(post)
    ct = covariance_type_of(ds)
    try:
        observed = post["observed_data"]["obs"]
    except (KeyError, TypeError):
        raise ValueError(
            "post needs an 'observed_data' group with 'obs' to know how many rows to replicate."
        ) from None
    n = observed.shape[0]
    draws, shape = _flat_draws(ds)
    rng = numpy_rng(rng_key, stream)
    reps = predictive_draws(draws["weights"], draws["means"], draws["covariances"], ct, n, rng)
    reps = reps.reshape(shape + reps.shape[1:])
    coords = {
        "chain": ds["chain"].values,
        "draw": ds["draw"].values,
        "obs_id": observed["obs_id"].values if "obs_id" in observed.coords else np.arange(n),
        "feature": ds["feature"].values,
    }
    dims = {"obs": ("chain", "draw", "obs_id", "feature")}
    return _as_datatree_group(post, "posterior_predictive", {"obs": reps}, dims, coords)


# --------------------------------------------------------------------------- log prior


def _log_inverse_gamma_np(x, shape, rate):
    from scipy.special import gammaln  # imported on use: fits need no SciPy (0.3 s to import)

    return shape * np.log(rate) - gammaln(shape) - (shape + 1.0) * np.log(x) - rate / x


def log_prior_draws(draws: dict, prior: PriorParams, covariance_type: str) -> dict:
    """The log prior density of each draw, split by parameter (NumPy, float64).

    Computed with NumPy rather than a compiled program: it runs once per ``sample_posterior``
    and a compilation would cost more than the arithmetic.

    Parameters
    ----------
    draws : dict
        ``weights`` (S, K), ``means`` (S, K, D), ``covariances`` (S, ...).
    prior : PriorParams
        The resolved hyperparameters (e.g. ``Mixture.resolve_prior(X)``).
    covariance_type : str

    Returns
    -------
    dict of ndarray of shape (S,)
        ``weights``: log Dirichlet; ``covariances``: log inverse-Wishart (full, tied) or
        inverse-gamma (diag, spherical) density; ``means``: log density of the means given the
        covariances. They add up to :func:`bayesgmm.priors.log_prior`.
    """
    from scipy.special import gammaln, multigammaln, xlogy  # on use, as above

    ct = covariance_type
    w = np.asarray(draws["weights"], np.float64)
    mu = np.asarray(draws["means"], np.float64)
    cov = np.asarray(draws["covariances"], np.float64)
    s, k, d = mu.shape
    alpha, kappa = float(prior.alpha), float(prior.kappa)
    nu = float(prior.dof)
    m0 = np.asarray(prior.mean, np.float64)
    psi = np.asarray(prior.scale, np.float64)
    lw = gammaln(k * alpha) - k * gammaln(alpha) + np.sum(xlogy(alpha - 1.0, w), -1)
    if ct in ("full", "tied"):
        chol = np.linalg.cholesky(cov)  # (S, K, D, D) or (S, D, D)
        log_det = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), -1)
        # tr(Psi Sigma^-1) = ||L^-1 C||_F^2 with C C^T = Psi
        sol = np.linalg.solve(chol, np.broadcast_to(np.linalg.cholesky(psi), chol.shape))
        trace = np.sum(np.square(sol), (-2, -1))
        _, log_det_psi = np.linalg.slogdet(psi)
        norm = 0.5 * nu * log_det_psi - 0.5 * nu * d * np.log(2.0) - multigammaln(0.5 * nu, d)
        lc = norm - 0.5 * (nu + d + 1.0) * log_det - 0.5 * trace
        if ct == "full":
            lc = lc.sum(-1)
        else:
            chol, log_det = chol[:, None], log_det[:, None]
        diff = np.linalg.solve(np.broadcast_to(chol, (s, k, d, d)), (mu - m0)[..., None])[
            ..., 0
        ]  # L^-1 (mu - m0)
        maha = kappa * np.sum(np.square(diff), -1)
        lm = -0.5 * (d * np.log(2.0 * np.pi) - d * np.log(kappa) + log_det + maha)
        lm = np.broadcast_to(lm, (s, k)).sum(-1)
    else:
        lc = _log_inverse_gamma_np(cov, 0.5 * nu, 0.5 * psi)
        var = cov if ct == "diag" else np.broadcast_to(cov[..., None], (s, k, d))
        lc = lc.reshape(s, -1).sum(-1)
        sq = np.square(mu - m0) * kappa / var
        lm = -0.5 * np.sum(np.log(2.0 * np.pi) - np.log(kappa) + np.log(var) + sq, (-2, -1))
    return {"weights": lw, "means": lm, "covariances": lc}


def add_log_prior(post, prior: PriorParams):
    """Add a ``log_prior`` group (``weights``, ``means``, ``covariances``: (chain, draw)).

    ``arviz_stats.psense(post, group="prior")`` power-scales their sum (the joint prior);
    ``group_var_names=["means"]`` scales one part.
    """
    ds = posterior_group(post)
    ct = covariance_type_of(ds)
    draws, shape = _flat_draws(ds)
    parts = log_prior_draws(draws, prior, ct)
    data = {name: a.reshape(shape) for name, a in parts.items()}
    dims = dict.fromkeys(data, ("chain", "draw"))
    coords = {"chain": ds["chain"].values, "draw": ds["draw"].values}
    return _as_datatree_group(post, "log_prior", data, dims, coords)


# --------------------------------------------------------------------------- prior predictive


def _inverse_wishart(rng: np.random.Generator, dof: float, scale: np.ndarray, shape) -> np.ndarray:
    """Draws of InverseWishart(dof, scale), batch ``shape``, by the Bartlett decomposition.

    cov^{-1} ~ Wishart(dof, scale^{-1}) = L A A^T L^T with L = chol(scale^{-1}), A lower
    triangular with A_ii^2 ~ chi2(dof - i) and standard normal entries below the diagonal.
    """
    d = scale.shape[-1]
    a = np.tril(rng.standard_normal(shape + (d, d)), -1)
    a[..., np.arange(d), np.arange(d)] = np.sqrt(rng.chisquare(dof - np.arange(d), shape + (d,)))
    la = np.linalg.cholesky(np.linalg.inv(scale)) @ a
    inv_la = np.linalg.inv(la)  # cov = (L A)^{-T} (L A)^{-1}
    return np.swapaxes(inv_la, -1, -2) @ inv_la


def prior_draws(
    prior: PriorParams, n_components: int, covariance_type: str, num_samples: int, rng
) -> dict:
    """Parameters drawn from the prior: the distributions of ``mixture_model``'s sample sites.

    Returns ``weights`` (S, K), ``means`` (S, K, D) and ``covariances`` (S, ...), NumPy.
    """
    k, s = n_components, num_samples
    m0 = np.asarray(prior.mean, np.float64)
    d = m0.shape[0]
    alpha, kappa, dof = float(prior.alpha), float(prior.kappa), float(prior.dof)
    scale = np.asarray(prior.scale, np.float64)
    weights = rng.dirichlet(np.full(k, alpha), size=s)
    if covariance_type in ("full", "tied"):
        cov = _inverse_wishart(rng, dof, scale, (s, k) if covariance_type == "full" else (s,))
    else:
        shape = (s, k, d) if covariance_type == "diag" else (s, k)
        cov = 0.5 * scale / rng.gamma(0.5 * dof, 1.0, size=shape)
    chol = np.linalg.cholesky(full_covariance_draws(cov, covariance_type, k, d))
    z = rng.standard_normal((s, k, d))
    means = m0 + np.einsum("skde,ske->skd", chol, z) / np.sqrt(kappa)
    return {"weights": weights, "means": means, "covariances": cov}


def finish_posterior(mixture, post, X, sample_weight, rng_key, posterior_predictive: bool):
    """Add the ``log_prior`` group (and, if asked, ``posterior_predictive``) to a posterior."""
    if "log_prior" not in post.children:
        add_log_prior(post, mixture.resolve_prior(X, sample_weight))
    if posterior_predictive:
        add_posterior_predictive(post, rng_key, stream=1)  # a stream of its own
    return post


def sample_prior_predictive(
    mixture, X, num_samples: int = 500, rng_key=0, sample_weight=None
) -> xarray.DataTree:
    """Draw parameters from the prior, and from each a data set of ``len(X)`` rows.

    Bound as ``Mixture.sample_prior_predictive(X, num_samples=500, rng_key=0)``; data-based
    prior defaults come from ``X`` itself (no earlier fit is needed).

    Parameters
    ----------
    mixture : Mixture
        A mixture with a prior (``"default"`` or a :class:`bayesgmm.Prior`).
    X : array of shape (n_samples, n_features) or (n_samples,)
        The data whose size and (for data-based defaults) moments the prior uses.
    num_samples : int, default=500
        Prior draws.
    rng_key : int or jax.random key, default=0
    sample_weight : array of shape (n_samples,), optional
        Row weights of the data moments behind the default prior.

    Returns
    -------
    xarray.DataTree
        ``prior``: ``weights``, ``means``, ``covariances`` with the dims of the posterior
        group (a chain of length 1, ``num_samples`` draws); ``prior_predictive``: ``obs``
        (chain, draw, obs_id, feature); ``observed_data``: ``obs`` (``X``).
    """
    if mixture.prior is None:
        raise ValueError(
            "sample_prior_predictive needs a proper prior: the mixture was declared with "
            "prior=None (maximum likelihood). Use prior='default' or a bayesgmm.Prior."
        )
    Xa = v.check_X(X)
    n, d = Xa.shape
    w = v.check_sample_weight(sample_weight, n)
    num_samples = v.check_positive_int(num_samples, "num_samples")
    prior_np = mixture.resolve_prior(Xa, w)
    k, ct = mixture.n_components, mixture.covariance_type
    rng = numpy_rng(rng_key)
    params = prior_draws(prior_np, k, ct, num_samples, rng)
    rows = predictive_draws(params["weights"], params["means"], params["covariances"], ct, n, rng)
    out = {name: a[None] for name, a in {**params, "obs": rows}.items()}  # chain = 1
    from arviz_base import from_dict

    dims = {
        "weights": ["component"],
        "means": ["component", "feature"],
        "covariances": list(COVARIANCE_DIMS[ct]),
        "obs": ["obs_id", "feature"],
    }
    coords = {
        "component": np.arange(k),
        "feature": np.arange(d),
        "feature_": np.arange(d),
        "obs_id": np.arange(n),
    }
    data = {
        "prior": {name: out[name] for name in PARAMETERS},
        "prior_predictive": {"obs": out["obs"]},
        "observed_data": {"obs": Xa},
    }
    attrs = {"/": {"n_components": k, "covariance_type": ct}}
    return from_dict(data, dims=dims, coords=coords, attrs=attrs)


# --------------------------------------------------------------------------- memberships


class Membership(NamedTuple):
    """Posterior membership probabilities of each row (see :func:`posterior_membership`).

    Fields are reachable as attributes or by name (``m.mean`` or ``m["mean"]``).
    """

    mean: np.ndarray  # (n, K): posterior mean of p(z_i = k | x_i, theta)
    lower: np.ndarray  # (n, K): lower end of the equal-tailed interval
    upper: np.ndarray  # (n, K): upper end
    prob: float  # the interval's probability

    def __getitem__(self, key):
        if isinstance(key, str):
            return getattr(self, key)
        return tuple.__getitem__(self, key)


def posterior_membership(post, X, *, prob: float = 0.94) -> Membership:
    """Each row's component-membership probabilities, averaged over the posterior.

    For every posterior draw ``s`` the membership of row ``i`` is
    ``p(z_i = k | x_i, theta_s) = w_k N(x_i | mu_k, Sigma_k) / sum_j w_j N(x_i | mu_j, Sigma_j)``;
    the draws are the relabelled ones of ``post.posterior``, so component ``k`` is the same
    component in every draw.

    Parameters
    ----------
    post : xarray.DataTree
        From :meth:`bayesgmm.Mixture.sample_posterior`.
    X : array of shape (n_samples, n_features) or (n_samples,)
        Rows to classify (the data the posterior was fitted to, or new rows).
    prob : float, default=0.94
        Probability of the equal-tailed interval (ArviZ's default).

    Returns
    -------
    Membership
        ``mean``, ``lower``, ``upper``: arrays of shape (n_samples, n_components), and ``prob``.
        Each row of ``mean`` sums to 1.
    """
    prob = float(prob)
    if not 0.0 < prob < 1.0:
        raise ValueError(f"prob must lie in (0, 1), got {prob}.")
    ds = posterior_group(post)
    ct = covariance_type_of(ds)
    draws, _ = _flat_draws(ds)
    s, k, d = draws["means"].shape
    Xa = v.check_X(X, n_features=d)
    n = Xa.shape[0]
    # Rows in blocks so that the (S, block, K) responsibilities stay around 8 M numbers.
    block = max(1, min(n, 8_000_000 // max(1, s * k * d)))
    means, lowers, uppers = [], [], []
    q = [(1.0 - prob) / 2.0, (1.0 + prob) / 2.0]
    for start in range(0, n, block):
        lp = log_component_densities(Xa[start : start + block], *(draws[p] for p in PARAMETERS), ct)
        lp = lp - np.max(lp, axis=-1, keepdims=True)
        r = np.exp(lp)
        r /= r.sum(axis=-1, keepdims=True)
        means.append(r.mean(axis=0))
        lo, hi = np.quantile(r, q, axis=0)
        lowers.append(lo)
        uppers.append(hi)
    return Membership(np.concatenate(means), np.concatenate(lowers), np.concatenate(uppers), prob)
