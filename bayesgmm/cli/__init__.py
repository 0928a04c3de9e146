"""The ``bayesgmm`` command line: ``demo``, ``fit`` and ``select``.

One module per command (:mod:`.fit`, :mod:`.select`, :mod:`.demo`, each with
``register_parser(subparsers)`` and ``run(args)``), over shared pieces: :mod:`.read` (the CSV
input and its checks), :mod:`.report` (report folders, written whole or not at all),
:mod:`.console` (what is printed) and :mod:`.interrupt` (Ctrl-C). This module sets up the
process and turns every failure into one line on stderr and an exit status.

Every command reads its data, fits, and only then writes its report: into a hidden temporary
folder next to ``--out``, renamed into place at the end, so a failure never leaves a half-written
report. Bad input ends with a one-line message on stderr and a non-zero exit status (2 for a
usage error, 1 for anything else); Ctrl-C ends with one line and status 130.

Only the standard library is imported here: ``main`` takes over Ctrl-C before JAX and the other
heavy libraries load, and loads them inside its error handling.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from . import interrupt

__all__ = ["build_parser", "main"]

COMMANDS = ("demo", "fit", "select")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success).

    ``argv=None`` means a whole process (the ``bayesgmm`` script, ``python -m bayesgmm``):
    the command line of the process, and Ctrl-C ends it at once (see :mod:`.interrupt`).
    """
    process = argv is None
    restore = interrupt.install(watchdog=process)
    try:
        return _run(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:
        return interrupt.report()
    finally:
        if process:
            interrupt.complete()  # a Ctrl-C during the interpreter's exit changes nothing
        else:
            restore()


def _run(argv: list[str]) -> int:
    try:
        from .console import one_line_warnings

        parser = build_parser()  # imports the commands, and with them JAX
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    except Exception as exc:
        return _failure(exc)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        _setup_libraries()
        interrupt.check()
        with one_line_warnings():
            code = args.run(args)
        interrupt.check()
        return code
    except Exception as exc:
        return _failure(exc)


def _failure(exc: Exception) -> int:
    from .console import CLIError, error, one_line

    if isinstance(exc, CLIError | ValueError | OSError | ImportError):
        error(one_line(exc))
        return 1
    # A bug: still one line, with a way to see the traceback.
    if os.environ.get("BAYESGMM_DEBUG"):
        raise exc
    error(
        f"internal error ({type(exc).__name__}: {one_line(exc)}); "
        "set BAYESGMM_DEBUG=1 to see the traceback"
    )
    return 1


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (the command's --help has the rest), exit status 2."""

    def error(self, message: str):
        message = " ".join(message.split())
        self.exit(2, f"bayesgmm: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from . import demo, fit, select

    parser = _Parser(
        prog="bayesgmm",
        description=(
            "Gaussian mixture models on JAX and NumPyro: MAP-EM fits, model selection by BIC, "
            "and full posteriors by NUTS from the same model."
        ),
        epilog=(
            "Examples:\n"
            "  bayesgmm demo --quick\n"
            "  bayesgmm fit data.csv -k 3 --out fit3\n"
            "  bayesgmm fit data.csv -k 2 --nuts --columns eruptions,waiting --out post2\n"
            "  bayesgmm select data.csv --max-components 6 --covariance full,diag --out sel\n"
            "Run 'bayesgmm COMMAND --help' for the options of a command."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in (demo, fit, select):
        command.register_parser(subparsers)
    return parser


def _setup_libraries() -> None:
    """Keep JAX's start-up chatter (no GPU found, and so on) out of the output; draw off-screen."""
    for name in ("jax", "jax._src.xla_bridge", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "matplotlib.pyplot" not in sys.modules:  # a fresh process: no window, ever
        import matplotlib

        matplotlib.use("Agg")
