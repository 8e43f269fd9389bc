"""jsae runs from an installed wheel, away from the source checkout.

Builds the sdist of a copy of the working tree (what git tracks or would track), the
wheel from that sdist (so MANIFEST.in and setup.py's bundling are both exercised),
installs the wheel with ``--no-deps`` into a fresh venv that sees this environment's
dependencies through a ``.pth`` path line (a path line runs no code, so the editable
finder of this checkout's jsae stays off), and then, from an empty working directory,
runs ``jsae demo`` on the bundled data and ``jsae sweep paper_grid`` by name.
About 70 s on 2 CPU cores (the kernel compile and the quick demo are most of it).
"""
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["grid.k=[20]", "grid.latent_size=[200]", "train.steps=100", "train.batch_size=64",
         "train.steps_per_call=50", "train.progress=false"]


def _run(cmd, *, cwd, env=None, timeout=600, check=True):
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {out.returncode}:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


def _copy_tree(dst: Path) -> None:
    """The files git tracks or would track (no .venv, runs/, build/, compiled kernels)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                                capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot tell the sources from build outputs")
    for rel in filter(None, listed.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src, dist, venv = tmp / "src", tmp / "dist", tmp / "venv"
    _copy_tree(src)
    py = sys.executable
    _run([py, "-c", f"from setuptools import build_meta as b; b.build_sdist({str(dist)!r})"], cwd=src)
    (sdist,) = dist.glob("jsae-*.tar.gz")
    _run([py, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", sdist, "-w", dist], cwd=tmp)
    (wheel,) = dist.glob("jsae-*.whl")

    _run([py, "-m", "venv", "--without-pip", venv], cwd=tmp)
    vpy = venv / "bin" / "python"
    _run([py, "-m", "pip", "--python", vpy, "install", "-q", "--no-deps", "--no-index", wheel], cwd=tmp)
    site = Path(_run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout.strip())
    # this environment's dependencies, as plain path lines: no .pth in them runs (no editable finder)
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_jsae_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "JSAE_DATA")}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    cwd = tmp / "cwd"
    cwd.mkdir()
    return {"wheel": wheel, "venv": venv, "python": vpy, "env": env, "cwd": cwd}


@pytest.mark.slow
def test_the_wheel_carries_the_configs_the_demo_data_and_the_kernels(wheel_env):
    names = set(zipfile.ZipFile(wheel_env["wheel"]).namelist())
    for cfg in (ROOT / "configs").glob("*.yaml"):
        assert f"jsae/_bundled/configs/{cfg.name}" in names
    demo = [p for p in (ROOT / "data" / "demo").rglob("*") if p.is_file()]
    assert demo and all(f"jsae/_bundled/data/demo/{p.relative_to(ROOT / 'data' / 'demo').as_posix()}" in names
                        for p in demo)
    assert any(n.startswith("jsae/kernels/_jsae_cpu") for n in names)
    if platform.machine() in ("x86_64", "AMD64"):  # the x86-64-v2 baseline and the x86-64-v3 variant, both built
        wheel = zipfile.ZipFile(wheel_env["wheel"])
        libs = {n.split("/")[-1].split(".")[0]: wheel.getinfo(n).file_size for n in names
                if n.startswith("jsae/kernels/_jsae_cpu")}
        assert set(libs) == {"_jsae_cpu", "_jsae_cpu_v3"} and all(libs.values()), libs
    assert {"jsae/report/templates/report.html.j2", "jsae/report/templates/report.css"} <= names
    assert not any(n.startswith(("tests/", "data/", "configs/")) for n in names)


@pytest.mark.slow
def test_the_wheel_leaves_out_the_corpus_builder_and_the_test_stand_ins(wheel_env):
    names = zipfile.ZipFile(wheel_env["wheel"]).namelist()
    assert (ROOT / "tools" / "demo_corpus" / "__main__.py").is_file()   # there is a builder to leave out
    assert "jsae/embed/__init__.py" in names and "jsae/sweeps/cli.py" in names
    left_in = [n for n in names if n.startswith(("tools/", "jsae/embed/corpus/")) or n.endswith("/testing.py")]
    assert not left_in, left_in


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_package_named_jsae(wheel_env):
    names = zipfile.ZipFile(wheel_env["wheel"]).namelist()
    assert {n.split("/", 1)[0] for n in names} == {"jsae", "jsae-0.1.0.dist-info"}
    site = Path(_run([wheel_env["python"], "-c", "import jsae, pathlib; print(pathlib.Path(jsae.__file__).parents[1])"],
                     cwd=wheel_env["cwd"], env=wheel_env["env"]).stdout.strip())
    assert not (site / "embed").exists() and not (site / "sweeps").exists()
    for name in ("embed", "sweeps"):
        out = _run([wheel_env["python"], "-c", f"import {name}"], cwd=wheel_env["cwd"], env=wheel_env["env"],
                   check=False)
        assert out.returncode == 1 and f"No module named '{name}'" in out.stderr, out.stderr
    out = _run([wheel_env["python"], "-c", "import jsae.embed.plan, jsae.sweeps.cli; print('ok')"],
               cwd=wheel_env["cwd"], env=wheel_env["env"])
    assert out.stdout.strip() == "ok"


@pytest.mark.slow
def test_the_installed_package_finds_its_own_resources_not_the_checkout(wheel_env):
    code = ("import json, sys, jsae, jsae.sweeps as sweeps, jsae.resources as r; print(json.dumps({'jsae': jsae.__file__, "
            "'sweeps': sweeps.__file__, 'configs': [str(r.config_path(n)) for n in r.CONFIG_NAMES], "
            "'demo': str(r.demo_data_dir()), 'roots': [str(p) for p in r.resource_roots()], "
            "'editable': [m for m in sys.modules if m.startswith('__editable__')]}))")
    got = json.loads(_run([wheel_env["python"], "-c", code], cwd=wheel_env["cwd"], env=wheel_env["env"]).stdout)
    venv = wheel_env["venv"].resolve()
    for key in ("jsae", "sweeps", "demo"):
        assert Path(got[key]).resolve().is_relative_to(venv), (key, got[key])
    assert all(Path(c).resolve().is_relative_to(venv / "lib") and "_bundled" in c for c in got["configs"])
    assert len(got["roots"]) == 1 and Path(got["roots"][0]).resolve().is_relative_to(venv)
    assert not got["editable"]
    status = _run([wheel_env["python"], "-m", "jsae.kernels", "status"], cwd=wheel_env["cwd"], env=wheel_env["env"],
                  check=False)
    assert status.returncode == 0 and "loaded" in status.stdout, status.stderr
    # JSAE_DATA, when set, comes first
    env = dict(wheel_env["env"], JSAE_DATA=str(ROOT))
    out = _run([wheel_env["python"], "-c", "import jsae.resources as r; print(r.config_path('demo'))"],
               cwd=wheel_env["cwd"], env=env)
    assert Path(out.stdout.strip()) == ROOT / "configs" / "demo.yaml"


@pytest.mark.slow
def test_jsae_demo_runs_from_the_wheel_in_an_empty_folder(wheel_env):
    out = _run([wheel_env["venv"] / "bin" / "jsae", "demo", "--out", "run", *QUICK], cwd=wheel_env["cwd"],
               env=wheel_env["env"])
    report = wheel_env["cwd"] / "run" / "analysis" / "report.html"
    assert "demo finished" in out.stdout and report.is_file()
    assert "<img" in report.read_text()
    assert str(wheel_env["venv"].resolve()) in out.stdout   # trained on the bundled sae_train store


@pytest.mark.slow
def test_jsae_sweep_takes_a_bundled_config_by_name(wheel_env):
    jsae = wheel_env["venv"] / "bin" / "jsae"
    # paper_grid resolves to the bundled YAML and loads; the sweep then stops on the missing store
    out = _run([jsae, "sweep", "paper_grid", "--out", "paper", "data.store=missing_store"], cwd=wheel_env["cwd"],
               env=wheel_env["env"], check=False)
    assert out.returncode == 2 and "missing_store" in out.stderr and "does not exist" in out.stderr, out.stderr
    assert not (wheel_env["cwd"] / "paper").exists()
    out = _run([jsae, "sweep", "paper_grd", "--out", "paper"], cwd=wheel_env["cwd"], env=wheel_env["env"], check=False)
    assert out.returncode == 2 and "paper_grid" in out.stderr and "bundled config" in out.stderr, out.stderr


@pytest.mark.slow
def test_the_default_sweep_runs_from_an_empty_folder_on_the_bundled_synthetic_store(wheel_env):
    """configs/default.yaml names data.store=data/synthetic (relative): from a folder without it,
    the sweep trains on the wheel's copy and says so in one line; a typo stays an error."""
    synthetic = ROOT / "data" / "synthetic"
    names = set(zipfile.ZipFile(wheel_env["wheel"]).namelist())
    files = [p for p in synthetic.rglob("*") if p.is_file()]
    assert files and all(f"jsae/_bundled/data/synthetic/{p.relative_to(synthetic).as_posix()}" in names for p in files)
    cwd = wheel_env["cwd"] / "default-sweep"
    cwd.mkdir()
    out = _run([wheel_env["venv"] / "bin" / "jsae", "sweep", "default", "--out", "r", *QUICK], cwd=cwd,
               env=wheel_env["env"])
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("data.store:")]
    used = Path(line.rsplit(" ", 1)[1])
    assert used.name == "synthetic" and "_bundled" in used.parts
    assert used.resolve().is_relative_to(wheel_env["venv"].resolve()), line   # the wheel's copy, not the checkout
    assert "checksums" not in out.stderr, out.stderr                           # its store.json records them
    sweep = json.loads((cwd / "r" / "sweep.json").read_text())
    assert Path(sweep["data"]["source"]) == used
    assert (sweep["data"]["n_train"] + sweep["data"]["n_val"], sweep["dim"]) == (16000, 192)
    index = json.loads((cwd / "r" / "models" / "index.json").read_text())
    assert index["complete"] and index["models"] == ["k20_L200"]
    assert (cwd / "r" / "models" / "k20_L200" / "sae.safetensors").is_file()
    assert sorted(p.name for p in cwd.iterdir()) == ["r"]                      # nothing else written here
