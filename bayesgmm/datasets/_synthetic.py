"""A deterministic synthetic mixture for model-selection tests and benchmarks."""

from __future__ import annotations

import numpy as np

# Four five-dimensional Gaussian clusters. Each covariance is diag(sd) @ R(rho) @ diag(sd) with
# R(rho)[i, j] = rho ** |i - j| (an AR(1) correlation): the clusters differ in scale, in shape
# and in orientation, so only unconstrained (``full``) covariances describe them with K = 4;
# neighbouring clusters overlap in their tails.
_MEANS = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [4.5, 2.5, 0.0, -2.0, 1.0],
        [-3.5, 4.0, 2.5, 1.0, -2.0],
        [1.0, -3.5, -3.0, 3.0, 2.5],
    ]
)
_SDS = np.array(
    [
        [1.0, 1.0, 1.0, 1.0, 1.0],
        [0.5, 1.5, 0.8, 1.2, 0.6],
        [2.0, 0.7, 1.3, 0.5, 1.0],
        [0.8, 0.8, 2.0, 1.0, 1.5],
    ]
)
_RHOS = np.array([0.5, -0.4, 0.7, 0.0])
_PROPORTIONS = np.array([0.35, 0.30, 0.20, 0.15])


def four_clusters_parameters() -> dict[str, np.ndarray]:
    """The true parameters of :func:`make_four_clusters`.

    Returns
    -------
    dict
        ``weights`` of shape (4,), ``means`` of shape (4, 5) and ``covariances`` of shape
        (4, 5, 5); new arrays on every call.
    """
    lag = np.abs(np.arange(5)[:, None] - np.arange(5)[None, :])
    covs = np.stack(
        [sd[:, None] * rho**lag * sd[None, :] for sd, rho in zip(_SDS, _RHOS, strict=True)]
    )
    return {"weights": _PROPORTIONS.copy(), "means": _MEANS.copy(), "covariances": covs}


def make_four_clusters(
    n_samples: int = 20000, rng: int = 0, return_labels: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Draw the four-cluster synthetic data set (5 features) used by the selection benchmarks.

    Four Gaussian clusters with weights 0.35, 0.30, 0.20 and 0.15 and different full
    covariances (see :func:`four_clusters_parameters`). The clusters overlap a little but the
    data are clearly four clusters: R's mclust 6.0.0 picks VVV (``full``) with K = 4 among
    VVV/EEE/VVI/VII and K = 1..9 on the default draw.

    Parameters
    ----------
    n_samples : int, default=20000
        Number of rows. Every cluster gets ``floor(weight * n_samples)`` rows and the first
        cluster the remainder, so the cluster sizes are exact, not random.
    rng : int, default=0
        Seed of :func:`numpy.random.default_rng`; the same seed gives the same array.
    return_labels : bool, default=False
        If True, also return the true cluster of every row.

    Returns
    -------
    X : ndarray of shape (n_samples, 5), dtype float64
    labels : ndarray of shape (n_samples,), dtype int64
        Only with ``return_labels=True``; values in 0..3.

    Examples
    --------
    >>> from bayesgmm.datasets import make_four_clusters
    >>> X, y = make_four_clusters(1000, return_labels=True)
    >>> X.shape, sorted(set(y.tolist()))
    ((1000, 5), [0, 1, 2, 3])
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
        raise ValueError(f"n_samples must be an int >= 4, got {n_samples!r}.")
    if n_samples < 4:
        raise ValueError(f"n_samples must be an int >= 4, got {n_samples}.")
    if isinstance(rng, bool) or not isinstance(rng, (int, np.integer)) or rng < 0:
        raise ValueError(f"rng must be a non-negative int seed, got {rng!r}.")
    n = int(n_samples)
    gen = np.random.default_rng(int(rng))
    counts = np.floor(_PROPORTIONS * n).astype(np.int64)
    counts[0] += n - counts.sum()
    labels = gen.permutation(np.repeat(np.arange(4, dtype=np.int64), counts))
    z = gen.standard_normal((n, 5))
    X = np.empty((n, 5))
    covs = four_clusters_parameters()["covariances"]
    for k in range(4):
        rows = labels == k
        chol = np.linalg.cholesky(covs[k])
        X[rows] = _MEANS[k] + z[rows] @ chol.T
    return (X, labels) if return_labels else X
