"""The notebooks run from top to bottom, and they are stored executed (so they read well on
GitHub). Each is executed in a temporary copy with nbclient; the repository file is never
rewritten."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
TIMEOUT = 600  # per cell, seconds


def _runs_this_interpreter(argv0: str) -> bool:
    # jupyter_client replaces a bare "python" by the running interpreter itself.
    if argv0 in {
        "python",
        f"python{sys.version_info[0]}",
        f"python{sys.version_info[0]}.{sys.version_info[1]}",
    }:
        return True
    try:
        out = subprocess.run(
            [argv0, "-c", "import sys; print(sys.prefix)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and out.stdout.strip() == sys.prefix


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """``python3`` if that kernel runs this interpreter (the venv with bayesgmm), else a
    temporary kernelspec that does, found through JUPYTER_PATH."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
        if _runs_this_interpreter(spec.argv[0]):
            yield "python3"
            return
    except NoSuchKernel:
        pass
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / "bayesgmm-tests"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "bayesgmm tests",
                "language": "python",
            }
        )
    )
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(root), old]))
    try:
        yield "bayesgmm-tests"
    finally:
        if old is None:
            del os.environ["JUPYTER_PATH"]
        else:
            os.environ["JUPYTER_PATH"] = old


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_executed(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "run it before committing"
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), "executed top to bottom, once"
    for cell in code:
        for out in cell.outputs:
            assert out.output_type != "error", cell.source


@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    # Notebook 4 samples several posteriors with the defaults; the stored, executed copy is
    # checked by the test above, and its samplers by test_nuts, test_modes and test_predictive.
    [pytest.param(p, marks=pytest.mark.long) if p.stem.startswith("04") else p for p in NOTEBOOKS],
    ids=[p.stem for p in NOTEBOOKS],
)
def test_notebook_runs(path, kernel_name, tmp_path):
    nb = nbformat.read(path, as_version=4)  # a copy in memory; the file stays as it is
    client = nbclient.NotebookClient(
        nb,
        timeout=TIMEOUT,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working folder
    )
    client.execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
