"""MAP-EM returns the mode of the NumPyro model's log joint density (float64).

References, all independent of the package's M-step algebra:
- scipy.stats densities (Dirichlet, inverse-Wishart, inverse-gamma, normal) with the
  hyperparameter defaults of docs/design.md, for the model's log density;
- numpyro.infer.util.log_density of ``mix.model`` itself, maximised numerically with
  scipy.optimize (L-BFGS-B over softmax logits, means, Cholesky factors with log-diagonal or
  log-variances) and differentiated with jax.grad through the same parametrisation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import log_density
from scipy import optimize, stats

import bayesgmm as bg

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
CASES = [("faithful", 2), ("faithful", 3), ("blobs3d", 3)]


def custom_prior(D):
    """A fully specified, deliberately informative prior for D = 2 or 3."""
    if D == 2:
        return dict(
            weight_concentration=2.0,
            mean_precision=0.5,
            mean=np.array([3.0, 70.0]),
            degrees_of_freedom=6.0,
            scale=np.array([[0.5, 1.0], [1.0, 40.0]]),
        )
    return dict(
        weight_concentration=1.5,
        mean_precision=0.1,
        mean=np.zeros(D),
        degrees_of_freedom=D + 4.0,
        scale=2.0 * np.eye(D) + 0.3,
    )


def default_hyper(X, K, covariance_type="full"):
    """mclust's defaultPrior as documented: alpha 1, kappa 0.01, m0 = mean, nu = D + 2,
    Psi = cov(X) / K^(2/D) (sample covariance, ddof=1, as R's var() in mclust); for diag (and
    spherical) one scale for every coordinate, the mean column variance / K^(2/D)."""
    D = X.shape[1]
    cov = np.atleast_2d(np.cov(X.T, ddof=1))
    if covariance_type in ("diag", "spherical"):
        cov = np.eye(D) * np.trace(cov) / D
    return dict(
        weight_concentration=1.0,
        mean_precision=0.01,
        mean=X.mean(0),
        degrees_of_freedom=D + 2.0,
        scale=cov / K ** (2.0 / D),
    )


def scipy_log_prior(params, covariance_type, h):
    w = np.asarray(params["weights"], np.float64)
    mu = np.asarray(params["means"], np.float64)
    c = np.asarray(params["covariances"], np.float64)
    K, D = mu.shape
    a, kappa, m0, nu = (
        h["weight_concentration"],
        h["mean_precision"],
        np.asarray(h["mean"]),
        h["degrees_of_freedom"],
    )
    Psi = np.asarray(h["scale"], np.float64)
    lp = stats.dirichlet.logpdf(w / w.sum(), np.full(K, a))
    if covariance_type == "full":
        for k in range(K):
            lp += stats.invwishart.logpdf(c[k], df=nu, scale=Psi)
            lp += stats.multivariate_normal.logpdf(mu[k], m0, c[k] / kappa)
    elif covariance_type == "tied":
        lp += stats.invwishart.logpdf(c, df=nu, scale=Psi)
        for k in range(K):
            lp += stats.multivariate_normal.logpdf(mu[k], m0, c / kappa)
    elif covariance_type == "diag":
        psi = np.diag(Psi)
        lp += stats.invgamma.logpdf(c, a=nu / 2, scale=psi[None, :] / 2).sum()
        lp += stats.norm.logpdf(mu, m0[None, :], np.sqrt(c / kappa)).sum()
    else:
        s = np.trace(Psi) / D
        lp += stats.invgamma.logpdf(c, a=nu / 2, scale=s / 2).sum()
        lp += stats.norm.logpdf(mu, m0[None, :], np.sqrt(c[:, None] / kappa)).sum()
    return float(lp)


# ----------------------------------------------------------------- unconstrained parametrisation


def to_unconstrained(params, covariance_type):
    w = jnp.asarray(params["weights"], jnp.float64)
    c = jnp.asarray(params["covariances"], jnp.float64)
    if covariance_type in ("full", "tied"):
        L = jnp.linalg.cholesky(c)
        d = jnp.diagonal(L, axis1=-2, axis2=-1)
        cov_u = jnp.tril(L, -1) + jnp.vectorize(jnp.diag, signature="(d)->(d,d)")(jnp.log(d))
    else:
        cov_u = jnp.log(c)
    return {"logits": jnp.log(w), "means": jnp.asarray(params["means"], jnp.float64), "cov": cov_u}


def to_constrained(u, covariance_type):
    if covariance_type in ("full", "tied"):
        A = u["cov"]
        d = jnp.diagonal(A, axis1=-2, axis2=-1)
        L = jnp.tril(A, -1) + jnp.vectorize(jnp.diag, signature="(d)->(d,d)")(jnp.exp(d))
        cov = L @ jnp.swapaxes(L, -1, -2)
    else:
        cov = jnp.exp(u["cov"])
    return {"weights": jax.nn.softmax(u["logits"]), "means": u["means"], "covariances": cov}


def jit_log_density(mix, X):
    """The model's log joint density as a function of params, jitted (eager NumPyro is slow)."""
    Xj = jnp.asarray(X)
    return jax.jit(lambda params: log_density(mix.model, (Xj,), {}, params)[0])


