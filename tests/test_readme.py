"""README.md's examples run as written.

Every fenced block of README.md, in order, is one test item:

* the first block is ``make demo`` / ``make test``: ``make demo`` is run as its Makefile recipe
  (``jsae demo --out runs/demo``, checked against the Makefile) once, by the module's fixture,
  before any other block; ``make test`` is this suite and is not run from inside it;
* ``bash`` blocks run with ``set -euo pipefail`` and the test interpreter's ``bin/`` first on
  ``PATH`` (so ``jsae`` is this checkout's);
* ``python`` blocks run each in a fresh interpreter, as a reader pasting one block would (no
  namespace is shared: a block imports and defines what it uses); a traceback's line numbers
  are README.md's;
* ``text`` blocks are figures, not commands.

They all run in one scratch folder laid out like the checkout: copies of ``configs/`` and
``data/`` (nothing is written into the checkout), with ``JSAE_DATA`` pointing at it so that
``jsae demo`` reads the same store paths that the blocks name. A block may use what an
earlier block made (``runs/demo``, ``my_store``, ``runs/seed1``…). A failure names the
block's README line and shows the tail of its output.

A line ``<!-- readme: not run (REASON) -->`` right before a fence leaves the block out;
REASON must be one of :data:`NOT_RUN` (what cannot run on a CI machine), and every other
block must have run. ``<!-- readme: given FILE (…) -->`` names a file the block reads that
the test provides (:data:`GIVEN`). Both lines are HTML comments: README readers don't see
them.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: the reasons a block may be left out, and why none of them can run in the tests
NOT_RUN = {
    "installs the environment": "pip installs into a new .venv: what `make demo`/`make test` did before the tests",
    "needs a SLURM cluster": "an sbatch script: srun starts the processes of a job on cluster nodes",
}
#: files a block may be given (``given FILE``): how the test provides each
GIVEN = {
    "titanet_large.nemo": "a tiny random TitaNet (tests/stand_ins.py), saved with NeMo's save_to",
}
MARKER = re.compile(r"^<!-- readme: (?:not run \((?P<reason>[^)]*)\)|given (?P<given>\S+) \((?P<what>[^)]*)\)) -->$")
LANGUAGES = {"bash", "python", "text"}
BLOCK_TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    """One fenced block: ``line`` is its opening fence's line in README.md (1-based)."""

    line: int
    lang: str
    code: str
    not_run: str | None = None
    given: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"L{self.line}-{self.lang}"


def parse_readme(text: str) -> list[Block]:
    """The fenced blocks of ``text`` in order, with the marker on the line before each fence."""
    lines = text.splitlines()
    blocks = []
    for token in MarkdownIt("commonmark").parse(text):
        if token.type not in ("fence", "code_block"):
            continue
        start = token.map[0]                      # 0-based line of the opening fence
        lang = token.info.split()[0] if token.info.strip() else ""
        not_run, given = None, ()
        above = lines[start - 1] if start > 0 else ""
        if above.startswith("<!-- readme:"):
            m = MARKER.match(above)
            assert m, f"README.md:{start}: unreadable marker {above!r}; write <!-- readme: not run (REASON) --> " \
                      f"or <!-- readme: given FILE (WHAT) -->"
            not_run = m["reason"]
            given = (m["given"],) if m["given"] else ()
        blocks.append(Block(start + 1, lang, token.content, not_run, given))
    return blocks


BLOCKS = parse_readme(README.read_text(encoding="utf-8"))
RAN: dict[int, bool] = {}   # line → passed, for the blocks run in this session


def _tail(text: str, n: int = 6000) -> str:
    return text if len(text) <= n else "…" + text[-n:]


def _demo_command() -> list[str]:
    """``make demo``'s command, read from the Makefile (its recipe and the default of ``RUN``)."""
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    run = re.search(r"^RUN \?= (\S+)$", make, re.M)
    recipe = re.search(r"^demo:.*\n\t(.+)$", make, re.M)
    assert run and recipe, "the Makefile has no `RUN ?= …` or no demo recipe"
    assert recipe[1] == "$(VENV)/bin/jsae demo --out $(RUN) $(DEMO_FLAGS)", recipe[1]
    return ["jsae", "demo", "--out", run[1]]


def _environment(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS", "PYTHONPATH")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", JSAE_DATA=str(folder),
               PYTHONDONTWRITEBYTECODE="1")
    return env


