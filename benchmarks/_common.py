"""What the benchmark scripts share, with no heavy imports.

- Where a figure came from: the commit of the code that ran, the machine, its load.
- Fresh Python processes for cold-start timings: an environment without the caller's JAX, XLA
  and bayesgmm settings, and the JSON line a child prints last.
- Markdown tables for the README.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit(path: str | Path = Path(__file__).parent) -> str:
    """The short commit hash of the repository holding ``path``, or ``"unknown"``."""
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    """The platform, the number of CPUs and the Python version, on one line."""
    return f"{platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}"


def load() -> str:
    """The 1-, 5- and 15-minute load averages: timings on a busy machine are slower."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def clean_env(**settings: str) -> dict[str, str]:
    """The caller's environment for a child, plus ``settings``.

    The caller's JAX, XLA and bayesgmm variables and its cache home are dropped: a child must
    not find the caller's caches or flags. The repository goes first on ``PYTHONPATH``.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JAX_", "BAYESGMM_", "XLA_")) and k != "XDG_CACHE_HOME"
    }
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env | settings


def run_child(code: str, *args: str, env: dict[str, str]) -> dict:
    """Run ``code`` in a fresh interpreter with ``args``; the JSON object it printed last."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        raise RuntimeError(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown_table(columns: list[str], rows: list[list]) -> str:
    """A Markdown table: a header row, its rule and one line per row."""
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
