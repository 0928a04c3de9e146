"""NUTS on the mixture model: convergence on Old Faithful, structure of the DataTree, relabelling.

Compiling NUTS costs 10-25 s per model structure on a 2-core machine, and pytest-xdist may run any
two tests in different processes, so each heavy posterior is drawn inside the one test that
checks it, and the quick functional tests share one tiny structure (1-D galaxies, K=2 spherical,
50 warm-up iterations), compiled once per worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import arviz as az
import jax
import numpy as np
import pytest
import xarray as xr
from numpyro.infer.util import log_density, potential_energy, unconstrain_fn
from scipy.special import logsumexp

import bayesgmm as bg
from bayesgmm.nuts import _jittered_starts
from bayesgmm.relabel import apply_permutation as _apply_permutation
from bayesgmm.relabel import relabel_permutations

PARAMS = ("weights", "means", "covariances")

# The quick runs' data (galaxies, two components) has a two-mode posterior: the warning is
# tested in test_modes; here it would only repeat itself.
pytestmark = pytest.mark.filterwarnings("ignore::bayesgmm.MultimodalPosteriorWarning")


# --------------------------------------------------------------------------- helpers


def _flat_draws(post, name):
    da = post.posterior[name]
    return da.values.reshape((-1,) + da.shape[2:])


def _draw(post, chain, draw):
    return {name: post.posterior[name].values[chain, draw] for name in PARAMS}


def _check_structure(post, X, covariance_type, k, chains, draws):
    d = X.shape[1]
    for group in ("posterior", "sample_stats", "log_likelihood", "observed_data"):
        assert group in post.children, group
    cov_shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}
    expected = {"weights": (k,), "means": (k, d), "covariances": cov_shape[covariance_type]}
    for name, shape in expected.items():
        da = post.posterior[name]
        assert da.shape == (chains, draws) + shape, name
        assert da.dims[:2] == ("chain", "draw")
        assert da.dtype == np.float64
    assert post.posterior["means"].dims == ("chain", "draw", "component", "feature")
    np.testing.assert_allclose(post.posterior["weights"].sum("component"), 1.0, rtol=1e-5)
    assert post.log_likelihood["obs"].dims == ("chain", "draw", "obs_id")
    assert post.log_likelihood["obs"].shape == (chains, draws, X.shape[0])
    np.testing.assert_array_equal(post.observed_data["obs"].values, X)
    stats = post.sample_stats
    for name in ("lp", "energy", "acceptance_rate", "step_size", "n_steps", "tree_depth"):
        assert stats[name].shape == (chains, draws), name
    assert stats["diverging"].dtype == bool
    assert stats["relabeled"].dtype == bool
    assert stats.attrs["relabeled_fraction"] == pytest.approx(float(stats["relabeled"].mean()))
    assert post.attrs["covariance_type"] == covariance_type
    assert post.attrs["n_components"] == k
    # the draws' mode and the permutation-invariant quantities
    assert stats["mode"].shape == (chains, draws)
    masses = np.asarray(post.posterior.attrs["mode_masses"])
    assert np.sum(masses) == pytest.approx(1.0) and np.all(masses >= 0)
    assert set(np.unique(stats["mode"].values)) <= set(range(len(masses)))
    inv = post.posterior_invariant
    assert inv["log_likelihood_total"].shape == (chains, draws)
    assert inv["log_density_at"].shape == (chains, draws, 3)
    np.testing.assert_allclose(
        inv["log_likelihood_total"].values, post.log_likelihood["obs"].values.sum(-1), rtol=1e-4
    )


def _check_map_is_the_mode(mix, X, res, post):
    """The log joint density of ``mix.model`` at the EM MAP is >= at every posterior draw."""
    with jax.enable_x64(True):

        def log_joint(params):
            return log_density(mix.model, (X,), {}, params)[0]

        draws = {name: _flat_draws(post, name) for name in PARAMS}
        at_draws = np.asarray(jax.jit(jax.vmap(log_joint))(draws))
        at_map = float(
            jax.jit(log_joint)({k: np.asarray(v, np.float64) for k, v in res.params.items()})
        )
    assert np.all(np.isfinite(at_draws))
    gap = at_map - at_draws.max()
    assert gap >= 0, f"a draw beats the MAP by {-gap}"
    # The draws do reach the mode's neighbourhood (for 11 parameters the best of 2000 draws is
    # typically within a few units of log density).
    assert gap < 5, gap
    assert res.objective == pytest.approx(at_map, rel=1e-5)


def _check_lp_is_the_model_potential(mix, X, post, n_check=40, model_kwargs=None):
    """sample_stats.lp is minus the potential energy of ``mix.model`` (same model, same data)."""
    model_kwargs = model_kwargs or {}
    relabeled = post.sample_stats["relabeled"].values.reshape(-1)
    lp = post.sample_stats["lp"].values.reshape(-1)
    # The stick-breaking Jacobian depends on the component order: compare unpermuted draws.
    idx = np.flatnonzero(~relabeled)[:n_check]
    assert len(idx) > 0
    with jax.enable_x64(True):

        def minus_potential(params):
            z = unconstrain_fn(mix.model, (X,), model_kwargs, params)
            return -potential_energy(mix.model, (X,), model_kwargs, z)

        draws = {name: _flat_draws(post, name)[idx] for name in PARAMS}
        expected = np.asarray(jax.jit(jax.vmap(minus_potential))(draws))
    np.testing.assert_allclose(lp[idx], expected, rtol=2e-5, atol=0.05)


def _check_pointwise_log_likelihood(post, X, covariance_type, ref):
    for chain, draw in [(0, 0), (1, 17), (3, 499)]:
        p = _draw(post, chain, draw)
        expected = logsumexp(
            ref.component_log_densities(
                X, p["weights"], p["means"], p["covariances"], covariance_type
            ),
            axis=1,
        )
        np.testing.assert_allclose(
            post.log_likelihood["obs"].values[chain, draw], expected, rtol=1e-4, atol=1e-4
        )


def _check_netcdf_roundtrip(post, path):
    post.to_netcdf(path)
    back = xr.open_datatree(path).load()
    for group in post.children:
        xr.testing.assert_equal(back[group].to_dataset(), post[group].to_dataset())
        for name, da in post[group].data_vars.items():
            assert back[group][name].dtype == da.dtype, (group, name)
    assert back.attrs["covariance_type"] == post.attrs["covariance_type"]
    assert (
        back.sample_stats.attrs["relabeled_fraction"]
        == (post.sample_stats.attrs["relabeled_fraction"])
    )
    again = az.from_netcdf(path)
    np.testing.assert_array_equal(again.posterior["means"].values, post.posterior["means"].values)


# --------------------------------------------------------------------------- acceptance


@pytest.mark.slow
def test_faithful_k2_full_acceptance(faithful, ref, tmp_path):
    """4 chains x 500 draws after 500 warm-up: R-hat < 1.01, bulk ESS > 400, no divergence."""
    mix = bg.Mixture(2, "full", prior="default")
    res = mix.fit_em(faithful, n_init=4)
    t0 = time.perf_counter()
    # The default key. With 4 x 500 draws the largest of 14 R-hats is itself noisy: over keys
    # 0-11 it ranged 1.002-1.013 (mean 1.0055, two keys above 1.01) with bulk ESS ~3000.
    post = mix.sample_posterior(
        faithful, init=res, num_chains=4, num_warmup=500, num_samples=500, rng_key=0
    )
    elapsed = time.perf_counter() - t0
    print(
        f"faithful K=2 full: sample_posterior {elapsed:.1f} s "
        f"(sampling {post.attrs['sampling_time']:.1f} s, {post.attrs['chain_method']})"
    )

    summary = az.summary(post, round_to="none")
    print(summary[["mean", "sd", "ess_bulk", "r_hat"]].to_string())
    assert (summary["r_hat"] < 1.01).all(), summary["r_hat"]
    main = summary.index.str.startswith(("weights", "means"))
    assert (summary.loc[main, "ess_bulk"] > 400).all(), summary.loc[main, "ess_bulk"]
    assert int(post.sample_stats["diverging"].sum()) == 0

    # The EM MAP means lie inside the posterior HDI (94%, and ArviZ's default).
    for prob in (0.94, None):
        table = bg.compare(res, post, ci_prob=prob)
        means = table.loc[table.index.str.startswith("means")]
        assert means["em_in_hdi"].all(), means
        assert (means["r_hat"] < 1.01).all()

    _check_structure(post, faithful, "full", 2, 4, 500)
    assert "constant_data" not in post.children
    _check_map_is_the_mode(mix, faithful, res, post)
    _check_lp_is_the_model_potential(mix, faithful, post)
    _check_pointwise_log_likelihood(post, faithful, "full", ref)
    _check_netcdf_roundtrip(post, tmp_path / "posterior.nc")
    loo = az.loo(post)
    assert np.isfinite(loo.elpd)


@pytest.mark.slow
def test_faithful_k3_tied_without_init(faithful):
    """Without ``init`` (an internal MAP-EM fit), K=3 tied mixes: R-hat < 1.05 for the means."""
    post = bg.Mixture(3, "tied", prior="default").sample_posterior(
        faithful, num_chains=4, num_warmup=500, num_samples=500, rng_key=2
    )
    rhat = az.rhat(post, var_names=["means"])["means"].values
    print(
        "K=3 tied R-hat of the means:",
        np.round(rhat, 4).tolist(),
        "relabelled:",
        post.sample_stats.attrs["relabeled_fraction"],
    )
    assert np.all(rhat < 1.05), rhat
    _check_structure(post, faithful, "tied", 3, 4, 500)


# --------------------------------------------------------------------------- quick runs


@pytest.fixture(scope="module")
def tiny():
    """1-D galaxies (thousands of km/s), K=2 spherical, and an EM-like starting point."""
    X = bg.datasets.load_galaxies() / 1000.0
    mix = bg.Mixture(2, "spherical", prior="default")
    init = {"weights": [0.1, 0.9], "means": [[10.0], [21.0]], "covariances": [1.0, 5.0]}
    return X[:, None], mix, init


def _tiny_run(tiny, **kwargs):
    X, mix, init = tiny
    options = dict(num_chains=2, num_warmup=50, num_samples=60, init=init, rng_key=0)
    options.update(kwargs)
    return mix.sample_posterior(X, **options)


def test_quick_run_structure_and_determinism(tiny):
    X, mix, _ = tiny
    a = _tiny_run(tiny)
    _check_structure(a, X, "spherical", 2, 2, 60)
    assert a.attrs["chain_method"] == (
        "sequential" if jax.default_backend() == "cpu" else "vectorized"
    )
    b = _tiny_run(tiny)
    c = _tiny_run(tiny, rng_key=1)
    for name in PARAMS:
        np.testing.assert_array_equal(a.posterior[name].values, b.posterior[name].values)
    assert not np.array_equal(a.posterior["means"].values, c.posterior["means"].values)
    # the chains start from different points, so they differ
    assert not np.array_equal(a.posterior["means"].values[0], a.posterior["means"].values[1])
    # num_samples not a multiple of the compiled chunk, and a single chain
    d = _tiny_run(tiny, num_chains=1, num_samples=7, log_likelihood=False)
    assert d.posterior["weights"].shape == (1, 7, 2)
    assert "log_likelihood" not in d.children


def test_ahead_of_time_programs_sample_as_the_jitted_ones(tiny, monkeypatch):
    """The (init, run) pair compiled in the worker thread (while the reference EM runs) is the
    one a call uses, and it draws exactly what jax.jit's programs draw."""
    from bayesgmm import _nuts_compiled, sampler

    a = _tiny_run(tiny)
    futures = list(_nuts_compiled._AOT.values())
    assert futures and all(f.done() and f.exception() is None for f in futures)
    monkeypatch.setattr(sampler, "precompile", lambda *args: None)
    b = _tiny_run(tiny)
    for name in PARAMS:
        np.testing.assert_array_equal(a.posterior[name].values, b.posterior[name].values)


