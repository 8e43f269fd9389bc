"""Command-line plumbing shared by ``jsae`` (:mod:`jsae.sweeps`) and ``jsae embed`` (:mod:`jsae.embed.cli`).

* parsers named ``jsae <command>`` whose usage errors are one line (:class:`ArgumentParser`);
* help with ``(default: X)`` shown once, only when worth showing (:class:`HelpFormatter`);
* :func:`run`: parse, run the command, print a :class:`~jsae.errors.JsaeError` as one line
  ``PROG: error: MESSAGE`` (exit 2), end quietly on a closed stdout pipe (exit 141);
  a command stopped by a signal is one line ``PROG: interrupted …`` and exit status
  ``128 + signal`` (130 for Ctrl-C, 143 for SIGTERM);
* :class:`SignalStop`: SIGINT / SIGTERM ask a long command (``jsae sweep``, ``jsae embed``)
  to stop at its next safe point; a second signal stops it at once.

The options the ``jsae`` commands share live in :mod:`jsae.sweeps.conventions`.
"""
from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import textwrap
import threading
import warnings
from typing import Any, Callable, Sequence

from .errors import (EXIT_ERROR, Interrupted, JsaeError, StoppedAtOnce, one_line, print_error, signal_exit_status,
                     storage_error)

__all__ = ["EXIT_ERROR", "EXIT_PIPE", "EXIT_SIGINT", "HelpFormatter", "ArgumentParser", "add_commands", "add_command",
           "run", "SignalStop"]

#: exit status after a closed output pipe: 128 + SIGPIPE, what a process killed by SIGPIPE reports
EXIT_PIPE = 141
#: exit status after Ctrl-C: 128 + SIGINT (SIGTERM gives 143)
EXIT_SIGINT = signal_exit_status(signal.SIGINT)


