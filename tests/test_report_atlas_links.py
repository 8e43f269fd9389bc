"""The report's headline links each named latent into the feature atlas of the same store:
the latent's page (a family's row: its model's index), by a relative link that resolves
from wherever the page is written; models the atlas does not hold get no link."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from analysis_helpers import fresh_copy
from jsae.sweeps.cli import main


@pytest.fixture(scope="module")
def run(analysed_run, labelled_store, tmp_path_factory):
    run = fresh_copy(analysed_run, tmp_path_factory.mktemp("atlas-links") / "run")
    assert main(["atlas", str(run), "--data", str(labelled_store), "--k", "3", "--no-audio"]) == 0
    return run


def headline_rows(page: str) -> list[str]:
    head = page.split('<h2 id="headline">', 1)[1].split("<nav>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", head, flags=re.S)


@pytest.mark.parametrize("elsewhere", [False, True])
def test_headline_latents_link_to_their_atlas_pages(run, tmp_path, capsys, elsewhere):
    out = (tmp_path / "pages" / "r.html") if elsewhere else (run / "analysis" / "report.html")
    assert main(["report", str(run), *(["--out", str(out)] if elsewhere else [])]) == 0
    capsys.readouterr()
    page = out.read_text()
    atlas = json.loads((run / "analysis" / "atlas-store" / "analysis.json").read_text())
    in_atlas = set(atlas["params"]["models"])
    assert in_atlas == {n for n in pd.read_csv(run / "analysis" / "probe-lang-es" / "probe.csv").name
                        if n.startswith("k3_")}
    rows = headline_rows(page)
    assert rows
    linked = 0
    for row in rows:
        cells = re.findall(r"<td>(.*?)</td>", row, flags=re.S)
        if not cells:  # the header
            continue
        model, latent = cells[2], cells[3]
        link = re.search(r'<a href="([^"]+)">([^<]+)</a>', row)
        if model not in in_atlas:
            assert link is None, row
            continue
        assert link is not None, row
        href, text = link.groups()
        target = (out.parent / href).resolve()
        assert target.is_file() and target.parent.name == model
        if latent.isdigit():  # a single latent: its own page
            assert target.name == f"latent-{latent}.html" and text == f"latent {latent}"
        else:  # a family (several latents): the model's index
            assert target.name == "index.html"
        linked += 1
    assert linked >= 1
