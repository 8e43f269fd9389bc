"""Shared by the ``test_safety_*`` and ``test_errors_one_line`` files: a tiny store and a
tiny trained run (k=2 × L=8 on 8-d rows, 40 steps: a few seconds), built once per test
session by the ``tiny_store`` / ``tiny_run`` fixtures of ``conftest.py``, and a helper
that runs ``jsae`` in-process and returns its stderr."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from jsae.store import write_store

REPO = Path(__file__).resolve().parents[1]
DIM = 8
TINY_SWEEP = ["grid.k=[2]", "grid.latent_size=[8]", "train.steps=40", "train.batch_size=32",
              "train.steps_per_call=20", "train.checkpoint_every=40", "train.progress=false",
              "train.val_fraction=0.1", "sae.b_pre_init=mean", "sae.dead_after_samples=500"]


def tiny_x(n: int = 240, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def write_tiny_store(folder: Path) -> Path:
    """The tiny store (240 rows of :func:`tiny_x`), written to ``folder``."""
    x = tiny_x()
    table = pd.DataFrame({"id": [f"r{i}" for i in range(len(x))], "split": ["train"] * len(x)})
    return write_store(folder, x, table).path


def train_tiny_run(run: Path, store: Path) -> Path:
    """A finished sweep (k=2, L=8) trained by ``jsae sweep`` on ``store`` into ``run``."""
    from jsae.sweeps.cli import main

    rc = main(["sweep", str(REPO / "configs" / "default.yaml"), "--out", str(run), f"data.store={store}",
               *TINY_SWEEP])
    assert rc == 0
    return run


def jsae(capsys, *argv) -> tuple[int, list[str]]:
    """Run ``jsae ARGV`` in-process; returns (exit status, the non-empty stderr lines)."""
    from jsae.sweeps.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


def snapshot(folder: Path) -> dict[str, bytes]:
    """``{relative path: bytes}`` of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