def make_objective(mix, X, covariance_type, u0):
    flat0, unravel = ravel_pytree(u0)
    ld = jit_log_density(mix, X)
    vg = jax.jit(
        jax.value_and_grad(lambda flat: ld(to_constrained(unravel(flat), covariance_type)))
    )
    return flat0, unravel, vg


def fit_map(mix, X):
    # tol: per-sample change 1e-12, i.e. run EM essentially to its fixed point
    return mix.fit_em(X, tol=1e-12, max_iter=20000)


# ----------------------------------------------------------------- tests


def _check_mode(mix, X, covariance_type, res):
    params = {k: np.asarray(v, np.float64) for k, v in res.params.items()}
    obj = float(res.objective)
    # 1. objective == the model's log joint density at res.params (rtol 1e-10)
    lj = float(jit_log_density(mix, X)(res.params))
    np.testing.assert_allclose(obj, lj, rtol=1e-10)
    assert np.asarray(res.history)[-1] == obj

    u0 = to_unconstrained(params, covariance_type)
    flat0, unravel, vg = make_objective(mix, X, covariance_type, u0)
    v0, g = vg(flat0)
    np.testing.assert_allclose(float(v0), obj, rtol=1e-10)

    # 2. gradient through the unconstrained parametrisation ~ 0 (|grad| < 1e-3 per coordinate,
    #    against O(1) or larger for a wrong update; EM stopped at 1e-12 per sample)
    g = np.asarray(g)
    assert np.max(np.abs(g)) < 1e-3, f"gradient at the EM solution: {g}"

    # 3. L-BFGS from res.params (nudged by 1e-3 in unconstrained coordinates) cannot do better
    #    than 1e-6 relative and returns within 1e-4 (relative, per parameter array) of res.params
    rng = np.random.default_rng(0)
    x0 = np.asarray(flat0) + 1e-3 * rng.normal(size=flat0.shape)

    def neg(x):
        v, gr = vg(jnp.asarray(x))
        return -float(v), -np.asarray(gr, np.float64)

    opt = optimize.minimize(
        neg, x0, jac=True, method="L-BFGS-B", options=dict(maxiter=5000, ftol=1e-15, gtol=1e-9)
    )
    best = -opt.fun
    assert best - obj <= 1e-6 * abs(obj), (best, obj)
    p_opt = to_constrained(unravel(jnp.asarray(opt.x)), covariance_type)
    for name in ("weights", "means", "covariances"):
        a, b = np.asarray(p_opt[name]), params[name]
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max(), err_msg=name)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("data,n_components", CASES)
def test_default_prior_is_mode(request, x64, data, n_components, covariance_type):
    X = request.getfixturevalue(data)
    mix = bg.Mixture(n_components, covariance_type=covariance_type, prior="default")
    res = fit_map(mix, X)
    _check_mode(mix, X, covariance_type, res)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("data,n_components", [("faithful", 2), ("blobs3d", 3)])
def test_custom_prior_is_mode(request, x64, data, n_components, covariance_type):
    X = request.getfixturevalue(data)
    mix = bg.Mixture(
        n_components, covariance_type=covariance_type, prior=bg.Prior(**custom_prior(X.shape[1]))
    )
    res = fit_map(mix, X)
    _check_mode(mix, X, covariance_type, res)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("which", ["default", "custom"])
def test_model_density_matches_scipy(x64, ref, faithful, blobs3d, which, covariance_type):
    """log p(X, params) of mix.model == scipy likelihood + documented prior (rtol 1e-10)."""
    X, K = (faithful, 2) if which == "default" else (blobs3d, 3)
    if which == "default":
        prior, h = "default", default_hyper(X, K, covariance_type)
    else:
        h = custom_prior(X.shape[1])
        prior = bg.Prior(**h)
    mix = bg.Mixture(K, covariance_type=covariance_type, prior=prior)
    params, _ = ref.init_params(X, K, covariance_type, seed=5)  # any parameters will do
    ld = jit_log_density(mix, X)
    lj = float(ld(params))
    ll = ref.log_likelihood(
        X, params["weights"], params["means"], params["covariances"], covariance_type
    )
    lp = scipy_log_prior(params, covariance_type, h)
    np.testing.assert_allclose(lj, ll + lp, rtol=1e-10)
    # and at the fitted parameters the objective splits into likelihood + prior the same way
    res = fit_map(mix, X)
    p = {k: np.asarray(v, np.float64) for k, v in res.params.items()}
    ll = ref.log_likelihood(X, p["weights"], p["means"], p["covariances"], covariance_type)
    np.testing.assert_allclose(float(res.log_likelihood), ll, rtol=1e-10)
    np.testing.assert_allclose(
        float(res.objective), ll + scipy_log_prior(p, covariance_type, h), rtol=1e-10
    )