def test_sample_weight_reaches_the_model(tiny):
    X, mix, _ = tiny
    w = np.arange(len(X)) % 3  # integer weights, some rows left out
    post = _tiny_run(tiny, sample_weight=w)
    np.testing.assert_array_equal(post.constant_data["sample_weight"].values, w)
    # lp is the potential of mix.model with the weights ...
    _check_lp_is_the_model_potential(mix, X, post, model_kwargs={"sample_weight": w})
    # ... which equals that of the data with rows repeated w times
    _check_lp_is_the_model_potential(mix, np.repeat(X, w, axis=0), post)
    # and differs from the unweighted one
    with pytest.raises(AssertionError):
        _check_lp_is_the_model_potential(mix, X, post)
    # log_likelihood keeps one (unweighted) column per row of X
    assert post.log_likelihood["obs"].shape == (2, 60, len(X))


def test_progress_bar(tiny, capsys):
    _tiny_run(tiny, progress_bar=True)
    err = capsys.readouterr().err
    assert "sample" in err and "it" in err
    _tiny_run(tiny, progress_bar=False)
    assert capsys.readouterr().err == ""


# A few hundred draws of a 3-component fit to 82 points leave some Pareto k above 0.62.
@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto:UserWarning")
def test_loo_comparison_across_k(tiny):
    """The documented workflow for choosing K: ``arviz.compare`` by PSIS-LOO on the
    ``log_likelihood`` group of posteriors with different numbers of components."""
    X, _, _ = tiny
    post2 = _tiny_run(tiny, num_samples=200)
    init3 = {
        "weights": [0.1, 0.8, 0.1],
        "means": [[10.0], [21.0], [33.0]],
        "covariances": [1.0, 4.0, 1.0],
    }
    post3 = bg.Mixture(3, "spherical", prior="default").sample_posterior(
        X, num_chains=2, num_warmup=50, num_samples=200, init=init3
    )
    table = az.compare({"K=2": post2, "K=3": post3})
    assert set(table.index) == {"K=2", "K=3"}
    assert {"rank", "elpd", "weight"} <= set(table.columns)
    assert np.all(np.isfinite(table["elpd"]))


