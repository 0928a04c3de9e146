"""Shared fixtures and independent reference helpers for the bayesgmm test suite.

Everything here is written against NumPy / SciPy / scikit-learn only; nothing calls into the
package's own algebra, so the tests compare bayesgmm with an independent reference.
"""

from __future__ import annotations

import os
import tempfile
import types
import warnings

# A persistent XLA compilation cache, set before JAX is imported: the pytest-xdist workers, the
# notebook kernels and the command-line subprocesses share compiled programs instead of each
# compiling the same EM and NUTS programs again. It only changes speed, never results.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "bayesgmm-test-jax-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
# bayesgmm's compiled programs (loaded whole by later processes, see bayesgmm._compile) in a
# folder of the suite's own, not in the user's ~/.cache.
os.environ.setdefault(
    "BAYESGMM_CACHE_DIR", os.path.join(tempfile.gettempdir(), "bayesgmm-test-cache")
)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~10 s (still run by default)")
    config.addinivalue_line(
        "markers",
        "long: repeats covered ground at length (runs with BAYESGMM_LONG_TESTS=1)",
    )


def pytest_collection_modifyitems(config, items):
    # The default suite must stay within about ten minutes on two cores; the long repeats of
    # covered ground (every interrupt moment, the longest notebook run again) run on request.
    if os.environ.get("BAYESGMM_LONG_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="long; set BAYESGMM_LONG_TESTS=1 to run it")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


# --------------------------------------------------------------------------- data


def _load_faithful() -> np.ndarray:
    # The copy shipped inside the package: the tests read nothing outside the repository.
    from bayesgmm.datasets import load_faithful

    X = np.array(load_faithful(), dtype=np.float64)
    assert X.shape == (272, 2)
    return X


@pytest.fixture(scope="session")
def faithful() -> np.ndarray:
    """Old Faithful, (272, 2) float64: eruptions (minutes), waiting (minutes)."""
    X = _load_faithful()
    X.setflags(write=False)
    return X


@pytest.fixture(scope="session")
def blobs3d() -> np.ndarray:
    """A small synthetic 3-D set: 150 rows from three well-separated, correlated clusters."""
    rng = np.random.default_rng(20240611)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 1.0, -2.0], [-3.0, 4.0, 2.0]])
    parts = []
    for k, (c, n) in enumerate(zip(centres, (60, 50, 40), strict=True)):
        A = rng.normal(size=(3, 3)) * 0.5 + np.eye(3) * (0.6 + 0.2 * k)
        parts.append(c + rng.normal(size=(n, 3)) @ A.T)
    X = np.concatenate(parts)
    X.setflags(write=False)
    return X


# --------------------------------------------------------------------------- dtype modes


def _set_x64(value: bool) -> None:
    jax.config.update("jax_enable_x64", bool(value))


@pytest.fixture
def x64():
    """Run the test with float64 enabled in JAX; restores the previous setting afterwards."""
    previous = bool(jax.config.jax_enable_x64)
    _set_x64(True)
    try:
        yield np.float64
    finally:
        _set_x64(previous)


@pytest.fixture
def f32():
    """Run the test in JAX's default float32 mode; restores the previous setting afterwards."""
    previous = bool(jax.config.jax_enable_x64)
    _set_x64(False)
    try:
        yield np.float32
    finally:
        _set_x64(previous)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Parametrize a test over JAX's float32 (default) and float64 modes; yields the NumPy dtype."""
    previous = bool(jax.config.jax_enable_x64)
    _set_x64(request.param == "float64")
    try:
        yield np.dtype(request.param).type
    finally:
        _set_x64(previous)


# --------------------------------------------------------------------------- a shared fit

# fit_em compiles per (shape, covariance type, prior or not, max_iter, n_init, init); tests that
# only need "some fitted mixture" share this configuration so the suite compiles it once per dtype.
FAITHFUL_K3 = dict(init="random_from_data", rng_key=1, max_iter=150)


@pytest.fixture
def fit_faithful_k3(faithful):
    """fit(covariance_type, prior=None, **overrides) -> FitResult on faithful with K=3."""
    import bayesgmm as bg

    def fit(covariance_type, prior=None, **overrides):
        mix = bg.Mixture(3, covariance_type=covariance_type, prior=prior)
        return mix.fit_em(faithful, **(FAITHFUL_K3 | overrides))

    return fit


# --------------------------------------------------------------------------- references


