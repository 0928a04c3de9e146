"""The command line: every subcommand on small data, and every kind of bad input.

Most tests call ``bayesgmm.cli.main(argv)`` in-process (fast: the compiled EM programs are
shared); two run the installed entry point in a subprocess, to prove that a real failure prints
one line and no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from bayesgmm import cli  # noqa: E402

# Small NUTS runs: they check the plumbing, not the posterior.
NUTS_ARGS = ["--num-chains", "1", "--num-warmup", "60", "--num-samples", "60"]

FIT_FILES = {
    "params.json",
    "summary.csv",
    "components.csv",
    "memberships.csv",
    "mixture.png",
    "history.png",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, faithful):
    """CSV files: Old Faithful with an extra label column, and a 3-column data set."""
    d = tmp_path_factory.mktemp("data")
    df = pd.DataFrame(faithful, columns=["eruptions", "waiting"])
    df["kind"] = np.where(df["eruptions"] > 3, "long", "short")
    df.to_csv(d / "faithful.csv", index=False)
    return d


def run(argv, capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bayesgmm: error: ")
    assert "Traceback" not in err


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary folders that a report left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------- fit


def test_fit_writes_a_report(data_dir, tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, err = run(["fit", data_dir / "faithful.csv", "-k", 2, "--out", out], capsys)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == FIT_FILES
    assert leftovers(tmp_path) == []
    params = json.loads((out / "params.json").read_text())
    assert params["n_components"] == 2 and params["covariance_type"] == "full"
    assert params["prior"] == "default"  # MAP by default
    assert params["data"]["columns"] == ["eruptions", "waiting"]  # the label column is left out
    assert np.sum(params["weights"]) == pytest.approx(1.0, abs=1e-6)
    assert np.shape(params["covariances"]) == (2, 2, 2)
    for key in ("log_likelihood", "bic", "aic", "converged", "n_iter", "prior_hyperparameters"):
        assert key in params
    assert params["converged"] is True
    summary = pd.read_csv(out / "summary.csv", index_col="parameter")
    assert "means[1, 1]" in summary.index and list(summary.columns) == ["em"]
    components = pd.read_csv(out / "components.csv")
    assert components["n_assigned"].sum() == 272
    assert list(components.columns[-2:]) == ["sd_eruptions", "sd_waiting"]
    memberships = pd.read_csv(out / "memberships.csv")
    np.testing.assert_allclose(memberships[["p0", "p1"]].sum(axis=1), 1.0, atol=1e-5)
    for png in ("mixture.png", "history.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "left out the non-numeric kind" in stdout
    assert "component" in stdout and "BIC" in stdout
    assert "Report written to" in stdout


def test_fit_maximum_likelihood_one_column(data_dir, tmp_path, capsys):
    out = tmp_path / "ml"
    argv = ["fit", data_dir / "faithful.csv", "-k", 2, "--columns", "eruptions"]
    code, stdout, err = run(
        [*argv, "--prior", "none", "--covariance", "diag", "--out", out], capsys
    )
    assert code == 0, err
    params = json.loads((out / "params.json").read_text())
    assert params["prior"] == "none" and "prior_hyperparameters" not in params
    assert params["objective"] == pytest.approx(params["log_likelihood"])
    assert np.shape(params["means"]) == (2, 1)
    assert "maximum likelihood" in stdout


def test_a_saved_row_index_is_left_out(faithful, tmp_path, capsys):
    csv = tmp_path / "indexed.csv"
    pd.DataFrame(faithful, columns=["eruptions", "waiting"]).to_csv(csv)  # with its index
    out = tmp_path / "report"
    code, stdout, err = run(["fit", csv, "-k", 2, "--out", out], capsys)  # a shared compilation
    assert code == 0, err
    assert "left out the column without a name" in stdout
    assert json.loads((out / "params.json").read_text())["data"]["columns"] == [
        "eruptions",
        "waiting",
    ]


def test_force_replaces_a_non_empty_folder(data_dir, tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "old.txt").write_text("keep me unless --force")
    argv = ["fit", data_dir / "faithful.csv", "-k", 2, "--out", out]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err)
    assert "--force" in err
    assert (out / "old.txt").exists()
    code, _, err = run([*argv, "--force"], capsys)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == FIT_FILES
    assert leftovers(tmp_path) == []


def test_an_empty_existing_folder_is_fine(data_dir, tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    code, _, err = run(["fit", data_dir / "faithful.csv", "-k", 2, "--out", out], capsys)
    assert code == 0, err
    assert (out / "params.json").exists()


def test_a_crash_while_writing_leaves_nothing(data_dir, tmp_path, capsys, monkeypatch):
    from bayesgmm import plotting

    def broken(*args, **kwargs):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(plotting, "plot_history", broken)
    out = tmp_path / "report"
    argv = ["fit", data_dir / "faithful.csv", "-k", 2, "--out", out]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err)
    assert "the disk caught fire" in err
    assert not out.exists() and leftovers(tmp_path) == []
    # With --force, the old report survives a failed replacement.
    out.mkdir()
    (out / "old.txt").write_text("old report")
    code, _, err = run([*argv, "--force"], capsys)
    assert_one_line_error(code, err)
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert leftovers(tmp_path) == []


def test_fit_with_nuts(data_dir, tmp_path, capsys):
    pytest.importorskip("bayesgmm.nuts")
    out = tmp_path / "post"
    argv = ["fit", data_dir / "faithful.csv", "-k", 2, "--nuts", *NUTS_ARGS, "--out", out]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == FIT_FILES | {"posterior.nc", "compare.png"}
    summary = pd.read_csv(out / "summary.csv", index_col="parameter")
    for column in ("em", "mean", "sd", "hdi_low", "hdi_high", "r_hat", "ess_bulk", "em_in_hdi"):
        assert column in summary.columns
    import xarray as xr

    tree = xr.open_datatree(out / "posterior.nc")
    assert tree["posterior"]["means"].shape == (1, 60, 2, 2)
    tree.close()
    assert "R-hat" in stdout


def test_nuts_without_a_netcdf_writer_fails_before_sampling(
    data_dir, tmp_path, capsys, monkeypatch
):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("h5py", "netCDF4") else real(name, *a),
    )
    out = tmp_path / "post"
    argv = ["fit", data_dir / "faithful.csv", "-k", 2, "--nuts", "--out", out]
    code, stdout, err = run(argv, capsys)
    assert_one_line_error(code, err)
    assert "pip install h5py" in err
    assert "EM:" not in stdout  # nothing was fitted
    assert not out.exists()


# ----------------------------------------------------------------------------- select


def test_select_writes_a_report(data_dir, tmp_path, capsys):
    out = tmp_path / "sel"
    argv = ["select", data_dir / "faithful.csv", "--max-components", 3, "--covariance", "full"]
    code, stdout, err = run([*argv, "--out", out], capsys)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == FIT_FILES | {"selection.csv", "selection.png"}
    table = pd.read_csv(out / "selection.csv")
    assert sorted(table["n_components"]) == [1, 2, 3]
    assert set(table["covariance_type"]) == {"full"}
    params = json.loads((out / "params.json").read_text())
    best = table.loc[table["bic"].idxmin()]
    assert params["n_components"] == best["n_components"] == 2
    assert params["criterion"] == "bic"
    assert "Best by BIC" in stdout


def test_select_covariance_option_repeats_and_splits(data_dir, tmp_path, capsys):
    # Every value of every repeat is read and checked before any fit.
    argv = ["select", data_dir / "faithful.csv", "--out", tmp_path / "sel"]
    code, _, err = run([*argv, "--covariance", "full, diag", "--covariance", "tied,round"], capsys)
    assert_one_line_error(code, err)
    assert "unknown type 'round'" in err
    assert not (tmp_path / "sel").exists()


# ----------------------------------------------------------------------------- demo


def test_demo_on_small_settings(tmp_path, capsys, monkeypatch):
    """The demo's whole path, with two candidates per prior and a short NUTS run."""
    pytest.importorskip("bayesgmm.nuts")
    from bayesgmm.cli import demo

    # The same NUTS settings and model (K=2, full) as test_fit_with_nuts: one compilation.
    tiny = demo.DemoSettings("test", (1, 2), ("full",), 1, 60, 60, n_init=2)
    monkeypatch.setattr(demo, "QUICK_DEMO", tiny)
    # Without --out the demo picks a fresh folder: ./bayesgmm-demo is taken, so -2.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bayesgmm-demo").mkdir()
    (tmp_path / "bayesgmm-demo" / "x").write_text("")
    code, stdout, err = run(["demo", "--quick"], capsys)
    assert code == 0, err
    out = tmp_path / "bayesgmm-demo-2"
    names = {p.name for p in out.iterdir()}
    for name in (
        "selection.png",
        "chosen_mixtures.png",
        "em_history.png",
        "compare.png",
        "selection_ml.csv",
        "selection_map.csv",
        "compare.csv",
        "summary.txt",
    ):
        assert name in names
    for section in ("1. BIC", "2. The chosen", "3. EM", "4. NUTS", "ML  picks", "MAP picks"):
        assert section in stdout
    assert (out / "summary.txt").read_text() in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bayesgmm-demo", "bayesgmm-demo-2"]