@pytest.fixture(scope="module")
def readme_folder(tmp_path_factory):
    """A scratch folder like the checkout (copies of configs/ and data/) in which the README's
    first command has run: ``make demo`` → ``jsae demo --out runs/demo``."""
    folder = tmp_path_factory.mktemp("readme")
    for name in ("configs", "data"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    command = _demo_command()
    out = subprocess.run(command, cwd=folder, env=_environment(folder), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=BLOCK_TIMEOUT_S)
    if out.returncode != 0:
        pytest.fail(f"README.md:{BLOCKS[0].line}: `make demo` ({shlex.join(command)}) exited {out.returncode}:\n"
                    f"{_tail(out.stdout)}")
    return folder


def _give(name: str, folder: Path) -> None:
    if (folder / name).exists():
        return
    if name == "titanet_large.nemo":
        from stand_ins import build_tiny_titanet   # needs the embed extra (NeMo)

        build_tiny_titanet(folder / name)
    else:
        raise AssertionError(f"no way to give {name}; known: {sorted(GIVEN)}")


def _run_block(block: Block, folder: Path) -> subprocess.CompletedProcess:
    scripts = folder / ".readme"
    scripts.mkdir(exist_ok=True)
    # padded so that line numbers (a traceback's, bash's $LINENO) are README.md's: the code starts after the fence
    if block.lang == "bash":
        script = scripts / f"README.md-L{block.line}.sh"
        head = """set -euo pipefail; trap 'echo "README.md:$LINENO: exit status $?: $BASH_COMMAND" >&2' ERR"""
        script.write_text(head + "\n" * block.line + block.code, encoding="utf-8")
        command = ["bash", str(script)]
    else:
        script = scripts / f"README.md-L{block.line}.py"
        script.write_text("\n" * block.line + block.code, encoding="utf-8")
        command = [sys.executable, str(script)]
    return subprocess.run(command, cwd=folder, env=_environment(folder), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=BLOCK_TIMEOUT_S)


def test_the_readme_starts_with_make_demo_and_make_test():
    first = BLOCKS[0]
    commands = [line.split("#")[0].strip() for line in first.code.splitlines()]
    assert (first.line, first.lang, commands) == (1, "bash", ["make demo", "make test"])
    assert _demo_command() == ["jsae", "demo", "--out", "runs/demo"]


def test_every_block_is_bash_python_or_a_text_figure_and_every_marker_sits_on_a_fence():
    assert {b.lang for b in BLOCKS} <= LANGUAGES, [(b.line, b.lang) for b in BLOCKS if b.lang not in LANGUAGES]
    lines = README.read_text(encoding="utf-8").splitlines()
    fences = {b.line for b in BLOCKS}
    markers = [i + 1 for i, line in enumerate(lines) if line.startswith("<!-- readme:")]
    assert all(n + 1 in fences for n in markers), f"markers not right above a fence: {markers}"
    assert all(not b.not_run or b.not_run in NOT_RUN for b in BLOCKS), \
        [(b.line, b.not_run) for b in BLOCKS if b.not_run and b.not_run not in NOT_RUN]
    assert all(g in GIVEN for b in BLOCKS for g in b.given)


def test_only_the_blocks_that_cannot_run_here_are_left_out():
    """The blocks left out, by line and reason: each reason is one of NOT_RUN, at most one block each."""
    left_out = [(b.line, b.not_run) for b in BLOCKS if b.not_run]
    print("\n".join(f"README.md:{line}: not run ({reason}: {NOT_RUN[reason]})" for line, reason in left_out))
    reasons = [reason for _, reason in left_out]
    assert len(reasons) == len(set(reasons)) and set(reasons) <= set(NOT_RUN), left_out
    runnable = [b for b in BLOCKS[1:] if not b.not_run and b.lang != "text"]
    assert {"bash", "python"} <= {b.lang for b in runnable} and len(runnable) > 2 * len(left_out)


@pytest.mark.slow
@pytest.mark.embed
@pytest.mark.parametrize("block", [b for b in BLOCKS[1:] if not b.not_run and b.lang != "text"],
                         ids=lambda b: b.id)
def test_readme_block_runs_as_written(block, readme_folder):
    for name in block.given:
        _give(name, readme_folder)
    out = _run_block(block, readme_folder)
    RAN[block.line] = out.returncode == 0
    if out.returncode != 0:
        pytest.fail(f"README.md:{block.line}: the {block.lang} block exited {out.returncode}; output:\n"
                    f"{_tail(out.stdout)}", pytrace=False)


@pytest.mark.slow
@pytest.mark.embed
def test_every_block_not_marked_ran(readme_folder):
    expected = [b.line for b in BLOCKS[1:] if not b.not_run and b.lang != "text"]
    assert (readme_folder / "runs" / "demo" / "analysis" / "report.html").is_file()
    assert [line for line in expected if not RAN.get(line)] == [], \
        f"README blocks that did not run or failed (by line): ran {RAN}"
