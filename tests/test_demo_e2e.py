"""End to end on real (synthesised) audio: corpus builder → jsae embed → sweep → probe → split → steer → report."""
import json

import pandas as pd
import pytest

from jsae.embed.cli import main as embed_main
from jsae.sweeps.demo import run_demo
from tools.demo_corpus.build import build_corpus

# Runs resemblyzer (the embed extra) on a synthesised corpus, then the whole demo: minutes.
pytestmark = [pytest.mark.embed, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    build_corpus(root / "corpus", scale="tiny", seed=0)
    for name in ("sae_train", "language", "music"):
        rc = embed_main(["--manifest", str(root / "corpus" / f"{name}.jsonl"), "--encoder", "resemblyzer",
                         "--out", str(root / "stores" / name), "--no-progress", "-q"])
        assert rc == 0
    report = run_demo(root / "run", root / "stores",
                      overrides=["grid.k=[4,20]", "grid.latent_size=[32,200]", "train.steps=150",
                                 "train.batch_size=8", "train.steps_per_call=50", "train.progress=false",
                                 "train.val_fraction=0.1"])
    return root, report


def test_every_stage_writes_its_results(demo):
    root, report = demo
    analysis = root / "run" / "analysis"
    # probe folders name their non-default options (the demo's negative class and family groups)
    for name in ("probe-lang-es-vs-en-groups=speaker+gender", "probe-kind-music-vs-voice-groups=track",
                 "steer-lang-es-vs-en-k20-L200-flip-a1-normalized",
                 "steer-kind-music-vs-voice-k20-L200-flip-a1-normalized", "steer-lang-es-vs-en-flip-a1-mean_active-thr50",
                 "steer-kind-music-vs-voice-flip-a1-mean_active-thr50",
                 "consistency-lang-es-speaker-gender"):
        assert (analysis / name / "analysis.json").exists(), name
    page = report.read_text()
    assert "<img" in page and "probe" in page.lower()
    assert "not shown:" not in page  # every figure and table the analyses listed was found


def test_probe_covers_every_model_and_separates_music_from_voice(demo):
    root, _ = demo
    probe = pd.read_csv(root / "run" / "analysis" / "probe-kind-music-vs-voice-groups=track" / "probe.csv")
    assert set(probe["name"]) == {"k4_L32", "k20_L32", "k4_L200", "k20_L200"}
    # real recorded music and synthetic speech are far apart for the encoder: the
    # all-latent logistic regression separates them on the test split
    assert probe["logreg_test_accuracy"].max() >= 0.9


def test_steering_reports_delta_before_and_after_for_both_classes(demo):
    root, _ = demo
    result = json.loads((root / "run" / "analysis" / "steer-kind-music-vs-voice-k20-L200-flip-a1-normalized" / "analysis.json").read_text())
    rows = {r["samples"]: r for r in result["summary"]["table"]}
    assert set(rows) == {"music", "voice"}
    for r in rows.values():
        assert r["n"] > 0 and -2 <= r["before_steering"] <= 2 and -2 <= r["after_steering"] <= 2
    # Eq. 3 before steering: each class's reconstructions lie closer to its own training centroid
    assert rows["music"]["before_steering"] > 0 > rows["voice"]["before_steering"]


def test_the_demo_ends_with_an_atlas_of_the_headline_models_where_every_example_plays(demo):
    """The atlas of each feature's headline models on its labelled store: every example has
    a clip (cut from the corpus audio here; the bundled demo copies its bundled clips), and
    the report's headline links into it."""
    import re

    root, report = demo
    analysis = root / "run" / "analysis"
    for store in ("language", "music"):
        info = json.loads((analysis / f"atlas-{store}" / "analysis.json").read_text())
        s = info["summary"]
        assert info["analysis"] == "atlas" and s["clips_unavailable"] == 0 and s["clips_cut"] > 0, store
        assert "k20_L200" in info["params"]["models"]  # the paper's setting is always among them
        assert (analysis / f"atlas-{store}" / "index.html").is_file()
    page = report.read_text()
    links = re.findall(r'<a href="(atlas-[^"]+)">', page)
    assert links and all((analysis / link).is_file() for link in links)