def test_ml_objective_is_model_log_density(x64, faithful):
    """prior=None: the objective is the log-likelihood, which is also what mix.model scores."""
    mix = bg.Mixture(2, covariance_type="full")
    res = mix.fit_em(faithful, n_init=3, tol=1e-10, max_iter=2000)  # the config of test_em_sklearn
    np.testing.assert_allclose(float(res.objective), float(res.log_likelihood), rtol=1e-12)
    lj = float(jit_log_density(mix, faithful)(res.params))
    np.testing.assert_allclose(lj, float(res.objective), rtol=1e-10)


def traced(model, X):
    """Sample sites of seed(model) traced under jit (eager NumPyro compiles op by op: slow)."""
    meta = {}

    def run(key):
        tr = numpyro.handlers.trace(numpyro.handlers.seed(model, rng_seed=key)).get_trace(X)
        sites = {k: s for k, s in tr.items() if s["type"] == "sample"}
        meta.update(
            {k: {"type": s["type"], "is_observed": s["is_observed"]} for k, s in sites.items()}
        )
        return {k: s["value"] for k, s in sites.items()}

    values = jax.jit(run)(jax.random.PRNGKey(0))
    return {k: dict(meta[k], value=v) for k, v in values.items()}


EXPECTED_COV_SHAPE = {"full": (3, 2, 2), "tied": (2, 2), "diag": (3, 2), "spherical": (3,)}


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_prior_predictive_trace(covariance_type):
    """mix.model(None) runs under handlers.seed and declares the documented sample sites."""
    K, D = 3, 2
    prior = bg.Prior(**custom_prior(D))
    mix = bg.Mixture(K, covariance_type=covariance_type, prior=prior)
    tr = traced(mix.model, None)
    for name in ("weights", "means", "covariances"):
        assert name in tr and tr[name]["type"] == "sample" and not tr[name]["is_observed"], name
    assert tr["weights"]["value"].shape == (K,)
    assert tr["means"]["value"].shape == (K, D)
    assert tr["covariances"]["value"].shape == EXPECTED_COV_SHAPE[covariance_type]
    w = np.asarray(tr["weights"]["value"])
    assert np.all(w > 0) and abs(w.sum() - 1) < 1e-5
    c = np.asarray(tr["covariances"]["value"], np.float64)
    if covariance_type in ("full", "tied"):
        assert np.all(np.linalg.eigvalsh(c) > 0)
    else:
        assert np.all(c > 0)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_trace_with_data(faithful, covariance_type):
    """Called with X and prior='default', the sites have the documented shapes too."""
    K = 3
    mix = bg.Mixture(K, covariance_type=covariance_type, prior="default")
    tr = traced(mix.model, jnp.asarray(faithful))
    assert tr["weights"]["value"].shape == (K,)
    assert tr["means"]["value"].shape == (K, 2)
    assert tr["covariances"]["value"].shape == EXPECTED_COV_SHAPE[covariance_type]
    observed = [s for s in tr.values() if s["type"] == "sample" and s["is_observed"]]
    assert observed, "the data enter the model as an observed sample site"


@pytest.mark.parametrize(
    "covariance_type, short_scale",
    [("diag", np.array([0.4, 30.0])), ("spherical", 15.2)],
)
def test_short_scale_forms(x64, faithful, covariance_type, short_scale):
    """docs/design.md: diag accepts a (D,) vector of scales, spherical a scalar; they mean the same
    as the (D, D) matrix whose diagonal (diag) or mean diagonal (spherical) they are."""
    matrix = np.array([[0.4, 0.1], [0.1, 30.0]])
    h = dict(mean_precision=0.1, degrees_of_freedom=5.0)
    if covariance_type == "spherical":
        np.testing.assert_allclose(np.trace(matrix) / 2, short_scale)
    a = fit_map(
        bg.Mixture(2, covariance_type=covariance_type, prior=bg.Prior(scale=matrix, **h)), faithful
    )
    b = fit_map(
        bg.Mixture(2, covariance_type=covariance_type, prior=bg.Prior(scale=short_scale, **h)),
        faithful,
    )
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(
            np.asarray(getattr(b, name)), np.asarray(getattr(a, name)), rtol=1e-12
        )
    np.testing.assert_allclose(float(b.objective), float(a.objective), rtol=1e-12)
