"""The conventions every ``jsae`` command follows, in one place (README: *Command-line conventions*).

* **Names.** A command's parser is ``jsae <command>`` (``jsae store import`` for a nested
  one); usage, help and error lines carry that name.
* **Errors.** Every error is one line ``jsae <command>: error: <message>`` on stderr and
  exit status 2: usage errors (argparse) and :class:`jsae.errors.JsaeError` (bad input,
  files or environment; the message names the value and the fix) alike. Any other
  exception is a bug and keeps its traceback.
* **Closed pipe.** Output into a pipe that the reader closed (``jsae store info S | head -1``)
  ends quietly with exit status 141 = 128 + SIGPIPE, as a process killed by SIGPIPE
  would: the one exit status besides 0 and 2.
* **Help.** Every option and positional has a help text; :class:`HelpFormatter` appends
  ``(default: X)`` once, when there is a default to show and the text does not state it.
* **One name per concept.** The functions ``add_*`` below declare the options that
  several commands share, so that a concept has one name everywhere: the run (positional
  ``RUN``), the model selection (``--model``/``--k``/``--latent-size``), the labelled data
  (``--data --label --positive --negative``), the splits (``--train-split``/``--test-split``),
  the output folder (``--out``) and replacing it (``--overwrite``).

:func:`run` parses and runs a command with all of the above; ``jsae`` (:mod:`jsae.sweeps.cli`)
and ``python -m embed`` (:mod:`jsae.embed.cli`) both go through it. The parser, help style, error
and pipe handling are :mod:`jsae.console` (``embed`` stands below ``sweeps`` and uses it
directly); the options the commands share are declared here.
"""
from __future__ import annotations

import argparse
from typing import Any

from jsae.console import EXIT_ERROR, EXIT_PIPE, ArgumentParser, HelpFormatter, add_command, add_commands, run

__all__ = ["EXIT_ERROR", "EXIT_PIPE", "HelpFormatter", "ArgumentParser", "add_commands", "add_command", "run",
           "add_run", "add_selection", "selection_given", "load_run", "select", "filters", "load_models",
           "add_labelled", "add_out", "add_overwrite", "number"]

# ------------------------------------------------------------------------------------------------ shared options


def number(kind: type = float, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False):
    """An argparse ``type`` for a numeric option: ``kind`` (float or int), finite, within
    ``[lo, hi]`` (``lo_open``/``hi_open``: the bound itself excluded; ``None``: unbounded).
    A bad value is a usage error naming the value and the range (``nan``, ``inf``, ``1e400``
    and out-of-range values never reach the analyses)."""
    left = "-∞" if lo is None else f"{lo:g}"
    right = "∞" if hi is None else f"{hi:g}"
    wanted = (f"{'a whole' if kind is int else 'a finite'} number in "
              f"{'(' if lo is None or lo_open else '['}{left}, {right}{')' if hi is None or hi_open else ']'}")

    def parse(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {wanted}; got {text!r}") from None
        v = float(value)
        if (v != v or v in (float("inf"), float("-inf")) or (lo is not None and (v < lo or (lo_open and v == lo)))
                or (hi is not None and (v > hi or (hi_open and v == hi)))):
            raise argparse.ArgumentTypeError(f"expected {wanted}; got {text!r}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse



def add_run(p: argparse.ArgumentParser, name: str = "run", help: str = "run directory of `jsae sweep`",
            optional: bool = False) -> None:
    """The run directory: a positional ``RUN`` (``optional``: ``[RUN]``)."""
    p.add_argument(name, metavar=name.upper(), help=help, **({"nargs": "?", "default": None} if optional else {}))


def add_selection(p: argparse.ArgumentParser) -> None:
    """``--model NAME`` (repeatable), ``--k K [K ...]``, ``--latent-size L [L ...]``: the
    models of the run a command works on (every given filter applies; none: every model)."""
    g = p.add_argument_group("model selection (default: every model of the run; given filters all apply)")
    g.add_argument("--model", dest="models", action="append", metavar="NAME",
                   help="a model by name, e.g. k20_L200 (repeat for several)")
    g.add_argument("--k", type=int, nargs="+", metavar="K", help="only the models of these k")
    g.add_argument("--latent-size", type=int, nargs="+", metavar="L", help="only the models of these latent sizes")


def selection_given(args: argparse.Namespace) -> bool:
    """Whether a selection option of :func:`add_selection` was given."""
    return any(getattr(args, a, None) is not None for a in ("models", "k", "latent_size"))


def load_run(path: str):
    """The :class:`~jsae.runs.load.Sweep` of a run directory; a missing, truncated or damaged run
    is a one-line :class:`~jsae.errors.JsaeError` (the CLI's one run-loading boundary)."""
    from jsae.runs.load import load_run as load

    return load(path)


def select(batch, args: argparse.Namespace):
    """``batch`` narrowed to the selection of :func:`add_selection` (itself without one);
    a selection matching nothing is the library's one-line NotFoundError."""
    if not selection_given(args):
        return batch
    return batch.select(names=args.models, **filters(args))


def filters(args: argparse.Namespace) -> dict[str, Any]:
    """``k`` and ``latent_size`` of the selection: one value as itself (``--k 20`` reads k=20 in
    messages and folder names), several as a list, ``None`` when not given."""
    def one(values):
        return values[0] if values is not None and len(values) == 1 else values

    return {"k": one(args.k), "latent_size": one(args.latent_size)}


def load_models(path: str, args: argparse.Namespace):
    """The selected models of the run at ``path`` (a ModelBatch; the whole Sweep without a selection)."""
    return select(load_run(path), args)


def add_labelled(p: argparse.ArgumentParser, *, train_split: str | None = "train", test_split: str = "test",
                 all_rows: bool = False) -> None:
    """The labelled data: ``--data --label --positive [--negative]``, and the splits
    ``--train-split`` (rows an analysis fits on; ``None``: the command fits on none) and
    ``--test-split`` (rows it scores on; ``all_rows``: ``all`` means every row)."""
    g = p.add_argument_group("labelled data")
    g.add_argument("--data", required=True, metavar="STORE",
                   help="labelled embedding store (metadata: the label column and `split`)")
    g.add_argument("--label", required=True, metavar="COL", help="label column, e.g. lang or kind")
    g.add_argument("--positive", required=True, metavar="VALUE", help="its positive value, e.g. es or music")
    g.add_argument("--negative", metavar="VALUE",
                   help="keep only the rows of this negative value (without it every other value is negative)")
    if train_split is not None:
        g.add_argument("--train-split", default=train_split, metavar="SPLIT",
                       help="value of the `split` column whose rows the analysis fits on")
    g.add_argument("--test-split", default=test_split, metavar="SPLIT",
                   help="value of the `split` column whose rows the analysis scores on"
                        + ("; `all`: every row" if all_rows else ""))


def add_out(p: argparse.ArgumentParser, help: str, *, required: bool = False, metavar: str = "DIR") -> None:
    """``--out``: where the command writes."""
    p.add_argument("--out", required=required, metavar=metavar, help=help)


def add_overwrite(p: argparse.ArgumentParser, help: str) -> None:
    """``--overwrite``: replace an earlier output at ``--out``."""
    p.add_argument("--overwrite", action="store_true", help=help)
