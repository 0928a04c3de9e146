"""An independent Gibbs sampler for the conjugate Gaussian mixture, in NumPy and SciPy only.

The model is the package's (``docs/design.md``), written out here from the textbook conjugate
updates (Murphy 2012, sec. 4.6.3; Fraley & Raftery 2007):

- weights ~ Dirichlet(alpha, ..., alpha)
- full: Sigma_k ~ InverseWishart(nu, Psi); mu_k | Sigma_k ~ Normal(m0, Sigma_k / kappa)
- diag: s2_kd ~ InverseGamma(nu / 2, psi_d / 2); mu_kd | s2_kd ~ Normal(m0_d, s2_kd / kappa)

The sampler alternates the allocations z_i given the parameters and the parameters given the
allocations (Dirichlet and normal-inverse-Wishart / normal-inverse-gamma posteriors). It starts
from random allocations, so it does not lean on any fit of the package. Nothing here imports
bayesgmm: it is the reference that the tests and ``benchmarks/sbc.py`` compare NUTS with.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.special import logsumexp


def prior_dict(alpha, kappa, mean, dof, scale) -> dict:
    """Hyperparameters as float64 arrays; ``scale`` (D, D) for full, (D,) for diag."""
    return {
        "alpha": float(alpha),
        "kappa": float(kappa),
        "mean": np.atleast_1d(np.asarray(mean, np.float64)),
        "dof": float(dof),
        "scale": np.asarray(scale, np.float64),
    }


def draw_prior(rng: np.random.Generator, prior: dict, k: int, covariance_type: str) -> dict:
    """One draw of (weights, means, covariances) from the prior (SciPy's distributions)."""
    m0, kappa, nu, psi = prior["mean"], prior["kappa"], prior["dof"], prior["scale"]
    d = m0.shape[0]
    weights = rng.dirichlet(np.full(k, prior["alpha"]))
    if covariance_type == "full":
        cov = np.stack(
            [
                np.atleast_2d(stats.invwishart.rvs(df=nu, scale=psi, random_state=rng))
                for _ in range(k)
            ]
        )
        means = np.stack([rng.multivariate_normal(m0, cov[j] / kappa) for j in range(k)]).reshape(
            k, d
        )
    elif covariance_type == "diag":
        cov = 1.0 / rng.gamma(0.5 * nu, 1.0 / (0.5 * psi), size=(k, d))
        means = rng.normal(m0, np.sqrt(cov / kappa))
    else:
        raise ValueError(f"covariance_type must be 'full' or 'diag', got {covariance_type!r}")
    return {"weights": weights, "means": means, "covariances": cov}


def simulate(rng: np.random.Generator, params: dict, n: int, covariance_type: str) -> np.ndarray:
    """``n`` rows from the mixture ``params``: shape (n, D)."""
    w, mu, cov = params["weights"], params["means"], params["covariances"]
    labels = rng.choice(len(w), size=n, p=w)
    d = mu.shape[1]
    X = np.empty((n, d))
    for j in range(len(w)):
        idx = labels == j
        if covariance_type == "full":
            X[idx] = rng.multivariate_normal(mu[j], cov[j], size=int(idx.sum()))
        else:
            X[idx] = rng.normal(mu[j], np.sqrt(cov[j]), size=(int(idx.sum()), d))
    return X


def log_component_densities(X: np.ndarray, params: dict, covariance_type: str) -> np.ndarray:
    """log w_k + log N(x_i | mu_k, Sigma_k): shape (n, K).

    Written with a Cholesky solve (checked against ``scipy.stats.multivariate_normal`` in
    ``tests/test_predictive.py``); SciPy's per-call overhead would dominate the Gibbs loop.
    """
    w, mu, cov = params["weights"], params["means"], params["covariances"]
    d = mu.shape[1]
    if covariance_type != "full":
        cov = cov[..., None] * np.eye(d)
    chol = np.linalg.cholesky(cov)  # (K, D, D)
    diff = X[None, :, :] - mu[:, None, :]  # (K, n, D)
    y = np.linalg.solve(chol, np.swapaxes(diff, 1, 2))  # (K, D, n)
    log_det = np.sum(np.log(np.diagonal(chol, axis1=1, axis2=2)), axis=1)
    with np.errstate(divide="ignore"):
        log_w = np.log(w)
    out = -0.5 * np.sum(y * y, axis=1) - log_det[:, None] - 0.5 * d * np.log(2 * np.pi)
    return (out + log_w[:, None]).T


def inverse_wishart(rng: np.random.Generator, dof: float, scale: np.ndarray) -> np.ndarray:
    """One draw of InverseWishart(dof, scale) by the Bartlett decomposition of its inverse.

    Sigma^{-1} ~ Wishart(dof, scale^{-1}) = L A A^T L^T with L = chol(scale^{-1}), A lower
    triangular, A_ii^2 ~ chi2(dof - i), A_ij ~ N(0, 1) below the diagonal.
    """
    d = scale.shape[0]
    chol = np.linalg.cholesky(np.linalg.inv(scale))
    a = np.tril(rng.standard_normal((d, d)), -1)
    a[np.diag_indices(d)] = np.sqrt(rng.chisquare(dof - np.arange(d)))
    la = chol @ a
    return np.linalg.inv(la @ la.T)


def log_likelihood(X: np.ndarray, params: dict, covariance_type: str) -> float:
    """Total log-likelihood of the rows under the mixture."""
    return float(np.sum(logsumexp(log_component_densities(X, params, covariance_type), axis=1)))


def gibbs_sample(
    X: np.ndarray,
    k: int,
    prior: dict,
    covariance_type: str,
    n_iter: int,
    rng: np.random.Generator,
    burn: int = 0,
    z0: np.ndarray | None = None,
    thin: int = 1,
) -> dict:
    """Run the Gibbs sampler from random allocations (or from the allocations ``z0``).

    ``z0`` (n,) of int in [0, K) starts the chain in a chosen configuration (e.g. each row's
    most probable component under a fit); every ``thin``-th iteration after ``burn`` is kept.

    Returns
    -------
    dict
        ``weights`` (T, K), ``means`` (T, K, D), ``covariances`` (T, K, D, D) for full or
        (T, K, D) for diag, with T = ceil((n_iter - burn) / thin) draws.
    """
    X = np.asarray(X, np.float64)
    n, d = X.shape
    m0, kappa, nu, psi, alpha = (
        prior["mean"],
        prior["kappa"],
        prior["dof"],
        prior["scale"],
        prior["alpha"],
    )
    z = rng.integers(k, size=n) if z0 is None else np.asarray(z0, np.intp).copy()
    keep = len(range(burn, n_iter, thin))
    out_w = np.empty((keep, k))
    out_mu = np.empty((keep, k, d))
    out_cov = np.empty((keep, k, d, d) if covariance_type == "full" else (keep, k, d))
    for it in range(n_iter):
        counts = np.bincount(z, minlength=k)
        weights = rng.dirichlet(alpha + counts)
        means = np.empty((k, d))
        cov = np.empty((k, d, d) if covariance_type == "full" else (k, d))
        for j in range(k):
            xj = X[z == j]
            nj = xj.shape[0]
            xbar = xj.mean(axis=0) if nj else np.zeros(d)
            kappa_n = kappa + nj
            m_n = (kappa * m0 + nj * xbar) / kappa_n
            dev = xbar - m0
            if covariance_type == "full":
                xc = xj - xbar
                psi_n = psi + xc.T @ xc + (kappa * nj / kappa_n) * np.outer(dev, dev)
                cov[j] = inverse_wishart(rng, nu + nj, psi_n)
                means[j] = m_n + np.linalg.cholesky(cov[j] / kappa_n) @ rng.standard_normal(d)
            else:
                ss = np.sum((xj - xbar) ** 2, axis=0)
                shape = 0.5 * (nu + nj)
                rate = 0.5 * (psi + ss + (kappa * nj / kappa_n) * dev**2)
                cov[j] = 1.0 / rng.gamma(shape, 1.0 / rate)
                means[j] = rng.normal(m_n, np.sqrt(cov[j] / kappa_n))
        params = {"weights": weights, "means": means, "covariances": cov}
        lp = log_component_densities(X, params, covariance_type)
        # Allocations by the Gumbel-max trick: argmax(lp + G) ~ Categorical(softmax(lp)).
        z = np.argmax(lp + rng.gumbel(size=lp.shape), axis=1)
        if it >= burn and (it - burn) % thin == 0:
            t = (it - burn) // thin
            out_w[t], out_mu[t], out_cov[t] = weights, means, cov
    return {"weights": out_w, "means": out_mu, "covariances": out_cov}


def gibbs_chains(
    X: np.ndarray,
    k: int,
    prior: dict,
    z0: np.ndarray,
    n_iter: int,
    rng: np.random.Generator,
    burn: int = 0,
    thin: int = 1,
    covariance_type: str = "full",
) -> dict:
    """Many chains of :func:`gibbs_sample`'s sampler advanced together.

    The same conjugate updates as :func:`gibbs_sample`, written over a leading chain axis so
    that NumPy's per-call overhead is paid once per iteration for all chains (the single-chain
    loop is dominated by it on small data).

    Parameters
    ----------
    X : array of shape (n, D)
    k : int
    prior : dict
        From :func:`prior_dict`, with a (D, D) scale for full and a (D,) scale for diag.
    z0 : array of int, shape (C, n)
        Starting allocations of the C chains.
    n_iter, rng, burn, thin
        As in :func:`gibbs_sample`.
    covariance_type : {"full", "diag"}

    Returns
    -------
    dict
        ``weights`` (C, T, K), ``means`` (C, T, K, D), ``covariances`` (C, T, K, D, D) for full
        or (C, T, K, D) for diag.
    """
    X = np.asarray(X, np.float64)
    n, d = X.shape
    if covariance_type not in ("full", "diag"):
        raise ValueError(f"covariance_type must be 'full' or 'diag', got {covariance_type!r}")
    full = covariance_type == "full"
    m0, kappa, nu, psi, alpha = (
        prior["mean"],
        prior["kappa"],
        prior["dof"],
        np.asarray(prior["scale"], np.float64).reshape((d, d) if full else (d,)),
        prior["alpha"],
    )
    z = np.asarray(z0, np.intp).copy()
    c = z.shape[0]
    kept = range(burn, n_iter, thin)
    out_w = np.empty((c, len(kept), k))
    out_mu = np.empty((c, len(kept), k, d))
    out_cov = np.empty((c, len(kept), k, d, d) if full else (c, len(kept), k, d))
    eye_k = np.eye(k)
    tril = np.tril(np.ones((d, d), bool), -1)
    for it in range(n_iter):
        onehot = eye_k[z]  # (C, n, K)
        counts = onehot.sum(1)  # (C, K)
        g = rng.gamma(alpha + counts)
        weights = g / g.sum(1, keepdims=True)
        xbar = (np.swapaxes(onehot, 1, 2) @ X) / np.maximum(counts, 1.0)[..., None]
        diff = X[None, None] - xbar[:, :, None, :]  # (C, K, n, D)
        member = np.swapaxes(onehot, 1, 2)[..., None]  # (C, K, n, 1)
        kappa_n = kappa + counts
        m_n = (kappa * m0 + counts[..., None] * xbar) / kappa_n[..., None]
        dev = xbar - m0
        if full:
            scatter = np.swapaxes(diff * member, -1, -2) @ diff  # (C, K, D, D)
            psi_n = (
                psi
                + scatter
                + (kappa * counts / kappa_n)[..., None, None]
                * (dev[..., :, None] * dev[..., None, :])
            )
            # Inverse Wishart by the Bartlett decomposition of the Wishart of the inverse.
            chol = np.linalg.cholesky(np.linalg.inv(psi_n))
            a = np.zeros((c, k, d, d))
            a[..., tril] = rng.standard_normal((c, k, int(tril.sum())))
            dof_n = (nu + counts)[..., None] - np.arange(d)  # (C, K, D)
            a[..., np.arange(d), np.arange(d)] = np.sqrt(rng.chisquare(dof_n))
            la = chol @ a
            cov = np.linalg.inv(la @ np.swapaxes(la, -1, -2))
            cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))
            chol_cov = np.linalg.cholesky(cov)
            eps = rng.standard_normal((c, k, d, 1))
            means = m_n + (chol_cov @ eps)[..., 0] / np.sqrt(kappa_n)[..., None]
            # log N by a triangular solve.
            r = X[None, None] - means[:, :, None, :]  # (C, K, n, D)
            y = np.linalg.inv(chol_cov) @ np.swapaxes(r, -1, -2)  # (C, K, D, n)
            maha = np.sum(y * y, axis=2)  # (C, K, n)
            log_det = np.sum(np.log(np.diagonal(chol_cov, axis1=-2, axis2=-1)), -1)  # (C, K)
        else:
            # Per feature: s2_kd ~ InverseGamma((nu + n_k) / 2, rate_kd), then
            # mu_kd | s2_kd ~ Normal(m_n, s2_kd / kappa_n), as in gibbs_sample.
            ss = np.sum(diff * diff * member, axis=2)  # (C, K, D)
            rate = 0.5 * (psi + ss + (kappa * counts / kappa_n)[..., None] * dev**2)
            cov = rate / rng.gamma(0.5 * (nu + counts)[..., None], size=(c, k, d))
            means = m_n + np.sqrt(cov / kappa_n[..., None]) * rng.standard_normal((c, k, d))
            r = X[None, None] - means[:, :, None, :]  # (C, K, n, D)
            maha = np.sum(r * r / cov[:, :, None, :], axis=-1)  # (C, K, n)
            log_det = 0.5 * np.sum(np.log(cov), -1)  # (C, K)
        # Allocations given the parameters (Gumbel-max).
        with np.errstate(divide="ignore"):
            lp = -0.5 * maha - (log_det + 0.5 * d * np.log(2 * np.pi))[..., None]
            lp = lp + np.log(weights)[..., None]  # (C, K, n)
        z = np.argmax(np.swapaxes(lp, 1, 2) + rng.gumbel(size=(c, n, k)), axis=2)
        if it >= burn and (it - burn) % thin == 0:
            t = (it - burn) // thin
            out_w[:, t], out_mu[:, t], out_cov[:, t] = weights, means, cov
    return {"weights": out_w, "means": out_mu, "covariances": out_cov}