@pytest.mark.slow
def test_vectorized_chains(tiny):
    post = _tiny_run(tiny, chain_method="vectorized", num_samples=200)
    seq = _tiny_run(tiny, chain_method="sequential", num_samples=200)
    assert post.attrs["chain_method"] == "vectorized"
    # Same posterior: the component means agree within a few Monte Carlo standard errors.
    a = post.posterior["means"].values.reshape(-1, 2)
    b = seq.posterior["means"].values.reshape(-1, 2)
    se = np.hypot(a.std(0), b.std(0)) / np.sqrt(100)  # ~100 effective draws each, at least
    assert np.all(np.abs(a.mean(0) - b.mean(0)) < 5 * se)


@pytest.mark.slow
def test_parallel_chains_on_two_host_devices(tmp_path):
    """With two (forced) host devices, two chains run under pmap by default."""
    script = textwrap.dedent(
        """
        import numpy as np
        import bayesgmm as bg
        X = bg.datasets.load_galaxies() / 1000.0
        init = {"weights": [0.1, 0.9], "means": [[10.0], [21.0]], "covariances": [1.0, 5.0]}
        post = bg.Mixture(2, "spherical", prior="default").sample_posterior(
            X, num_chains=2, num_warmup=50, num_samples=60, init=init
        )
        assert post.attrs["chain_method"] == "parallel", post.attrs["chain_method"]
        assert post.posterior["means"].shape == (2, 60, 2, 1)
        assert np.all(np.isfinite(post.posterior["means"].values))
        print("ok")
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


# --------------------------------------------------------------------------- errors


def test_sampler_core_does_not_import_the_surface():
    """nuts.py receives arrays: it imports nothing from the user-facing modules."""
    import ast
    import inspect

    import bayesgmm.modes
    import bayesgmm.nuts
    import bayesgmm.relabel

    for module in (bayesgmm.nuts, bayesgmm.modes, bayesgmm.relabel):
        tree = ast.parse(inspect.getsource(module))
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module is not None
        }
        assert not imported & {"api", "select", "posterior", "sampler"}, (module, imported)


def test_nuts_needs_a_proper_prior(faithful):
    with pytest.raises(ValueError, match="proper prior") as info:
        bg.Mixture(2, "full").sample_posterior(faithful)
    message = str(info.value)
    assert "improper" in message
    assert 'Mixture(2, "full", prior="default")' in message


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_chains": 0}, "num_chains"),
        ({"num_samples": 0}, "num_samples"),
        ({"num_warmup": -1}, "num_warmup"),
        ({"num_warmup": 1.5}, "num_warmup"),
        ({"chain_method": "threads"}, "chain_method"),
        ({"chain_method": "parallel", "num_chains": 64}, "one device per chain"),
        ({"target_accept_prob": 1.0}, "target_accept_prob"),
        ({"init": "kmeans"}, "init must be"),
        ({"init": {"weights": [1.0]}}, "init_params"),
        ({"sample_weight": [1.0, 2.0]}, "sample_weight"),
    ],
)
def test_invalid_arguments(faithful, kwargs, match):
    with pytest.raises(ValueError, match=match):
        bg.Mixture(2, "diag", prior="default").sample_posterior(faithful, **kwargs)


def test_init_of_another_mixture_is_rejected(faithful):
    other = bg.FitResult.from_params(
        bg.Mixture(3, "diag"), [0.2, 0.3, 0.5], np.zeros((3, 2)), np.ones((3, 2))
    )
    with pytest.raises(ValueError, match="same mixture"):
        bg.Mixture(2, "diag", prior="default").sample_posterior(faithful, init=other)


# --------------------------------------------------------------------------- relabelling


def _reference(covariance_type, k, d, rng):
    means = 4.0 * rng.normal(size=(k, d))
    a = rng.normal(size=(k, d, d))
    full = a @ np.swapaxes(a, 1, 2) + np.eye(d)
    cov = {
        "full": full,
        "tied": full[0],
        "diag": np.diagonal(full, axis1=1, axis2=2).copy(),
        "spherical": np.trace(full, axis1=1, axis2=2) / d,
    }[covariance_type]
    return {"weights": rng.dirichlet(np.full(k, 3.0)), "means": means, "covariances": cov}


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_relabel_recovers_random_permutations(covariance_type):
    rng = np.random.default_rng(1)
    k, d, s, n = 4, 3, 300, 500
    ref = _reference(covariance_type, k, d, rng)
    # draws scattered around the reference by about a posterior standard deviation
    w = ref["weights"] * np.exp(0.05 * rng.normal(size=(s, k)))
    w /= w.sum(1, keepdims=True)
    mu = ref["means"] + 0.05 * rng.normal(size=(s, k, d))
    truth = np.array([rng.permutation(k) for _ in range(s)])
    truth[:100] = np.arange(k)  # a third of the draws in the reference order already
    scrambled_w = np.take_along_axis(w, np.argsort(truth, axis=1), axis=1)
    scrambled_mu = np.take_along_axis(mu, np.argsort(truth, axis=1)[:, :, None], axis=1)
    perm = relabel_permutations(scrambled_w, scrambled_mu, ref, covariance_type, n)
    np.testing.assert_array_equal(np.take_along_axis(scrambled_w, perm, axis=1), w)
    np.testing.assert_array_equal(np.take_along_axis(scrambled_mu, perm[:, :, None], axis=1), mu)
    assert np.all(perm[:100] == np.arange(k))


def test_relabel_single_component_and_ties():
    rng = np.random.default_rng(2)
    ref = _reference("diag", 1, 2, rng)
    perm = relabel_permutations(np.ones((5, 1)), rng.normal(size=(5, 1, 2)), ref, "diag", 10)
    np.testing.assert_array_equal(perm, 0)
    # two identical reference components: every order is optimal, the identity is kept
    ref2 = {
        "weights": np.array([0.5, 0.5]),
        "means": np.zeros((2, 2)),
        "covariances": np.ones((2, 2)),
    }
    perm = relabel_permutations(np.full((3, 2), 0.5), np.zeros((3, 2, 2)), ref2, "diag", 10)
    np.testing.assert_array_equal(perm, [[0, 1]] * 3)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "spherical"])
def test_permutation_moves_whole_components(covariance_type):
    rng = np.random.default_rng(3)
    s, k, d = 6, 3, 2
    samples = {
        "weights": rng.dirichlet(np.ones(k), size=s),
        "means": rng.normal(size=(s, k, d)),
        "covariances": {
            "full": rng.normal(size=(s, k, d, d)),
            "tied": rng.normal(size=(s, d, d)),
            "spherical": rng.random((s, k)),
        }[covariance_type],
    }
    perm = np.array([rng.permutation(k) for _ in range(s)])
    out = _apply_permutation(samples, perm, covariance_type)
    for i in range(s):
        for new, old in enumerate(perm[i]):
            assert out["weights"][i, new] == samples["weights"][i, old]
            np.testing.assert_array_equal(out["means"][i, new], samples["means"][i, old])
            if covariance_type != "tied":
                np.testing.assert_array_equal(
                    out["covariances"][i, new], samples["covariances"][i, old]
                )
    if covariance_type == "tied":
        np.testing.assert_array_equal(out["covariances"], samples["covariances"])


def test_jittered_starts_differ_by_chain_and_stay_near_the_reference():
    ref = {
        "weights": np.array([0.4, 0.6]),
        "means": np.array([[2.0, 55.0], [4.3, 80.0]]),
        "covariances": np.array([[0.07, 34.0], [0.17, 36.0]]),
    }
    z = {
        "weights": np.array([0.3]),
        "means": ref["means"],
        "covariances": np.log(ref["covariances"]),
    }
    starts = _jittered_starts(z, ref, "diag", 272.0, 4, jax.random.PRNGKey(0))
    for name, a in starts.items():
        a = np.asarray(a)
        assert a.shape == (4,) + np.shape(z[name])
        assert len({a[i].tobytes() for i in range(4)}) == 4, name
    # means move by about a posterior sd: sqrt(var / n_k)
    sd = np.sqrt(ref["covariances"] / (ref["weights"][:, None] * 272.0))
    dev = np.abs(np.asarray(starts["means"]) - ref["means"]) / sd
    assert dev.max() < 6 and dev.mean() > 0.2
    # tied with K == D: the (D, D) matrix is not mistaken for (K, D) variances
    tied = dict(ref, covariances=np.array([[1.0, -0.5], [-0.5, 2.0]]))
    starts = _jittered_starts(z, tied, "tied", 272.0, 4, jax.random.PRNGKey(0))
    assert np.all(np.isfinite(np.asarray(starts["means"])))
