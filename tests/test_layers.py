"""The package's floors (ARCHITECTURE.md) hold, and the checks that say so can fail.

* ``lint-imports`` keeps every contract of ``[tool.importlinter]`` in pyproject.toml (floors
  only point down; kernels, core in their order; loading models needs no optimiser; the
  analysis math neither plots nor writes), and fails on a copy of the package with one
  planted upward import;
* in a fresh interpreter, importing a floor loads only what it should: ``jsae.models``
  neither optax nor the training loop nor orbax, model files not even JAX.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)


def test_every_import_contract_is_kept():
    res = _lint(REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "broken" not in res.stdout.lower().split("contracts:")[-1].replace("0 broken", "")


def test_a_planted_upward_import_breaks_the_contract(tmp_path):
    for name in ("jsae",):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.so", "_bundled"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    models = tmp_path / "jsae" / "models.py"
    models.write_text(models.read_text(encoding="utf-8") + "\nfrom .training import loop  # planted\n",
                      encoding="utf-8")
    res = _lint(tmp_path)
    assert res.returncode != 0
    assert "jsae.models" in res.stdout and "jsae.training" in res.stdout, res.stdout[-3000:]


def _loaded(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return set(res.stdout.split())


@pytest.mark.parametrize("statement", ["import jsae.models", "from jsae.runs.load import load_sweep",
                                       "import jsae.analyses.probing, jsae.analyses.steering"])
def test_loading_models_for_analysis_imports_no_optimiser_and_no_training(statement):
    mods = _loaded(statement)
    assert "optax" not in mods and not any(m.startswith("jsae.training") for m in mods), statement
    assert not any(m.startswith("orbax") for m in mods), statement


def test_model_files_load_without_jax():
    mods = _loaded("import jsae.runs.modelfiles, jsae.core.kinds, jsae.core.normalize")
    assert not {"jax", "flax", "orbax", "optax"} & mods


def test_training_loads_the_floors_below_it():
    """A check of the check: the training loop does pull in optax (so the test above can fail)."""
    mods = _loaded("import jsae.training.loop")
    assert "optax" in mods and "jsae.training.grid" in mods