def init_params(X, n_components, covariance_type, seed=0):
    """Deterministic, well-conditioned starting parameters.

    Returns ``(params, sklearn_kwargs)``: ``params`` in scikit-learn's covariance shapes for
    ``Mixture.fit_em(init_params=...)``; ``sklearn_kwargs`` the matching ``weights_init``,
    ``means_init`` and ``precisions_init`` for ``sklearn.mixture.GaussianMixture``.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    n, D = X.shape
    K = n_components
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(K, 5.0))
    means = X[rng.choice(n, size=K, replace=False)] + 0.1 * X.std(0) * rng.normal(size=(K, D))
    base = np.atleast_2d(np.cov(X.T))
    factors = 0.3 + 0.4 * rng.random(K)
    if covariance_type == "full":
        covariances = np.stack([base * f for f in factors])
        precisions = np.linalg.inv(covariances)
    elif covariance_type == "tied":
        covariances = base * 0.5
        precisions = np.linalg.inv(covariances)
    elif covariance_type == "diag":
        covariances = np.diag(base)[None, :] * factors[:, None]
        precisions = 1.0 / covariances
    elif covariance_type == "spherical":
        covariances = np.trace(base) / D * factors
        precisions = 1.0 / covariances
    else:
        raise AssertionError(covariance_type)
    params = {"weights": weights, "means": means, "covariances": covariances}
    sk = {"weights_init": weights, "means_init": means, "precisions_init": precisions}
    return params, sk


def full_covariances(covariances, covariance_type, n_components, n_features):
    """Expand any covariance layout to a (K, D, D) stack of full matrices."""
    c = np.asarray(covariances, dtype=np.float64)
    K, D = n_components, n_features
    if covariance_type == "full":
        return c.reshape(K, D, D)
    if covariance_type == "tied":
        return np.broadcast_to(c.reshape(D, D), (K, D, D)).copy()
    if covariance_type == "diag":
        return np.stack([np.diag(v) for v in c.reshape(K, D)])
    if covariance_type == "spherical":
        return c.reshape(K)[:, None, None] * np.eye(D)[None]
    raise AssertionError(covariance_type)


def component_log_densities(X, weights, means, covariances, covariance_type):
    """log w_k + log N(x_i | mu_k, Sigma_k) by scipy.stats, shape (n, K), float64."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    w = np.asarray(weights, dtype=np.float64)
    mu = np.asarray(means, dtype=np.float64).reshape(len(w), X.shape[1])
    S = full_covariances(covariances, covariance_type, len(w), X.shape[1])
    return np.stack(
        [
            np.log(w[k]) + stats.multivariate_normal(mu[k], S[k]).logpdf(X).reshape(-1)
            for k in range(len(w))
        ],
        axis=1,
    )


def log_likelihood(X, weights, means, covariances, covariance_type):
    """Total mixture log-likelihood of X by scipy.stats."""
    return float(
        logsumexp(
            component_log_densities(X, weights, means, covariances, covariance_type), axis=1
        ).sum()
    )


def n_parameters(n_components, n_features, covariance_type):
    """scikit-learn's free-parameter count (GaussianMixture._n_parameters)."""
    K, D = n_components, n_features
    cov = {"full": K * D * (D + 1) / 2, "tied": D * (D + 1) / 2, "diag": K * D, "spherical": K}[
        covariance_type
    ]
    return int(cov + K * D + K - 1)


def sklearn_model(weights, means, covariances, covariance_type):
    """A scikit-learn GaussianMixture set to the given parameters (no fitting)."""
    from sklearn.mixture import GaussianMixture
    from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

    w = np.asarray(weights, dtype=np.float64)
    mu = np.asarray(means, dtype=np.float64)
    c = np.asarray(covariances, dtype=np.float64)
    gm = GaussianMixture(len(w), covariance_type=covariance_type)
    gm.weights_, gm.means_, gm.covariances_ = w, mu, c
    gm.precisions_cholesky_ = _compute_precision_cholesky(c, covariance_type)
    if covariance_type == "full":
        gm.precisions_ = np.linalg.inv(c)
    elif covariance_type == "tied":
        gm.precisions_ = np.linalg.inv(c)
    else:
        gm.precisions_ = 1.0 / c
    gm.n_features_in_ = mu.shape[1]
    gm.converged_, gm.n_iter_, gm.lower_bound_ = True, 0, -np.inf
    return gm


def sklearn_fit(X, n_components, covariance_type, max_iter, tol=0.0, reg_covar=1e-6, **init):
    """scikit-learn EM from the given init (``init`` as returned by :func:`init_params`)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(
        n_components,
        covariance_type=covariance_type,
        max_iter=max_iter,
        tol=tol,
        reg_covar=reg_covar,
        init_params="random_from_data",  # overridden by the *_init arguments; the cheapest to run
        random_state=0,
        **init,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X)
    return gm


def assert_close(actual, desired, rtol, err_msg=""):
    """assert_allclose with an absolute floor of ``rtol`` times the largest |desired| entry."""
    actual = np.asarray(actual, dtype=np.float64)
    desired = np.asarray(desired, dtype=np.float64)
    assert actual.shape == desired.shape, (actual.shape, desired.shape, err_msg)
    atol = rtol * max(float(np.max(np.abs(desired), initial=0.0)), 1e-300)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol, err_msg=err_msg)


def as_np(res):
    """The three parameter arrays of a fit result as float64 NumPy arrays."""
    return {
        k: np.asarray(getattr(res, k), dtype=np.float64)
        for k in ("weights", "means", "covariances")
    }


@pytest.fixture(scope="session")
def ref():
    """Namespace of independent reference helpers (see the functions in conftest.py)."""
    return types.SimpleNamespace(
        COVARIANCE_TYPES=COVARIANCE_TYPES,
        init_params=init_params,
        full_covariances=full_covariances,
        component_log_densities=component_log_densities,
        log_likelihood=log_likelihood,
        n_parameters=n_parameters,
        sklearn_model=sklearn_model,
        sklearn_fit=sklearn_fit,
        assert_close=assert_close,
        as_np=as_np,
    )
