"""Report folders: written whole into a hidden temporary folder, then moved into place.

Also the files of a fitted mixture: params.json, summary.csv, components.csv, memberships.csv
and the two figures.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import interrupt
from .console import CLIError, components_table

# ----------------------------------------------------------------------------- the folder


def check_out_dir(path: Path, force: bool) -> None:
    """Fail early if ``path`` cannot take a report: a file, or a non-empty folder without force."""
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise CLIError(f"--out {path} exists and is not a folder")
        if not force and any(path.iterdir()):
            raise CLIError(
                f"output folder {path} is not empty; choose another --out or pass --force to "
                "replace it"
            )


def fresh_folder(base: Path) -> Path:
    """``base`` if it is free (or an empty folder), else ``base-2``, ``base-3``, ..."""
    candidate, i = base, 1
    while candidate.exists() and not (candidate.is_dir() and not any(candidate.iterdir())):
        i += 1
        candidate = base.with_name(f"{base.name}-{i}")
    return candidate


def write_report(path: Path, force: bool, write: Callable[[Path], list[str]]) -> list[str]:
    """Call ``write(tmp)`` on a fresh temporary folder next to ``path``, then move it into place.

    Either the whole report lands at ``path`` or nothing does: a failure or Ctrl-C while
    writing removes the temporary folder, and an existing folder is replaced (``force``) only
    once the new report is complete. Once the report is in place, the run has succeeded.
    """
    check_out_dir(path, force)
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with interrupt.writing():
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            files = write(tmp)
            tmp.chmod(0o777 & ~_umask())
            interrupt.check()  # the last moment at which Ctrl-C stops the run
            _move_into_place(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        interrupt.complete()
    return files


def _move_into_place(tmp: Path, path: Path) -> None:
    if not path.exists():
        os.rename(tmp, path)
        return
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except OSError:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- a fit's files


def write_fit_files(folder: Path, res, X, names, meta: dict, table) -> list[str]:
    import pandas as pd

    from ..plotting import plot_history, plot_mixture, save_figures

    params = params_json(res, X, names, meta)
    (folder / "params.json").write_text(dumps(params) + "\n", encoding="utf-8")
    float_format = _float_format(res)
    if table is None:
        table = pd.DataFrame({"em": flat_params(res)})
    table.to_csv(folder / "summary.csv", index_label="parameter", float_format=float_format)
    components = components_table(res, X, names)
    components.to_csv(folder / "components.csv", index=False, float_format=float_format)
    proba = np.asarray(res.predict_proba(X), np.float64)
    memberships = pd.DataFrame(proba, columns=[f"p{k}" for k in range(proba.shape[1])])
    memberships.insert(0, "component", proba.argmax(axis=1))
    memberships.to_csv(folder / "memberships.csv", index_label="row", float_format="%.6g")
    figs = save_figures(
        {
            "mixture.png": plot_mixture(res, X, feature_names=names),
            "history.png": plot_history(res),
        },
        folder,
    )
    return ["params.json", "summary.csv", "components.csv", "memberships.csv", *figs]


def data_meta(path: Path, names, X) -> dict:
    return {"file": str(path), "columns": names, "n_rows": int(X.shape[0])}


def params_json(res, X, names, meta: dict) -> dict:
    import jax.numpy as jnp

    import bayesgmm

    out = {"bayesgmm_version": bayesgmm.__version__, **meta}
    out.update(res.to_dict())
    out.update(
        n_samples=X.shape[0],
        n_parameters=res.n_parameters,
        bic=res.bic(X),
        aic=res.aic(X),
        dtype=str(jnp.result_type(float)),
    )
    if res.prior is not None:
        out["prior_hyperparameters"] = {
            "weight_concentration": float(res.prior.alpha),
            "mean_precision": float(res.prior.kappa),
            "mean": np.asarray(res.prior.mean).tolist(),
            "degrees_of_freedom": float(res.prior.dof),
            "scale": np.asarray(res.prior.scale).tolist(),
        }
    return finite_json(out, 9 if _float_format(res) else 17)


def flat_params(res) -> dict[str, float]:
    """Every parameter entry by name, as ``bayesgmm.compare`` labels them: ``means[0, 1]``."""
    out = {}
    for site, value in res.params.items():
        arr = np.asarray(value, np.float64)
        for idx in np.ndindex(arr.shape):
            out[f"{site}[{', '.join(map(str, idx))}]"] = float(arr[idx])
    return out


def _float_format(res) -> str | None:
    """float32 fits: 9 significant digits (exact for float32, without float64 noise)."""
    return "%.9g" if np.asarray(res.means).dtype == np.float32 else None


# ----------------------------------------------------------------------------- JSON


def dumps(obj) -> str:
    """JSON with two-space indents, each innermost list of numbers on one line."""
    text = json.dumps(obj, indent=2)
    return re.sub(
        r"\[\s*([^\[\]{}\"]*?)\s*\]",
        lambda m: (
            "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]"
            if m.group(1).strip()
            else "[]"
        ),
        text,
    )


def finite_json(obj, digits: int = 17):
    """Floats rounded to ``digits`` significant digits; NaN and infinities (not JSON) to None."""
    if isinstance(obj, dict):
        return {k: finite_json(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v, digits) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
