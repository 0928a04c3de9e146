"""A progress bar for compiled sampling loops (tqdm, updated between compiled chunks)."""

from __future__ import annotations

import os
import sys
import threading

# With progress_bar=None a bar is shown on a terminal when a run has at least this many
# chain-iterations.
PROGRESS_MIN_ITERATIONS = 1000


def show_progress(progress_bar: bool | None, num_chains: int, n_iter: int) -> bool:
    if progress_bar is not None:
        return bool(progress_bar)
    if "CI" in os.environ or "PYTEST_XDIST_WORKER" in os.environ:
        return False
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty and num_chains * n_iter >= PROGRESS_MIN_ITERATIONS


class Progress:
    """A tqdm bar updated between compiled chunks (or nothing when disabled)."""

    def __init__(self, enabled: bool, total: int, num_warmup: int):
        self.bar = None
        self.num_warmup = num_warmup
        self._lock = threading.Lock()  # chains may report from several threads
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="compiling", unit="it", file=sys.stderr)

    def update(self, done_in_chain: int, n: int, divergences: int, chain: int | None) -> None:
        if self.bar is None:
            return
        phase = "warmup" if done_in_chain <= self.num_warmup else "sample"
        prefix = "" if chain is None else f"chain {chain} "
        with self._lock:
            self.bar.set_description(f"{prefix}{phase}", refresh=False)
            self.bar.set_postfix(divergences=divergences, refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