def _format_default(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_format_default(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written and appends `` (default: X)`` to an option's help
    only when X is worth showing (not None, False, empty or suppressed) and the help text
    does not already speak of its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default is argparse.SUPPRESS
                or (isinstance(default, (list, tuple, str)) and not default) or "default" in text.lower()):
            return text
        return f"{text} (default: {_format_default(default).replace('%', '%%')})"


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser with :class:`HelpFormatter` (its subparsers too) whose usage
    errors are one line ``PROG: error: MESSAGE`` (exit status 2) instead of the usage text."""

    def __init__(self, *args: Any, formatter_class: type = HelpFormatter, **kwargs: Any):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_ERROR, f"{self.prog}: error: {one_line(message)} (see `{self.prog} --help`)\n")

    def _print_message(self, message: str, file: Any = None) -> None:
        # argparse swallows OSError here; a closed pipe must reach run() (exit status 141)
        if message:
            (file or sys.stderr).write(message)


def add_commands(parser: argparse.ArgumentParser, dest: str, help: str) -> argparse._SubParsersAction:
    """The (required) subcommands of ``parser``; their parsers are ``PROG <name>``."""
    return parser.add_subparsers(dest=dest, required=True, metavar="COMMAND", help=help)


def add_command(sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int], help: str,
                *, description: str | None = None, overrides: str | None = None,
                **kwargs: Any) -> argparse.ArgumentParser:
    """Declare the command ``name`` that :func:`run` runs as ``func(args)``.

    ``overrides``: the name of a positional list (``nargs="*"``) that also takes the
    ``key=value`` words given after the options (``jsae sweep CONFIG --out R k=v``).
    """
    p = sub.add_parser(name, help=help, description=textwrap.fill(description or help, 100), **kwargs)
    p.set_defaults(func=func, command_parser=p, overrides_dest=overrides)
    return p


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the command; returns the exit
    status: 0, 2 on an error (one line on stderr), 141 when stdout's pipe was closed,
    130 / 143 when SIGINT / SIGTERM stopped it (one line on stderr)."""
    try:
        status = _parse_and_run(parser, list(sys.argv[1:] if argv is None else map(str, argv)))
        # Free what the command left (tables, store handles) while the libraries are whole: a native
        # thread pool torn down during interpreter shutdown can abort the finished process with
        # "terminate called without an active exception" (Arrow's shutdown race, apache/arrow#34314).
        # A write abandoned half-way (an async checkpoint save cut by a full disk or a signal: already its
        # one line) leaves coroutines that were never awaited; their RuntimeWarning, when collected now or
        # at exit, would only repeat that line.
        warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited", category=RuntimeWarning)
        gc.collect()
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_PIPE


def _parse_and_run(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    try:
        args, extra = parser.parse_known_args(argv)
        command_parser = getattr(args, "command_parser", parser)
        dest = getattr(args, "overrides_dest", None)
        if extra and dest:
            options = [e for e in extra if e.startswith("-")]
            if options:  # only what is not an override is unrecognised
                command_parser.error(f"unrecognized arguments: {' '.join(options)}")
            bare = [e for e in extra if "=" not in e]
            if bare:  # a word after the options is an override missing its value: name it, not the valid ones
                command_parser.error(f"override {bare[0]!r} is not KEY=VALUE; give it a value, e.g. "
                                     f"{bare[0]}=VALUE (train.steps=2000, grid.k=[5,10])")
            setattr(args, dest, [*getattr(args, dest), *extra])
        elif extra:
            command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as stop:  # --help / --version (0), or a usage error already printed (2)
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else EXIT_ERROR)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(command_parser.prog, warnings.showwarning)
            return int(args.func(args) or 0)
    except Interrupted as err:  # stopped cleanly on a signal: what was kept, and how to go on
        print(f"{command_parser.prog}: {one_line(err)}", file=sys.stderr)
        return err.exit_status
    except JsaeError as err:  # bad input, files or environment: one line; anything else is a bug (traceback)
        code = print_error(err, command_parser.prog)
        return int(getattr(err, "exit_status", code))
    except Exception as err:  # a full disk, a read-only or forbidden folder that no writer named: still one line
        converted = storage_error(err, getattr(err, "filename", None) or "the command's output")
        if converted is None:
            raise
        return print_error(converted, command_parser.prog)
    except KeyboardInterrupt as err:  # Ctrl-C (a second signal: StoppedAtOnce): one line, not a traceback
        message = one_line(err) if isinstance(err, StoppedAtOnce) else "interrupted"
        print(f"{command_parser.prog}: {message}", file=sys.stderr)
        return getattr(err, "exit_status", EXIT_SIGINT)


class SignalStop:
    """``with SignalStop() as stop:`` — SIGINT and SIGTERM set ``stop.signum`` instead of ending
    the process; the code in the block checks :attr:`requested` at its safe points (after a
    training host call, between shards), saves, and raises :class:`~jsae.errors.Interrupted`
    with :attr:`exit_status`. A second signal while a stop is pending raises
    :class:`~jsae.errors.StoppedAtOnce` at once (the next run resumes from what was saved).

    The previous handlers are restored when the block ends. Outside the main thread (where
    Python cannot install handlers) it does nothing and :attr:`requested` stays False.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a signal asked to stop."""
        return self.signum is not None

    @property
    def exit_status(self) -> int:
        """``128 + signal`` of the first signal (130 for SIGINT, 143 for SIGTERM)."""
        return signal_exit_status(self.signum if self.signum is not None else signal.SIGINT)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise StoppedAtOnce(signum)
        self.signum = signum

    def __enter__(self) -> "SignalStop":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()


#: the folder holding jsae's top-level packages, and their names: a warning raised from a file
#: of these is jsae's own
_HOME = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OWN_PACKAGES = ("jsae",)


def _is_own(filename: str) -> bool:
    try:
        rel = os.path.relpath(os.path.abspath(filename), _HOME)
    except ValueError:  # another drive
        return False
    return rel.split(os.sep, 1)[0] in _OWN_PACKAGES


def _one_line_warning(prog: str, fallback: Callable[..., Any]) -> Callable[..., Any]:
    """``warnings.showwarning`` for a command: a ``UserWarning`` jsae raises (about the data,
    the models or the results) is one line ``PROG: warning: …`` on stderr, without the
    source line; other categories and libraries' warnings keep Python's format."""
    def show(message, category, filename, lineno, file=None, line=None):
        if (issubclass(category, UserWarning) and not issubclass(category, (DeprecationWarning, FutureWarning))
                and _is_own(filename)):
            print(f"{prog}: warning: {one_line(str(message))}", file=file or sys.stderr)
        else:
            fallback(message, category, filename, lineno, file, line)
    return show


def _stdout_to_devnull() -> None:
    """The Python docs' recipe (signal module, *Note on SIGPIPE*): point stdout at devnull so
    that the interpreter's last flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. captured output)
        pass
