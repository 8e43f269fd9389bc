"""Shared by the ``test_analysis_*`` files: a labelled synthetic store and two tiny sweeps.

The builders here write into a given folder; the session fixtures of ``conftest.py``
(``labelled_store``, ``trained_run``, ``trained_run_seed1``, ``analysis_audio``,
``analysed_run``) build each once per test session under pytest's temporary folder.

The store (``make_labelled_data``): dim 24, a planted ``lang = es`` direction on the
positive rows and a planted split of the positives by ``gender`` (f/m each add their
own direction); ``split`` = sae (4000 unlabelled rows, 30 % es) / train (600) /
test (400), balanced es/en. The sweeps (k ∈ {3, 4} × L ∈ {8, 16, 32, 64}) train with
``jsae sweep`` on the ``sae`` rows only, with seeds 0 and 1.
"""
from __future__ import annotations

import shutil
import wave
from pathlib import Path

import numpy as np

from jsae.store import write_store
from jsae.synthetic import LabelledData, make_labelled_data

REPO = Path(__file__).resolve().parents[1]
K = (3, 4)
LATENT_SIZES = (8, 16, 32, 64)
SWEEP_ARGS = [f"grid.k=[{','.join(map(str, K))}]", f"grid.latent_size=[{','.join(map(str, LATENT_SIZES))}]",
              "data.splits=[sae]", "train.steps=600", "train.batch_size=128", "train.steps_per_call=100",
              "train.checkpoint_every=600", "train.progress=false", "train.val_fraction=0.05", "optim.lr=3e-3",
              "sae.dead_after_samples=2000", "sae.b_pre_init=mean"]


def labelled_data() -> LabelledData:
    return make_labelled_data(feature_scale=3.0, split_scale=1.5, seed=0)


def write_labelled_store(folder: Path, d: LabelledData) -> Path:
    """The labelled store, written to ``folder``."""
    return write_store(folder, d.x, d.table, attrs={"encoder": {"name": "synthetic", "dim": 24}}).path


def write_audio(folder: Path, d: LabelledData) -> Path:
    """2-second 8 kHz WAV files for every ``source`` of the store (``call_XXX.wav``)."""
    folder.mkdir(exist_ok=True)
    t = np.arange(16000) / 8000.0
    for i, name in enumerate(sorted(set(d.table["source"]))):
        pcm = (3000 * np.sin(2 * np.pi * (200 + 10 * i) * t)).astype("<i2")
        with wave.open(str(folder / name), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(pcm.tobytes())
    return folder


def train_run(run: Path, store: Path, seed: int) -> Path:
    """A sweep trained by ``jsae sweep`` on the unlabelled rows of ``store`` into ``run``."""
    from jsae.sweeps.cli import main

    rc = main(["sweep", str(REPO / "configs" / "default.yaml"), "--out", str(run),
               f"data.store={store}", f"train.seed={seed}", *SWEEP_ARGS])
    assert rc == 0
    return run


def fresh_copy(run: Path, dest: Path) -> Path:
    """A copy of a run directory (for tests that write analysis outputs into it)."""
    shutil.copytree(run, dest)
    return dest


def analyse_run(run: Path, store: Path, other_run: Path, audio: Path) -> Path:
    """Run every analysis command and then ``jsae report`` on ``run`` (a copy of the seed-0
    run; outputs in ``RUN/analysis/``, the page in ``RUN/analysis/report.html``)."""
    from jsae.sweeps.cli import main

    common = ["--data", str(store), "--label", "lang", "--positive", "es"]
    assert main(["probe", str(run), *common]) == 0
    assert main(["split", str(run), *common, "--group", "gender", "--k", "3"]) == 0
    assert main(["steer", str(run), *common, "--negative", "en", "--k", "3", "--latent-size", "8",
                 "--alpha", "1", "--alpha-units", "mean_active"]) == 0
    assert main(["universality", str(run), str(other_run), "--data", str(store)]) == 0
    assert main(["consistency", str(run), *common, "--negative", "en", "--group", "gender"]) == 0
    assert main(["report", str(run), "--audio-root", str(audio)]) == 0
    return run
