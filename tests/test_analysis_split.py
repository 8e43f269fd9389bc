"""Feature splitting (paper V-B): the planted es → es/f + es/m split is reported as L grows."""
import pytest

from jsae.analyses.splitting import NONE, feature_split
from jsae.runs.load import load_sweep


@pytest.fixture(scope="module")
def result(labelled_store, trained_run):
    return feature_split(load_sweep(trained_run), labelled_store, "lang", "es", "gender", k=3)


def test_root_feature_covers_both_sub_groups_at_the_smallest_size(result):
    lv = result.levels.set_index("latent_size")
    assert result.params["root_latent_size"] == 8
    assert lv.loc[8, "recall_f"] >= 0.95 and lv.loc[8, "recall_m"] >= 0.95
    assert not lv.loc[8, "split"]
    # the root is listed once, as the root, never as its own child
    assert lv.loc[8, "n_children"] == 0 and len(result.children(8)) == 0
    assert result.nodes[result.nodes.latent_size == 8].role.tolist() == ["root"]


def test_split_into_a_female_and_a_male_child_at_the_largest_size(result):
    lv = result.levels.set_index("latent_size")
    assert lv.loc[64, "split"]
    children = result.children(64)
    assert len(children) >= 2
    top = children.head(2)
    assert set(top.dominant_group) == {"f", "m"}
    assert (top.purity >= 0.9).all()
    # children by the rows they take (coverage, within); the decoder cosine is reported beside
    assert (top.coverage >= 0.2).all() and (top.within >= 0.8).all() and top.cosine.notna().all()
    assert result.params["min_cosine"] is None and result.params["warnings"] == []
    # The children together cover (almost) all of the root's positive rows.
    assert top.coverage.sum() >= 0.9


def test_first_split_is_reported_after_the_root_size(result):
    split_sizes = result.levels[result.levels.split].latent_size.tolist()
    assert split_sizes and min(split_sizes) > 8


def test_flows_conserve_the_tracked_rows(result):
    f = result.flows
    sizes = result.params["latent_sizes"]
    touched = (result.assignment != NONE).any(axis=0).sum()
    for a in sizes[:-1]:
        assert f[f.from_size == a]["count"].sum() == touched
    # Every positive row of the root flows somewhere at the next size.
    first = f[(f.from_size == 8) & (f.from_node != NONE) & f.category.str.startswith("es/")]
    assert first["count"].sum() == result.params["n_root_samples"]
