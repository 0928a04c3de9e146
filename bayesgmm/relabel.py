"""Label switching: Stephens' (2000) relabelling on allocation probabilities, and its relatives.

A mixture's likelihood is unchanged when its components are permuted, so the draws of a sampler
that mixes well carry arbitrary labels. Stephens (2000, JRSS B 62:795) relabels draws by the
allocation probabilities ``p_s[i, k] = P(row i in component k | draw s)``: find permutations
``sigma_s`` and a matrix ``Q`` (n, K) that minimise the summed Kullback-Leibler divergence

    sum_s sum_i KL(p_s[i, sigma_s] || Q[i])

by alternating ``Q = mean_s p_s[:, sigma_s]`` and, per draw, the permutation that minimises its
divergence from ``Q`` (a linear assignment problem). Unlike matching parameters to a reference
point, it uses what the components *do* to the data, so it holds when components overlap.

The same divergence measures how far a draw is from a configuration of the components (a mode of
the posterior, represented by the allocation probabilities of an EM optimum): the minimum over
permutations, averaged over rows. :func:`configuration_distance` gives it for many draws and
configurations at once.

Everything here is NumPy (and ``scipy.optimize.linear_sum_assignment`` beyond six components),
vectorised over draws.
"""

from __future__ import annotations

import itertools

import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "allocation_probabilities",
    "apply_permutation",
    "configuration_distance",
    "log_component_densities",
    "relabel_permutations",
    "stephens_relabel",
]

# Components up to which every permutation is enumerated (6! = 720); above, per-draw assignment.
ENUMERATE_MAX_K = 6
# Rows of the data used for allocation probabilities: enough to tell configurations apart, and
# memory O(draws x rows x K) stays small for large data.
MAX_ROWS = 256
_TINY = 1e-300


def full_covariance_draws(cov: np.ndarray, covariance_type: str, k: int, d: int) -> np.ndarray:
    """(S, K, D, D) covariance matrices from draws (S, ...) of any covariance type."""
    s = cov.shape[0]
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return np.broadcast_to(cov[:, None], (s, k, d, d))
    if covariance_type == "diag":
        return cov[..., None] * np.eye(d)
    return cov[..., None, None] * np.eye(d)


def log_component_densities(
    X: ArrayLike, weights: ArrayLike, means: ArrayLike, covariances: ArrayLike, covariance_type: str
) -> np.ndarray:
    """``log w_k + log N(x_i | mu_k, Sigma_k)`` for draws of the parameters.

    Parameters
    ----------
    X : array of shape (n, D)
    weights : array of shape (S, K)
    means : array of shape (S, K, D)
    covariances : array of shape (S, ...), the covariance type's per-draw shape
    covariance_type : str

    Returns
    -------
    ndarray of shape (S, n, K)
    """
    X = np.asarray(X, np.float64)
    w = np.asarray(weights, np.float64)
    mu = np.asarray(means, np.float64)
    s, k, d = mu.shape
    cov = full_covariance_draws(np.asarray(covariances, np.float64), covariance_type, k, d)
    chol = np.linalg.cholesky(cov)  # (S, K, D, D)
    # L^-1 (x - mu) = L^-1 x - L^-1 mu: one small inverse per component, then products.
    inv = np.linalg.inv(chol)  # (S, K, D, D)
    # One 2-D product for every draw and component: (n, D) x (D, S*K*D) -> (n, S, K, D).
    sol = (X @ inv.reshape(-1, d).T).reshape(X.shape[0], s, k, d)
    sol -= np.einsum("skde,ske->skd", inv, mu)
    maha = np.moveaxis(np.square(sol).sum(-1), 0, -1)  # (S, K, n)
    log_det = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)  # (S, K)
    log_n = -0.5 * (maha + (d * np.log(2 * np.pi) + log_det)[..., None])
    return np.swapaxes(log_n, 1, 2) + np.log(np.maximum(w, _TINY))[:, None, :]


def allocation_probabilities(log_dens: np.ndarray) -> np.ndarray:
    """Normalise ``log_component_densities`` over components: (S, n, K) probabilities."""
    m = log_dens.max(-1, keepdims=True)
    p = np.exp(log_dens - m)
    return p / p.sum(-1, keepdims=True)


def row_subset(n: int) -> np.ndarray:
    """Indices of at most ``MAX_ROWS`` rows, evenly spread (deterministic)."""
    if n <= MAX_ROWS:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, MAX_ROWS).round().astype(np.intp))


