"""`jsae --help` and `jsae COMMAND --help` load no heavy library, and the defaults they show
are the ones the analyses use.

The parser takes its defaults from :mod:`jsae.analyses.defaults` (standard library only);
the analyses' signatures and option classes read the same module. The second test compares
what the parser would pass with what each analysis function would use when not given the
option, so a default written again somewhere (in a signature or in the parser) fails here.
"""
from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
from pathlib import Path

from jsae.sweeps.cli import build_parser
from test_cli_convention import _parsers  # every (path, parser) of the command line

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("jax", "jaxlib", "scipy", "tensorstore", "pandas", "pyarrow", "torch", "matplotlib")

# In a fresh interpreter: build the parser, print the help of the root and of every command
# (the same code path as the `jsae` script), then report what was imported.
CHILD = r"""
import argparse, contextlib, io, json, sys
from jsae.sweeps.cli import build_parser, main

def paths(parser, path=()):
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from paths(sub, (*path, name))

helps = {}
for path in paths(build_parser()):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main([*path, "--help"])
    helps[" ".join(path)] = [status, out.getvalue()]
json.dump({"helps": helps, "modules": sorted(sys.modules)}, sys.__stdout__)
"""


PARSERS = dict(_parsers(build_parser()))


def test_help_of_every_command_imports_no_heavy_library():
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    # the child printed every command's help (so the import check below covers them all)
    assert set(got["helps"]) == {" ".join(p) for p in PARSERS}
    for name, (status, text) in got["helps"].items():
        assert status == 0 and text.startswith(f"usage: {' '.join(('jsae', *name.split()))}"), (name, text[:200])
    loaded = sorted({m.split(".")[0] for m in got["modules"]} & set(HEAVY))
    assert loaded == [], f"`jsae … --help` imported {loaded}"


def test_the_heavy_check_sees_a_heavy_import():
    """The check above can fail: the same child, after importing an analysis, reports JAX."""
    child = CHILD.replace("helps = {}", "import jsae.analyses.probing\nhelps = {}")
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"jax", "pandas"} <= {m.split(".")[0] for m in json.loads(proc.stdout)["modules"]}


def _default(fn, name: str):
    return inspect.signature(fn).parameters[name].default


def _analysis_defaults() -> dict[tuple[str, str], object]:
    """(command, option dest) → the value the analysis uses when the option is not given."""
    from jsae.analyses.atlas import AtlasOptions
    from jsae.analyses.consistency import consistency
    from jsae.analyses.probing import probe
    from jsae.analyses.splitting import feature_split
    from jsae.analyses.steering import SteerOptions, steer
    from jsae.analyses.universality import compare_sweeps
    from jsae.report import build_report

    s, a = SteerOptions(), AtlasOptions()
    expected = {("probe", d): _default(probe, d) for d in
                ("train_split", "test_split", "C", "family_min_precision", "family_max", "family_min_gain")}
    expected |= {("split", d): _default(feature_split, d) for d in
                 ("train_split", "test_split", "min_coverage", "min_within", "max_overlap", "family_min_precision",
                  "family_max", "family_min_gain")}
    expected |= {("steer", d): getattr(s, d) for d in
                 ("train_split", "test_split", "latent", "alpha_units", "mode", "a_max")}
    expected[("steer", "alpha")] = list(s.alpha)
    expected |= {("universality", d): _default(compare_sweeps, d) for d in ("method", "threshold", "max_rows")}
    expected |= {("consistency", d): _default(consistency, d) for d in ("test_split", "speaker", "min_rows", "C",
                                                                         "seed")}
    expected[("consistency", "folds")] = _default(consistency, "n_splits")
    expected[("report", "top")] = _default(build_report, "top")
    expected[("atlas", "top")] = a.n_top
    expected[("atlas", "per_band")] = a.per_band
    # the steering signature's defaults are SteerOptions' (what `jsae steer` passes as options)
    for d in ("latent", "alpha", "alpha_units", "mode", "a_max", "train_split", "test_split"):
        assert _default(steer, d) == getattr(s, d), d
    return expected


def _shown_defaults(command: str) -> dict[str, object]:
    """The options of ``jsae COMMAND`` whose help shows a default, and that default."""
    return {a.dest: a.default for a in PARSERS[(command,)]._actions
            if not any(a.default is x for x in (None, False, argparse.SUPPRESS)) and a.dest != "help"}


def test_every_default_the_analysis_commands_show_is_the_one_the_analysis_uses():
    expected = _analysis_defaults()
    commands = ("probe", "split", "steer", "universality", "consistency", "report", "atlas")
    shown = {(c, dest): value for c in commands for dest, value in _shown_defaults(c).items()}
    assert set(shown) == set(expected), "an analysis option with a default is not compared here"
    for key, value in shown.items():
        assert value == expected[key] and type(value) is type(expected[key]), (key, value, expected[key])


def test_the_choices_of_the_analysis_commands_are_the_analyses_own():
    from jsae.analyses.steering import ALPHA_UNITS, MODES, UNIT_ALIASES
    from jsae.analyses.universality import METHODS

    def choices(command, dest):
        return tuple(next(a for a in PARSERS[(command,)]._actions if a.dest == dest).choices)

    assert choices("steer", "mode") == MODES
    assert choices("steer", "alpha_units") == (*ALPHA_UNITS, *UNIT_ALIASES)
    assert choices("universality", "method") == METHODS
