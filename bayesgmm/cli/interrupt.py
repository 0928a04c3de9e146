"""Ctrl-C (SIGINT) for the command line: one line, exit status 130, nothing half-written.

Python turns SIGINT into a ``KeyboardInterrupt`` only when the main thread next runs Python
bytecode, and that can be anywhere. JAX registers a garbage-collector callback
(``_xla_gc_callback`` in ``gc.callbacks``); an exception raised while it runs is reported as
"Exception ignored in ..." (a traceback on stderr) and dropped, so a Ctrl-C that lands there
was lost and the run went on to exit 0. During a compiled EM fit, a NUTS run or an XLA
compilation the main thread sits in C++ for seconds or minutes and the exception waits. So in a
command-line process the handler never raises: it records the signal, and a watchdog thread
(woken through :func:`signal.set_wakeup_fd` the moment the signal arrives, whatever the main
thread is doing) prints one line and ends the process with status 130. The only thing on disk
that an exit could leave half-done is a report being written, so :func:`writing` holds the
watchdog off while a report folder is written; the writer checks :func:`check` before it moves
the folder into place and removes its temporary folder on the way out.

In-process calls (``main(argv)`` from tests or a notebook) get no watchdog: the handler raises
``KeyboardInterrupt`` as Python's own does, except inside :func:`writing`, where it is deferred
to the next :func:`check`; the commands call :func:`check` after each stage, which also
catches an interrupt that library code swallowed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

EXIT_STATUS = 130  # 128 + SIGINT, what a shell reports for a program that Ctrl-C ended
MESSAGE = "bayesgmm: interrupted"

_lock = threading.Lock()  # held while a report is written, and to decide who reports
_state = {"pending": False, "done": False, "raise": True, "writing": 0}


def install(watchdog: bool):
    """Take over SIGINT; returns a function that undoes it. ``watchdog``: a whole process."""
    _state.update(pending=False, done=False, writing=0)
    _state["raise"] = not watchdog
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signal handlers belong to the main thread
    previous = signal.signal(signal.SIGINT, _handler)
    if not watchdog:
        return lambda: signal.signal(signal.SIGINT, previous)
    # A pipe of raw descriptors rather than a socket pair: no object for the interpreter's exit
    # to finalise (and warn about) while the watchdog still reads.
    receive, send = os.pipe()
    os.set_blocking(send, False)
    previous_fd = signal.set_wakeup_fd(send, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(receive,), name="sigint-watchdog", daemon=True).start()

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)
        signal.set_wakeup_fd(previous_fd)
        os.close(send)  # the watchdog reads b"" and the thread ends

    return restore


def _handler(signum, frame) -> None:
    if _state["done"]:
        return  # the run is complete (its report is in place): nothing left to stop
    _state["pending"] = True
    if _state["raise"] and not _state["writing"]:
        raise KeyboardInterrupt


def _watch(receive: int) -> None:
    try:
        while data := os.read(receive, 64):
            if signal.SIGINT in data:
                with _lock:  # waits while a report folder is being written or moved
                    if _state["done"]:
                        return
                    _state["done"] = True
                    os.write(2, (MESSAGE + "\n").encode())
                    os._exit(EXIT_STATUS)
    except OSError:
        pass
    finally:
        os.close(receive)


def check() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C came since the last check (a stage boundary)."""
    if _state["pending"] and not _state["done"]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def writing():
    """While a report is written: the watchdog waits, and an interrupt waits for :func:`check`."""
    with _lock:
        _state["writing"] += 1
        try:
            yield
        finally:
            _state["writing"] -= 1


def complete() -> None:
    """The report is in place: from now on Ctrl-C changes nothing (the run exits 0)."""
    _state["done"] = True


def report() -> int:
    """Print the one line (unless the watchdog did) and return the exit status."""
    with _lock:
        if not _state["done"]:
            _state["done"] = True
            print(MESSAGE, file=sys.stderr, flush=True)
    return EXIT_STATUS
