"""The split flow figure (paper Fig. 4) can be read: no node label overlaps another, and
every node says what it is made of, including the share of negative-class rows.

A planted flow with many small nodes in one column (the case where labels placed at their
nodes' centres pile up on each other) and a node that draws half its rows from the
negative class."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from jsae.analyses.splitting import NONE, SplitResult
from jsae.outputs.split import LABEL_GID, draw_split_flow, node_composition, plot_split_flow
from jsae.plots import pyplot


def crowded() -> SplitResult:
    """L=4: one root (#0) on 300 Spanish rows. L=8: the root's rows go to one big child (#1,
    250 rows) and eleven small children (#2…#12, 2–6 rows each); node #5 draws as many rows
    from English (the negative class) as from Spanish (4 and 4); 40 English rows fire nothing."""
    rng = np.random.default_rng(0)
    sizes = [4, 8]
    spk = rng.choice(["spkA", "spkB"], 300, p=[0.6, 0.4])
    cats = [f"es/{s}" for s in spk] + ["en/spkC"] * 40 + ["en/spkD"] * 4
    small = {j: int(n) for j, n in zip(range(2, 13), rng.integers(2, 7, 11))}
    small[5] = 4
    col8 = ["1"] * (300 - sum(small.values()))
    for j, n in small.items():
        col8 += [str(j)] * n
    col8 += [NONE] * 40 + ["5"] * 4
    assert len(col8) == 344 and col8.count("5") == 8
    col4 = ["0"] * 300 + [NONE] * 44
    assignment = np.array([col4, col8], dtype=object)
    nodes = [{"k": 4, "latent_size": 4, "latent": 0, "role": "root", "parent": 0, "branch": 0, "coverage": 1.0,
              "n_positive": 300, "dominant_group": "spkA", "purity": 0.6}]
    for j in range(1, 13):
        nodes.append({"k": 4, "latent_size": 8, "latent": j, "role": "child", "parent": 0, "branch": j,
                      "coverage": 0.8 if j == 1 else 0.2 + j / 100, "n_positive": 3, "dominant_group": "spkA",
                      "purity": 1.0})
    params = {"label": "lang", "positive": "es", "group": "speaker", "k": 4, "latent_sizes": sizes,
              "root_latent_size": 4, "root_latents": [0], "root_latent": 0,
              "categories": ["es/spkA", "es/spkB", "en/spkC", "en/spkD"]}
    return SplitResult(pd.DataFrame(), pd.DataFrame(nodes), pd.DataFrame(), assignment, np.array(cats), params)


@pytest.fixture(scope="module")
def figure():
    fig = draw_split_flow(crowded())
    fig.canvas.draw()
    yield fig
    pyplot().close(fig)


def label_boxes(fig):
    renderer = fig.canvas.get_renderer()
    texts = [t for ax in fig.axes for t in ax.texts if t.get_gid() == LABEL_GID]
    return texts, [t.get_window_extent(renderer) for t in texts]


def test_no_node_label_overlaps_another(figure):
    texts, boxes = label_boxes(figure)
    assert len(texts) == 2 + 12  # the root and "none" (the English rows that reach #5) at L=4; twelve children at L=8
    for (ta, a), (tb, b) in itertools.combinations(zip(texts, boxes), 2):
        assert not a.overlaps(b), f"{ta.get_text()!r} overlaps {tb.get_text()!r}"
    legend = figure.axes[0].get_legend().get_window_extent(figure.canvas.get_renderer())
    assert not any(b.overlaps(legend) for b in boxes)


def test_every_node_names_its_composition_and_a_half_negative_node_says_so(figure):
    texts, _ = label_boxes(figure)
    by_node = {t.get_text().split()[0]: t.get_text() for t in texts}
    five = by_node["#5"]
    assert five.startswith("#5 child of #0\nn=8: spk") and five.endswith("\nnegative 50% (en)")
    assert by_node["#0"].startswith("#0 root\nn=300: spkA ")
    assert by_node["none"].endswith("negative 100% (en)")
    for text in by_node.values():
        assert "n=" in text


def test_composition_equals_a_count_by_hand():
    cats = np.array(["es/a"] * 5 + ["es/b"] * 3 + ["es/c"] * 1 + ["en/x"] * 6 + ["fr/y"] * 5)
    lines = node_composition(cats, "es")
    assert lines == ["n=20: a 25%, b 15%, other 5%", "negative 55% (en, fr)"]
    assert node_composition(np.array(["es/a", "es/a"]), "es") == ["n=2: a 100%"]


def test_the_saved_figure_keeps_the_label_layout(tmp_path):
    path = plot_split_flow(crowded(), tmp_path / "flow.png")
    assert path.stat().st_size > 10_000
