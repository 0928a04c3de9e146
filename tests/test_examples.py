"""Every script in examples/ runs: ``main()`` with small settings, figures into a temp folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# Small settings per script: these runs check that the scripts work, not the statistics.
SETTINGS = {
    "quickstart_em": {},
    "univariate": {"n_per_source": 300, "max_components": 3},
    "singular_prior": {"n_components": (2, 3, 4), "n_init": 10},
    "nuts_posterior": {"num_chains": 1, "num_warmup": 60, "num_samples": 60},
    "sklearn_pipeline": {"max_components": 2, "n_splits": 2, "priors": ("default",)},
    "stream_large_file": {"n_rows": 20_000, "memory_mib": 0.25},
    "two_processes": {"n_rows": 2_000},
}


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested():
    assert {p.stem for p in EXAMPLES.glob("*.py")} == set(SETTINGS)


@pytest.mark.parametrize("name", SETTINGS)
def test_example_runs(name, tmp_path, capsys):
    result = load(name).main(out_dir=tmp_path, **SETTINGS[name])
    pngs = sorted(tmp_path.glob("*.png"))
    assert pngs and all(p.stat().st_size > 10_000 for p in pngs)
    out = capsys.readouterr().out
    assert "wrote" in out
    if name == "quickstart_em":
        assert result.converged and result.means.shape == (2, 2)
    elif name == "stream_large_file":
        assert result.n_iter > 1 and "chunks of" in out
    elif name == "two_processes":
        assert "both processes hold the same parameters: True" in out
    elif name == "singular_prior":
        sel_ml, sel_map = result
        # The point of the example: select never picks a collapsed component (it marks and
        # skips one when the search finds it), and under the prior nothing collapses.
        ml = sel_ml.table.set_index(["n_components", "covariance_type"])
        best = (sel_ml.best.n_components, sel_ml.best.covariance_type)
        assert not bool(ml.loc[best, "degenerate"])
        assert not sel_map.table["degenerate"].any()
        assert np.min(np.asarray(sel_map.best.covariances)) > 1e-2
        assert "became singular" in out
    elif name == "sklearn_pipeline":
        assert result.best_params_["gmm__n_components"] == 2
