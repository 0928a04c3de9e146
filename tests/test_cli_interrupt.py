"""Ctrl-C on the command line, for real: SIGINT sent to ``python -m bayesgmm`` at many moments.

Whenever it comes (while JAX loads, while the data is read, during compilation and fitting, while
the report is written) the run must end with exit status 130, the one line
``bayesgmm: interrupted`` on stderr, no traceback, and no report folder or temporary folder
left behind. The subprocesses run without the persistent compilation cache, so that every
moment of a run is a real one (and no cache entry is cut in half).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

MESSAGE = "bayesgmm: interrupted"
ROOT = Path(__file__).resolve().parents[1]

# A selection over several candidates: it compiles several programs, so the run lasts well past
# the latest delay below on any machine, and each interrupted run costs only its delay.
SELECT = ["select", "{csv}", "--max-components", "3", "--covariance", "full,diag"]
DELAYS = (1.0, 2.4)
MORE_DELAYS = (0.6, 1.5, 2.0, 2.2, 2.6, 3.0, 4.0)


@pytest.fixture(scope="module")
def csv(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0.0, 1.0, (15, 2)), rng.normal(4.0, 1.0, (15, 2))]
    path = tmp_path_factory.mktemp("data") / "small.csv"
    np.savetxt(path, X, delimiter=",", header="a,b", comments="", fmt="%.4f")
    return path


@pytest.fixture(scope="module")
def faithful_csv(tmp_path_factory, faithful) -> Path:
    """The data (and so the compiled programs) of test_cli's fits."""
    path = tmp_path_factory.mktemp("data") / "faithful.csv"
    np.savetxt(path, faithful, delimiter=",", header="eruptions,waiting", comments="")
    return path


def _env(cache: bool = False) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}  # lines as printed
    if not cache:
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    return env


class Run:
    """``python [-c code] -m bayesgmm ARGS`` in a subprocess, its stdout read line by line."""

    def __init__(self, argv: list[str], code: str | None = None, cache: bool = False):
        start = [sys.executable, "-c", code] if code else [sys.executable, "-m", "bayesgmm"]
        self.proc = subprocess.Popen(
            [*start, *argv],
            env=_env(cache),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.signalled_at: float | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, prefix: str, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while not any(line.startswith(prefix) for line in self.lines):
            assert self.proc.poll() is None, f"ended before printing {prefix!r}: {self.lines}"
            assert time.monotonic() < end, f"no {prefix!r} after {timeout} s"
            time.sleep(0.02)

    def interrupt(self) -> None:
        assert self.proc.poll() is None, "the run ended before the interrupt"
        self.proc.send_signal(signal.SIGINT)
        self.signalled_at = time.monotonic()

    def finish(self, timeout: float = 300.0) -> tuple[int, str, str]:
        _, err = self.proc.communicate(timeout=timeout)
        self._reader.join(timeout)
        return self.proc.returncode, "".join(self.lines), err


def assert_interrupted(run: Run, out: Path) -> str:
    code, stdout, err = run.finish()
    if run.signalled_at is not None:  # at once, not when the compiled program returns
        assert time.monotonic() - run.signalled_at < 10.0, "Ctrl-C took too long to end the run"
    assert "Traceback" not in err
    assert err.splitlines() == [MESSAGE], err
    assert code == 130
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []
    return stdout


def _startup_time() -> float:
    """How long the interpreter itself takes to start here (site, the editable install)."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import bayesgmm.cli"], env=_env(), check=True)
    return time.monotonic() - t0


def _interrupt_select_after(delay: float, csv: Path, out: Path) -> None:
    run = Run([a.format(csv=csv) for a in SELECT] + ["--out", str(out)])
    time.sleep(delay)
    run.interrupt()
    assert_interrupted(run, out)


def test_interrupt_while_the_libraries_load(csv, tmp_path):
    # As soon as the package's own code runs, before JAX is imported. Python's own start-up,
    # before any line of bayesgmm, answers Ctrl-C with its own traceback (frames of runpy only);
    # on a busy machine the start-up of this run can outlast the one measured, so such a run is
    # repeated later in the start-up instead of being counted as a failure of the package.
    delay = 1.5 * _startup_time()
    for attempt in range(4):
        out = tmp_path / f"out{attempt}"
        run = Run([a.format(csv=csv) for a in SELECT] + ["--out", str(out)])
        time.sleep(delay)
        run.interrupt()
        code, _, err = run.finish()
        if code != 130 and "Traceback" in err and "bayesgmm" not in err:
            delay *= 1.5  # interrupted inside Python's start-up, before the package ran
            continue
        assert "Traceback" not in err
        assert err.splitlines() == [MESSAGE], err
        assert code == 130
        assert not out.exists()
        return
    pytest.fail(f"every interrupt came before the package's code ran (last delay {delay:.1f} s)")


@pytest.mark.parametrize("delay", DELAYS)
def test_interrupt_at_fixed_delays(delay, csv, tmp_path):
    _interrupt_select_after(delay, csv, tmp_path / "out")


@pytest.mark.long  # the moments in between DELAYS, the start-up and fitting tests
@pytest.mark.parametrize("delay", MORE_DELAYS)
def test_interrupt_at_more_delays(delay, csv, tmp_path):
    _interrupt_select_after(delay, csv, tmp_path / "out")


def test_interrupt_while_fitting(csv, tmp_path):
    out = tmp_path / "out"
    run = Run([a.format(csv=csv) for a in SELECT] + ["--out", str(out)])
    run.wait_for("Read ")  # the data is in; compilation and fitting follow
    time.sleep(0.3)
    run.interrupt()
    stdout = assert_interrupted(run, out)
    assert "Fitted" not in stdout


# The report's writing, interrupted from inside: plot_history (called while the report folder
# is being written) sends the SIGINT itself, then lets the writing go on.
INTERRUPT_WHILE_WRITING = """
import os, signal, sys, time
import bayesgmm.plotting as plotting
real = plotting.plot_history
def plot_history(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)
    return real(*args, **kwargs)
plotting.plot_history = plot_history
from bayesgmm.cli import main
sys.exit(main())
"""


def test_interrupt_while_writing_leaves_nothing(faithful_csv, tmp_path):
    out = tmp_path / "out"
    argv = ["fit", str(faithful_csv), "-k", "2", "--out", str(out)]
    # Interrupted after compiling, so the compilation cache (if any) may serve this run.
    run = Run(argv, code=INTERRUPT_WHILE_WRITING, cache=True)
    stdout = assert_interrupted(run, out)
    # What reached stdout before the exit depends on buffering; the report must not be announced.
    assert "Report written" not in stdout


def test_interrupt_while_writing_in_process(faithful_csv, tmp_path, capsys, monkeypatch):
    """``main(argv)`` called in-process (no watchdog): the same outcome, by exception."""
    from bayesgmm import cli, plotting

    real = plotting.plot_history

    def plot_history(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(plotting, "plot_history", plot_history)
    out = tmp_path / "out"
    # Python's default handler, or SIG_IGN when the suite runs as a background job of a shell
    before = signal.getsignal(signal.SIGINT)
    code = cli.main(["fit", str(faithful_csv), "-k", "2", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 130
    assert err.splitlines() == [MESSAGE]
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []
    assert signal.getsignal(signal.SIGINT) is before  # given back
