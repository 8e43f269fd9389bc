"""Every `jsae` command follows one convention (jsae/sweeps/conventions.py, README: Command-line
conventions): help text on every argument and defaults shown once, errors as one line
`jsae <command>: error: …` with exit status 2, `jsae --version`, and a closed output pipe
ending quietly with exit status 141.

The commands are read from the parser itself, so a new command is tested as soon as it exists
(and fails `test_every_command_has_a_bad_input_case` until it has a bad-input case below)."""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import jsae
from jsae.sweeps.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """``(path, parser)`` for the root, every command group and every command."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _is_group(parser: argparse.ArgumentParser) -> bool:
    return any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


PARSERS = dict(_parsers(build_parser()))
COMMANDS = sorted(path for path, p in PARSERS.items() if not _is_group(p))
NAME = {path: " ".join(("jsae", *path)) for path in PARSERS}


def test_the_commands_are_all_there():
    names = {" ".join(path) for path in COMMANDS}
    assert names == {"sweep", "launch", "store import", "store synth", "store info", "store verify", "embed", "demo", "export", "probe",
                     "split", "steer", "universality", "consistency", "report", "describe", "atlas"}


@pytest.mark.parametrize("path", sorted(PARSERS), ids=lambda p: " ".join(p) or "jsae")
def test_help_exits_0_and_prints_the_usage_of_the_command(path, capsys):
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {NAME[path]}"), out[:200]
    assert "(default: None)" not in out


@pytest.mark.parametrize("path", sorted(PARSERS), ids=lambda p: " ".join(p) or "jsae")
def test_every_argument_has_help_and_states_its_default_at_most_once(path):
    parser = PARSERS[path]
    formatter = parser._get_formatter()
    for action in parser._actions:
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help != argparse.SUPPRESS and action.help.strip(), f"{NAME[path]} {name}"
        text = formatter._expand_help(action)
        assert "(default: None)" not in text and "(default: [])" not in text, f"{NAME[path]} {name}: {text}"
        stated = re.findall(r"\bdefault[: ]", text.lower())  # "(default: X)", "(default X, …)"
        assert len(stated) <= 1, f"{NAME[path]} {name} states its default twice: {text}"


def test_defaults_worth_showing_are_shown():
    formatter = PARSERS[("steer",)]._get_formatter()
    texts = {a.dest: formatter._expand_help(a) for a in PARSERS[("steer",)]._actions}
    assert texts["a_max"].endswith("(default: 50)") and texts["mode"].endswith("(default: flip)")
    assert "default" not in texts["flip_threshold"] and "default" not in texts["negative"]


def _labelled(tmp: Path) -> list:
    return ["--data", tmp / "store", "--label", "lang", "--positive", "es"]


#: per command, a command line whose run directory (``empty``: a fresh empty folder, not a run)
#: or config, store, audio folder or data folder is bad
BAD_INPUT = {
    ("describe",): lambda tmp, empty: ["describe", tmp / "missing"],
    ("sweep",): lambda tmp, empty: ["sweep", tmp / "missing.yaml", "--out", tmp / "run"],
    ("launch",): lambda tmp, empty: ["launch", "-n", "2", "--", tmp / "missing-program"],
    ("store", "import"): lambda tmp, empty: ["store", "import", tmp / "missing.npy", "--out", tmp / "store"],
    ("store", "synth"): lambda tmp, empty: ["store", "synth", "--out", empty, "--rows", "10", "--dim", "4"],
    ("store", "info"): lambda tmp, empty: ["store", "info", tmp / "missing"],
    ("store", "verify"): lambda tmp, empty: ["store", "verify", tmp / "missing"],
    ("embed",): lambda tmp, empty: ["embed", "--audio-dir", tmp / "missing", "--out", tmp / "store", "-q",
                                    "--no-progress"],
    ("demo",): lambda tmp, empty: ["demo", "--data", tmp / "missing", "--out", tmp / "run"],
    ("export",): lambda tmp, empty: ["export", empty, "--format", "saelens", "--out", tmp / "exp"],
    ("probe",): lambda tmp, empty: ["probe", empty, *_labelled(tmp)],
    ("split",): lambda tmp, empty: ["split", empty, *_labelled(tmp), "--group", "gender"],
    ("steer",): lambda tmp, empty: ["steer", empty, *_labelled(tmp)],
    ("universality",): lambda tmp, empty: ["universality", empty, empty],
    ("consistency",): lambda tmp, empty: ["consistency", empty, *_labelled(tmp)],
    ("report",): lambda tmp, empty: ["report", empty],
    ("atlas",): lambda tmp, empty: ["atlas", empty, "--data", tmp / "store", "--out", tmp / "atlas"],
}


def test_every_command_has_a_bad_input_case():
    missing = [NAME[p] for p in COMMANDS if p not in BAD_INPUT]
    assert not missing, f"add a bad-input case for {missing} to BAD_INPUT"


def _one_error_line(capsys, path, argv) -> str:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2, (rc, err)
    assert len(err) == 1, "\n".join(err)
    assert err[0].startswith(f"{NAME[path]}: error: ") and "Traceback" not in err[0], err[0]
    return err[0]


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_a_bad_run_or_input_is_one_line_and_exit_2(path, tmp_path, capsys):
    if path not in BAD_INPUT:
        pytest.fail(f"no bad-input case for {NAME[path]}")
    (tmp_path / "empty").mkdir()
    _one_error_line(capsys, path, BAD_INPUT[path](tmp_path, tmp_path / "empty"))
    assert not (tmp_path / "run").exists() and not (tmp_path / "exp").exists()


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_a_usage_error_is_one_line_and_exit_2(path, capsys):
    line = _one_error_line(capsys, path, [*path, "--no-such-option"])
    assert f"`{NAME[path]} --help`" in line


def test_python_m_embed_follows_the_convention(tmp_path, capsys):
    from jsae.embed.cli import main as embed_main

    capsys.readouterr()
    assert embed_main(["--audio-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "s"), "-q"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("jsae embed: error: "), err
    assert embed_main(["--help"]) == 0 and capsys.readouterr().out.startswith("usage: jsae embed")


def test_run_and_model_options_have_one_name_everywhere():
    for path in COMMANDS:
        options = {o for a in PARSERS[path]._actions for o in a.option_strings}
        assert not options & {"--run", "--eval-split", "--split", "--groups", "--by", "--force",
                              "--latent-sizes", "--root-latent-size"}, NAME[path]
    for cmd in ("probe", "split", "steer", "universality", "report", "export"):
        options = {o for a in PARSERS[(cmd,)]._actions for o in a.option_strings}
        assert {"--model", "--k", "--latent-size"} <= options, cmd
        positionals = [a.dest for a in PARSERS[(cmd,)]._actions if not a.option_strings]
        assert positionals[0].startswith("run"), (cmd, positionals)


# ----------------------------------------------------------------------------------- subprocesses


def _jsae() -> list[str]:
    script = Path(sys.executable).parent / "jsae"
    return [str(script)] if script.exists() else [sys.executable, "-m", "jsae.sweeps"]


def test_version():
    proc = subprocess.run([*_jsae(), "--version"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and proc.stdout == f"jsae {jsae.__version__}\n" and not proc.stderr, proc


def _closed_pipe(argv: list[str], read_first_line: bool) -> tuple[int, str]:
    proc = subprocess.Popen([*_jsae(), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    if read_first_line:
        assert proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read().decode()
    return proc.wait(timeout=120), err


def test_a_closed_pipe_ends_quietly_with_141(tmp_path):
    rc, err = _closed_pipe(["--help"], read_first_line=False)  # closed before jsae writes
    assert rc == 141 and not err.strip(), err
    store = tmp_path / "store"
    assert main(["store", "synth", "--out", str(store), "--rows", "20000", "--dim", "4"]) == 0
    rc, err = _closed_pipe(["store", "info", str(store), "--head", "20000"], read_first_line=True)  # > 64 KiB
    assert rc == 141 and "Traceback" not in err and "BrokenPipe" not in err and not err.strip(), err


@pytest.mark.skipif(shutil.which("sh") is None or shutil.which("head") is None, reason="needs sh and head")
def test_jsae_help_into_head_prints_no_traceback():
    cmd = " ".join(_jsae()) + " --help | head -1"
    proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.stdout.startswith("usage: jsae") and not proc.stderr, proc.stderr


def test_a_warning_is_one_line_naming_the_command(capsys):
    """A UserWarning jsae raises while a command runs (about data and results) is one line
    ``jsae <command>: warning: …`` on stderr, without Python's source line; a
    DeprecationWarning, or a library's own UserWarning, keeps Python's format."""
    import warnings

    from jsae import console

    def warn(args):
        warnings.warn("split of lang=es (k=4): the root fires on 3% of speaker='b'", UserWarning, stacklevel=2)
        warnings.warn("old API", DeprecationWarning, stacklevel=2)
        warnings.warn_explicit("torch says", UserWarning, "/usr/lib/python3/site-packages/torch/serialization.py", 1)
        print("done")
        return 0

    parser = console.ArgumentParser(prog="jsae")
    sub = parser.add_subparsers()
    p = sub.add_parser("split", prog="jsae split")
    p.set_defaults(func=warn, command_parser=p)
    with pytest.warns(DeprecationWarning, match="old API"):  # passed on to Python's (here pytest's) handler
        with pytest.warns(UserWarning, match="torch says"):
            assert console.run(parser, ["split"]) == 0
    out, err = capsys.readouterr()
    assert out == "done\n"
    assert err.splitlines() == ["jsae split: warning: split of lang=es (k=4): the root fires on 3% of speaker='b'"]
