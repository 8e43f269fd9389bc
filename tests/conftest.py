"""Shared fixtures.

The shared trained runs (``tests/analysis_helpers.py``, ``tests/safety_helpers.py`` hold
their builders) are session fixtures: built once per test session, on first use, under
pytest's temporary folder (``tmp_path_factory``), which pytest cleans up. Tests that write
into a run copy it first.

Nothing here imports torch, NeMo or another extra: ``pytest -m "not embed"`` collects and
runs with the ``dev`` extra only.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

# tools/ (the demo-corpus builder) runs from a checkout and is not installed; its tests import it
# from the repository root, which `python -m pytest` puts on sys.path and plain `pytest` does not.
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.append(_REPO)


@pytest.fixture(params=["sparse", "dense"], scope="module")
def topk_path(request) -> str:
    """Each test that takes it runs on both TopK training paths (``train.topk_path``)."""
    return request.param


# ----------------------------------------------------------------------------- analysis runs

@pytest.fixture(scope="session")
def labelled_data():
    """The labelled synthetic data of :mod:`analysis_helpers` (a planted language feature)."""
    from analysis_helpers import labelled_data

    return labelled_data()


@pytest.fixture(scope="session")
def labelled_store(tmp_path_factory, labelled_data) -> Path:
    """The labelled store (dim 24; split = sae / train / test)."""
    from analysis_helpers import write_labelled_store

    return write_labelled_store(tmp_path_factory.mktemp("analysis-store") / "store", labelled_data)


@pytest.fixture(scope="session")
def analysis_audio(tmp_path_factory, labelled_data) -> Path:
    """A WAV file for every ``source`` of the labelled store (for the report's audio)."""
    from analysis_helpers import write_audio

    return write_audio(tmp_path_factory.mktemp("analysis-audio") / "audio", labelled_data)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, labelled_store) -> Path:
    """The seed-0 sweep (k ∈ {3, 4} × L ∈ {8, 16, 32, 64}) on the store's unlabelled rows. Read-only."""
    from analysis_helpers import train_run

    return train_run(tmp_path_factory.mktemp("analysis-run") / "run-seed0", labelled_store, 0)


@pytest.fixture(scope="session")
def trained_run_seed1(tmp_path_factory, labelled_store) -> Path:
    """The same sweep with ``train.seed=1`` (universality). Read-only."""
    from analysis_helpers import train_run

    return train_run(tmp_path_factory.mktemp("analysis-run") / "run-seed1", labelled_store, 1)


@pytest.fixture(scope="session")
def sweep(trained_run):
    """The shared trained run, loaded (its model files)."""
    from jsae.runs.load import load_sweep

    return load_sweep(trained_run)


@pytest.fixture(scope="session")
def splits(labelled_store):
    """``(train, test)`` labelled rows of ``lang = es`` vs ``en`` from the shared store."""
    from jsae.analyses.labelled import load_labelled

    return (load_labelled(labelled_store, "lang", "es", negative="en", split="train"),
            load_labelled(labelled_store, "lang", "es", negative="en", split="test"))


@pytest.fixture(scope="session")
def analysed_run(tmp_path_factory, trained_run, trained_run_seed1, labelled_store, analysis_audio) -> Path:
    """A copy of the seed-0 run after every analysis command and ``jsae report``."""
    from analysis_helpers import analyse_run, fresh_copy

    run = fresh_copy(trained_run, tmp_path_factory.mktemp("analysis-analysed") / "analysed")
    return analyse_run(run, labelled_store, trained_run_seed1, analysis_audio)


# ----------------------------------------------------------------------------- safety runs

@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """240 random 8-d rows (:func:`safety_helpers.tiny_x`), split ``train``."""
    from safety_helpers import write_tiny_store

    return write_tiny_store(tmp_path_factory.mktemp("safety-store") / "store")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_store) -> Path:
    """A finished k=2 × L=8 sweep on :func:`tiny_store` (40 steps). Read-only: copy it to change it."""
    from safety_helpers import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("safety-run") / "run", tiny_store)


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(name, options)`` mounts a tmpfs (``options``: e.g. ``"size=1m"``, ``"size=1m,ro"``) at
    ``tmp_path/name`` and returns that path: a real full or read-only disk. Skipped, saying why,
    without root or when mounting fails; everything mounted is unmounted after the test."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("a real full or read-only disk is a small tmpfs, and mounting one needs root")
        point = tmp_path / name
        point.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