def _best_permutations(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per draw, the permutation minimising ``sum_j cost[s, perm[j], j]``; and that minimum.

    ``cost`` has shape (S, K, K): ``cost[s, a, j]`` for putting draw component ``a`` at label
    ``j``. Returns ``perm`` (S, K) with ``perm[s, j] = a`` and the minimal costs (S,).
    """
    s, k, _ = cost.shape
    if k <= ENUMERATE_MAX_K:
        perms = np.array(list(itertools.permutations(range(k))), dtype=np.intp)  # (P, K)
        # total[s, p] = sum_j cost[s, perms[p, j], j]
        total = cost[:, perms, np.arange(k)].sum(-1)
        best = np.argmin(total, axis=1)
        return perms[best], total[np.arange(s), best]
    from scipy.optimize import linear_sum_assignment

    perm = np.empty((s, k), dtype=np.intp)
    value = np.empty(s)
    for i in range(s):
        rows, cols = linear_sum_assignment(cost[i])
        perm[i, cols] = rows
        value[i] = cost[i, rows, cols].sum()
    return perm, value


def _kl_costs(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """``cost[s, a, j] = sum_i KL term of p_s[i, a] against Q[i, j]``, shape (S, K, K)."""
    entropy = np.sum(P * np.log(np.maximum(P, _TINY)), axis=1)  # (S, K)
    cross = np.einsum("sia,ij->saj", P, np.log(np.maximum(Q, _TINY)))
    return entropy[:, :, None] - cross


def stephens_relabel(
    P: ArrayLike, Q0: ArrayLike | None = None, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Stephens' (2000) KL relabelling.

    Parameters
    ----------
    P : array of shape (S, n, K)
        Allocation probabilities of each draw.
    Q0 : array of shape (n, K), optional
        Starting classification matrix (e.g. the allocation probabilities of a reference fit, so
        that labels follow its component order); the first draw's by default.
    max_iter : int
        Alternations at most; it stops when no permutation changes.

    Returns
    -------
    perm : ndarray of int, shape (S, K)
        ``perm[s, j]`` is the draw's component that becomes label ``j``.
    Q : ndarray of shape (n, K)
        The final classification matrix, ``mean_s P[s][:, perm[s]]``.
    """
    P = np.asarray(P, np.float64)
    s, n, k = P.shape
    Q = np.asarray(P[0] if Q0 is None else Q0, np.float64)
    perm = np.tile(np.arange(k), (s, 1))
    for it in range(max_iter):
        new, _ = _best_permutations(_kl_costs(P, Q))
        if it > 0 and np.array_equal(new, perm):
            break
        perm = new
        Q = np.take_along_axis(P, perm[:, None, :], axis=2).mean(0)
    return perm, Q


def configuration_distance(P: ArrayLike, Q: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """How far each draw is from each configuration, up to a permutation of its labels.

    Parameters
    ----------
    P : array of shape (S, n, K)
        Allocation probabilities of the draws.
    Q : array of shape (M, n, K)
        Allocation probabilities of M configurations (modes).

    Returns
    -------
    dist : ndarray of shape (S, M)
        ``min_sigma mean_i KL(p_s[i, sigma] || Q_m[i])`` (nats per row).
    perm : ndarray of int, shape (S, M, K)
        The minimising permutations (``perm[s, m, j]`` becomes label ``j`` of configuration m).
    """
    P = np.asarray(P, np.float64)
    Q = np.asarray(Q, np.float64)
    s, n, k = P.shape
    dist = np.empty((s, Q.shape[0]))
    perm = np.empty((s, Q.shape[0], k), dtype=np.intp)
    for m in range(Q.shape[0]):
        perm[:, m], value = _best_permutations(_kl_costs(P, Q[m]))
        dist[:, m] = value / n
    return dist, perm


def apply_permutation(samples: dict, perm: np.ndarray, covariance_type: str) -> dict:
    """``samples`` with axis 1 (components) of each draw reordered; samples are (S, K, ...)."""
    out = {}
    for name, arr in samples.items():
        if name == "covariances" and covariance_type == "tied":
            out[name] = arr
            continue
        idx = perm.reshape(perm.shape + (1,) * (arr.ndim - 2))
        out[name] = np.take_along_axis(arr, idx, axis=1)
    return out


def relabel_permutations(
    weights: ArrayLike,
    means: ArrayLike,
    reference: dict,
    covariance_type: str,
    n_effective: float,
) -> np.ndarray:
    """The permutation that aligns each draw's parameters with a reference point.

    Used to match a point estimate (an EM fit) to a posterior's labels; the posterior's own
    draws are relabelled by :func:`stephens_relabel`.

    Parameters
    ----------
    weights : array of shape (n_draws, n_components)
    means : array of shape (n_draws, n_components, n_features)
    reference : dict
        ``weights``, ``means``, ``covariances`` (covariances in the shape of ``covariance_type``).
    covariance_type : str
    n_effective : float
        Total sample weight of the data: scales the distances to posterior standard deviations.

    Returns
    -------
    perm : ndarray of int, shape (n_draws, n_components)
        ``weights[s, perm[s]]`` is the draw in the reference order.

    Notes
    -----
    The cost of matching draw component ``j`` to reference component ``k`` is the Mahalanobis
    distance of the means under ``cov_k / n_k`` plus ``(w_j - w_k)^2 / (w_k (1 - w_k) / n)``,
    with ``n_k = n w_k``. Where the identity is optimal it is kept.
    """
    w = np.asarray(weights, np.float64)
    mu = np.asarray(means, np.float64)
    n_draws, k = w.shape
    d = mu.shape[-1]
    if k == 1:
        return np.zeros((n_draws, 1), dtype=np.intp)
    w_ref = np.asarray(reference["weights"], np.float64)
    mu_ref = np.asarray(reference["means"], np.float64).reshape(k, d)
    cov_ref = full_covariance_draws(
        np.asarray(reference["covariances"], np.float64)[None], covariance_type, k, d
    )[0]
    n_k = np.maximum(w_ref * n_effective, 1.0)
    prec = np.linalg.inv(cov_ref) * n_k[:, None, None]  # (K, D, D)
    diff = mu[:, :, None, :] - mu_ref[None, None, :, :]  # (S, J, K, D)
    cost = np.einsum("sjkd,kde,sjke->sjk", diff, prec, diff)
    w_var = np.maximum(w_ref * (1.0 - w_ref), 1e-12) / n_effective
    cost += np.square(w[:, :, None] - w_ref[None, None, :]) / w_var[None, None, :]
    perm, value = _best_permutations(cost)
    identity = np.arange(k)
    same = np.isclose(cost[:, identity, identity].sum(-1), value, rtol=1e-12, atol=0.0)
    perm[same] = identity
    return perm
