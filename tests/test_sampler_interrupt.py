"""Ctrl-C during sampling stops ``sample_posterior`` at once, although the chains run in threads.

The chains of ``chain_method="sequential"`` run in worker threads; the main thread waits for them
in short slices and, on ``KeyboardInterrupt``, tells them to stop at their next chunk. Checked in
a subprocess (a signal sent inside a pytest worker would reach pytest): a warm call that would
sample for minutes must raise ``KeyboardInterrupt`` within seconds of the signal.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = r"""
import os, signal, sys, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)
import numpy as np
import bayesgmm as bg
X = np.random.default_rng(0).normal(size=(60, 1))
mix = bg.Mixture(2, "diag", prior="default")
kw = dict(num_chains=2, num_warmup=20, progress_bar=False, chain_method="sequential")
mix.sample_posterior(X, rng_key=0, num_samples=20, **kw)  # compiles; the next call reuses it
def later():
    time.sleep(1.5)
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=later, daemon=True).start()
t = time.perf_counter()
try:
    mix.sample_posterior(X, rng_key=1, num_samples=5_000_000, **kw)
except KeyboardInterrupt:
    print(f"interrupted {time.perf_counter() - t:.2f}")
    # The chain threads must have stopped too: nothing but the main thread is left running
    # bayesgmm's chains.
    time.sleep(0.5)
    left = [th.name for th in threading.enumerate() if th.name.startswith("bayesgmm-chain")]
    print("threads", len(left))
    sys.exit(0)
print("not interrupted")
sys.exit(1)
"""


@pytest.mark.slow
def test_interrupt_stops_threaded_chains():
    if sys.platform == "win32":
        pytest.skip("SIGINT to the own process is POSIX-only")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    lines = dict(line.split() for line in out.stdout.splitlines() if " " in line)
    # 5 million draws would take many minutes; the interrupt must end the call within seconds.
    assert float(lines["interrupted"]) < 10.0, out.stdout
    assert lines["threads"] == "0", out.stdout
