"""Where a benchmark's figures came from: the commit of the code it ran (no heavy imports)."""

from __future__ import annotations

import subprocess
from pathlib import Path


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