# ----------------------------------------------------------------------------- bad input

BAD_FILES = {
    "no_numeric.csv": "name,city\nada,london\nalan,wilmslow\n",
    "non_numeric_cell.csv": "a,b\n1,2\n3,oops\n5,6\n",
    "missing.csv": "a,b\n1,2\n3,\n5,6\n",
    "infinite.csv": "a,b\n1,2\n3,inf\n5,6\n",
    "empty.csv": "",
    "header_only.csv": "a,b\n",
    "no_header.csv": "1.5,2\n3,4\n5,6\n",
    "three_rows.csv": "a,b\n1,2\n3,5\n4,1\n",
    "constant.csv": "a,b\n1,2\n1,3\n1,5\n1,7\n",
}

BAD_CASES = {
    "missing file": (["fit", "{d}/nope.csv", "-k", "2"], "no such file"),
    "a folder": (["fit", "{d}", "-k", "2"], "folder"),
    "binary file": (["fit", "{d}/binary.csv", "-k", "2"], "not a text"),
    "no numeric column": (["fit", "{d}/no_numeric.csv", "-k", "1"], "no numeric columns"),
    "non-numeric cell": (["fit", "{d}/non_numeric_cell.csv", "-k", "1"], "'oops' in data row 2"),
    "missing value": (["fit", "{d}/missing.csv", "-k", "1"], "missing value"),
    "infinite value": (["fit", "{d}/infinite.csv", "-k", "1"], "infinite"),
    "empty file": (["fit", "{d}/empty.csv", "-k", "1"], "empty"),
    "header only": (["fit", "{d}/header_only.csv", "-k", "1"], "no data rows"),
    "no header": (["fit", "{d}/no_header.csv", "-k", "1"], "header"),
    "fewer rows than components": (["fit", "{d}/three_rows.csv", "-k", "4"], "needs at least 4"),
    "select: fewer rows": (
        ["select", "{d}/three_rows.csv", "--max-components", "5"],
        "needs at least 5",
    ),
    "unknown column": (["fit", "{d}/three_rows.csv", "-k", "1", "--columns", "a,z"], "'z'"),
    "label column asked for": (
        ["fit", "{d}/no_numeric.csv", "-k", "1", "--columns", "name"],
        "non-numeric",
    ),
    "zero components": (["fit", "{d}/three_rows.csv", "-k", "0"], "positive"),
    "unknown covariance": (
        ["select", "{d}/three_rows.csv", "--covariance", "full,round"],
        "unknown type 'round'",
    ),
    "singular fit": (["fit", "{d}/constant.csv", "-k", "1"], ""),
    "NUTS without prior": (
        ["fit", "{d}/three_rows.csv", "-k", "1", "--prior", "none", "--nuts"],
        "prior",
    ),
    "output is a file": (
        ["fit", "{d}/three_rows.csv", "-k", "1", "--out", "{d}/a_file"],
        "not a folder",
    ),
}


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    for name, text in BAD_FILES.items():
        (d / name).write_text(text)
    (d / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (d / "a_file").write_text("I am a file")
    return d


@pytest.mark.parametrize("case", BAD_CASES, ids=list(BAD_CASES))
def test_bad_input_one_line_nothing_written(case, bad_dir, tmp_path, capsys):
    if case == "NUTS without prior":
        pytest.importorskip("bayesgmm.nuts")
    argv, expected = BAD_CASES[case]
    argv = [a.format(d=bad_dir) for a in argv]
    out = tmp_path / "out"
    if "--out" not in argv:
        argv += ["--out", str(out)]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err)
    assert expected in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_usage_errors_exit_2(capsys):
    assert cli.main(["fit", "x.csv", "--out", "o"]) == 2  # -k is required
    assert "required" in capsys.readouterr().err
    assert cli.main(["fit", "x.csv", "-k", "2", "--out", "o", "--covariance", "round"]) == 2
    assert cli.main([]) == 2
    assert cli.main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out


# ----------------------------------------------------------------------------- subprocess


def _entry_point() -> list[str]:
    script = Path(sys.executable).with_name("bayesgmm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bayesgmm"]


def test_console_script_help():
    result = subprocess.run(
        [*_entry_point(), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    for command in ("demo", "fit", "select"):
        assert command in result.stdout


def test_console_script_bad_input_has_no_traceback(bad_dir, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bayesgmm",
            "fit",
            str(bad_dir / "missing.csv"),
            "-k",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"bayesgmm: error: column 'b' of {bad_dir / 'missing.csv'} has 1 missing value(s), the "
        "first in data row 2 (line 3); remove or impute them first"
    ]
    assert not out.exists()
