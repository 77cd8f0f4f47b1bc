"""How portnn's command and its example scripts end: an error is one line on stderr,
``PROG: error: ...``, with exit status 1 (``PORTNN_DEBUG=1`` shows the traceback), or 2 for
a bad command line (``ArgumentParser``); Ctrl-C prints ``PROG: interrupted`` and exits 130;
output closed early (``| head``) ends quietly with 0. ``run_script(main)`` gives a script that
behaviour; ``check_output`` refuses an output file that cannot be written before the work
that makes it, not after."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from . import distributed
from ._npz import check_writable

__all__ = [
    "ArgumentParser",
    "UsageError",
    "check_output",
    "example_parser",
    "message",
    "one_line",
    "parse_example",
    "report",
    "run_script",
]


class UsageError(Exception):
    """A bad command line: ``report`` prints it in one line with exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, its errors in one line: a bad command line raises ``UsageError``
    (``MESSAGE (see 'PROG --help')``), which ``report`` prints as ``PROG: error: ...`` with
    exit status 2, instead of the usage text. Its sub-commands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def message(exc: BaseException) -> str:
    from .datasets.fashion import URL_ENV
    from .io import ModelFileError

    if isinstance(exc, FileNotFoundError) and exc.filename is not None:
        return f"{exc.filename}: no such file or directory"
    expected = (ModelFileError, OSError, ValueError, ImportError, RuntimeError)
    if isinstance(exc, (*expected, ArithmeticError, TypeError)):
        # base_url= is fashion_mnist()'s argument: from a command, the variable is the way
        return one_line(exc).replace(f"base_url= or {URL_ENV}", URL_ENV)
    return f"unexpected {type(exc).__name__}: {one_line(exc)} (set PORTNN_DEBUG=1 for details)"


def report(run: Callable[[], int | None], prog: str) -> int:
    """``run()``'s exit status, its failures reported in one line on stderr: an error as
    ``PROG: error: ...`` with 1 (``PORTNN_DEBUG=1``: the traceback), a ``UsageError`` as
    ``PROG: error: ...`` with 2, Ctrl-C as ``PROG: interrupted`` with 130, and output closed
    early (``| head``) quietly with 0. ``sys.exit(n)`` (argparse's ``--help``) gives n."""
    try:
        code = run()
        sys.stdout.flush()  # a closed pipe shows here, not in Python's own flush at exit
        return code or 0
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):
            raise  # sys.exit("message"): Python prints it and exits with 1
        return exc.code or 0
    except BrokenPipeError:
        # Whoever reads has seen enough. Python flushes stdout again at exit: point it at
        # os.devnull so that flush finds no closed pipe (the recipe of Python's signal docs).
        with contextlib.suppress(AttributeError, OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get("PORTNN_DEBUG"):
            raise
        if distributed.should_report(exc):  # aborts an MPI job if this rank failed alone
            print(f"{prog}: error: {message(exc)}", file=sys.stderr)
        return 1


def run_script(main: Callable[[], int | None], prog: str | None = None) -> NoReturn:
    """Run a script's ``main()`` as the ``portnn`` command runs its commands, then exit:
    ``if __name__ == "__main__": run_script(main)``. An error is one line on stderr,
    ``PROG: error: ...``, exit status 1 (set ``PORTNN_DEBUG=1`` for the traceback); Ctrl-C
    prints ``PROG: interrupted`` and exits 130; a closed pipe (``| head``) exits 0 quietly.
    ``main`` returns None or an exit status; ``prog`` defaults to the script's file name."""
    raise SystemExit(report(main, prog or Path(sys.argv[0]).name))


def check_output(path: str | os.PathLike[str] | None, option: str, *, figure: bool = False) -> None:
    """Fail before a run, not after it, when the file ``option`` names (``--save PATH``)
    cannot be written at ``path``: a folder, a missing folder or one without write
    permission raise an OSError naming both; a ``figure`` needs matplotlib too (an
    ImportError that says how to install it) and a suffix naming a format it writes (else a
    UsageError: ``--plot out.txt`` is a bad command line). None (the option not given) passes."""
    if path is None:
        return
    try:
        check_writable(Path(path).expanduser())
    except OSError as exc:
        raise type(exc)(f"{option}: {exc}") from exc
    if figure:
        from .plot import formats

        known = formats()
        suffix = Path(path).suffix.lower().removeprefix(".")
        if suffix not in known:  # matplotlib would refuse it, or append .png, after the run
            raise UsageError(
                f"{option} {path}: end the name in the format to draw, .png or one of "
                f"{', '.join('.' + f for f in known if f != 'png')}"
            )


def example_parser(
    description: str,
    *,
    epochs: int,
    print_every: int = 1000,
    print_every_help: str = "the book prints every 100",
    plot: str = "the decision regions",
) -> argparse.ArgumentParser:
    """The options every example script takes: ``--backend``, ``--epochs``, ``--print-every``
    and ``--plot PATH`` (saving ``plot`` to a PNG). Add the script's own, then
    ``parse_example``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", help="numpy, array_api_strict, torch or cupy")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--print-every", type=int, default=print_every, help=print_every_help)
    parser.add_argument("--plot", metavar="PATH", help=f"save {plot} to a PNG")
    return parser


def parse_example(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The command line's options, with ``--backend`` (when given) selected."""
    args = parser.parse_args()
    if args.backend:
        from .backend import set_backend

        set_backend(args.backend)
    return args
