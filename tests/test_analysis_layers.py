"""The analysis floors: math (jsae.analyses) ← files, figures, tables (jsae.outputs) ← the page (jsae.report).

* every math module imports, in a fresh interpreter, without matplotlib, the writers,
  the report, the plots or the CLI, and names none of them in its source (lazy imports too);
* the steering defaults are those of ``SteerOptions`` wherever a function takes them;
* the report's Jinja2 template files exist and render: a report of a probed run, all of
  its models or some, written atomically.
"""
import ast
import dataclasses
import importlib.util
import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from markupsafe import escape

REPO = Path(__file__).resolve().parents[1]
MATH = sorted([p.stem for p in (REPO / "jsae" / "analyses").glob("*.py") if p.stem != "__init__"]
              + [f"atlas.{p.stem}" for p in (REPO / "jsae" / "analyses" / "atlas").glob("*.py") if p.stem != "__init__"]
              + ["atlas"])
FORBIDDEN = ("matplotlib", "jsae.outputs", "jsae.report", "jsae.plots", "jsae.sweeps")


def test_the_math_modules_are_the_ones_expected():
    assert MATH == ["atlas", "atlas.build", "atlas.describe", "atlas.examples", "atlas.geometry", "atlas.metadata",
                    "atlas.stats", "consistency", "defaults", "labelled", "probing", "splitting", "steering", "universality"]


@pytest.mark.parametrize("module", ["jsae.analyses", *(f"jsae.analyses.{m}" for m in MATH)])
def test_a_math_module_loads_no_writer_plot_report_or_cli(module):
    code = (f"import json, sys, {module}\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} "
            f"or any(m == f or m.startswith(f + '.') for f in {FORBIDDEN!r}))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"{module} loads {loaded}"


@pytest.mark.parametrize("name", MATH)
def test_a_math_module_imports_nothing_from_the_floors_above(name):
    """Also imports inside functions, which a fresh interpreter would not see."""
    parts = name.split(".")
    path = REPO / "jsae" / "analyses" / Path(*parts[:-1]) / f"{parts[-1]}.py"
    package = "jsae.analyses" + "".join(f".{p}" for p in parts[:-1])
    if not path.exists():  # a subpackage: its __init__
        path, package = REPO / "jsae" / "analyses" / Path(*parts) / "__init__.py", f"jsae.analyses.{name}"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level \
                else node.module
            imported += [base] + [f"{base}.{a.name}" for a in node.names]
    bad = [m for m in imported for f in FORBIDDEN if m == f or m.startswith(f + ".")]
    assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_the_steering_defaults_are_those_of_steer_options():
    from jsae.analyses.steering import SteerOptions, flip_thresholds, steer
    from jsae.outputs.steer import run_steer, steer_folder_name

    defaults = {f.name: f.default for f in dataclasses.fields(SteerOptions)}
    assert defaults == {"latent": "auto", "alpha": (1.0,), "alpha_units": "mean_active", "mode": "flip",
                        "flip_threshold": False, "a_max": 50.0, "n_grid": 1024, "tol": 1e-6,
                        "train_split": "train", "test_split": "test"}
    for fn in (steer, run_steer, steer_folder_name, flip_thresholds):
        params = inspect.signature(fn).parameters
        for name, value in defaults.items():
            if name in params:
                assert params[name].default == value, (fn.__name__, name)
    assert set(defaults) <= set(inspect.signature(steer).parameters)
    assert set(defaults) <= set(inspect.signature(run_steer).parameters)


def test_the_template_files_are_package_data():
    from jsae.report import TEMPLATES

    assert (TEMPLATES / "report.html.j2").is_file() and (TEMPLATES / "report.css").is_file()
    assert TEMPLATES == REPO / "jsae" / "report" / "templates"
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '"jsae.report" = ["templates/*"]' in pyproject


@pytest.fixture(scope="module")
def probed_run(trained_run, labelled_store, tmp_path_factory):
    """A copy of the shared run with one probe written into it."""
    from jsae.outputs.probe import run_probe

    run = shutil.copytree(trained_run, tmp_path_factory.mktemp("layers") / "run")
    run_probe(run, labelled_store, "lang", "es", negative="en")
    return run


def _names(page: str, section: str) -> list[str]:
    """The model names that start table rows in the page section ``id="section"``."""
    part = page.split(f'id="{section}"', 1)[1].split("<h2", 1)[0]
    return re.findall(r"<tr><td>(k\d+_L\d+)</td>", part)


def test_the_template_renders_the_page_of_a_run(probed_run):
    from jsae.report import CSP, build_report

    path = build_report(probed_run)
    assert path == probed_run / "analysis" / "report.html"
    page = path.read_text(encoding="utf-8")
    css = (REPO / "jsae" / "report" / "templates" / "report.css").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and page.endswith("</body></html>\n")
    assert f'<meta http-equiv="Content-Security-Policy" content="{escape(CSP)}">' in page
    assert f"<style>\n{css}</style>" in page
    assert "<script" not in page and "{{" not in page and "{%" not in page
    assert 'id="headline"' in page and "Top-activating segments" in page
    assert len(_names(page, "training")) == 8 and len(set(_names(page, "a-probe-lang-es-vs-en"))) == 8
    # written atomically: no temporary file is left next to the page
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_report_of_some_models_shows_only_those(probed_run, tmp_path):
    from jsae.errors import NotFoundError
    from jsae.report import build_report

    chosen = {"k3_L8", "k4_L16"}
    page = build_report(probed_run, out=tmp_path / "some.html", models=sorted(chosen)).read_text()
    assert set(_names(page, "training")) == chosen
    assert set(_names(page, "a-probe-lang-es-vs-en")) == chosen
    headline = page.split('id="headline"', 1)[1].split("<nav>", 1)[0]
    shown = set(re.findall(r"k\d+_L\d+", headline))
    assert shown and shown <= chosen
    segments = re.findall(r"<h3>k=(\d+), L=(\d+), latent", page)
    assert segments and {f"k{k}_L{L}" for k, L in segments} <= chosen
    with pytest.raises(NotFoundError, match="no models.*k9_L9"):
        build_report(probed_run, out=tmp_path / "none.html", models=["k9_L9"])
    assert not (tmp_path / "none.html").exists()
