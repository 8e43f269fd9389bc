"""Probing (paper III-C, V-A) on a sweep trained without labels: the planted feature is found."""
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_score, recall_score

from analysis_helpers import K, LATENT_SIZES
from jsae.analyses.labelled import load_labelled
from jsae.analyses.probing import probe


@pytest.fixture(scope="module")
def result(sweep, labelled_store):
    return probe(sweep, labelled_store, "lang", "es")


def test_one_row_per_model_of_the_grid(result):
    assert {(r.k, r.latent_size) for r in result.itertuples()} == {(k, L) for k in K for L in LATENT_SIZES}
    assert (result["support"] == 200).all() and (result["n_test"] == 400).all()
    assert result.attrs["n_train"] == 600 and result.attrs["n_train_positive"] == 300


def test_probe_finds_the_planted_feature_with_high_precision_and_recall(result):
    good = result[(result.precision >= 0.95) & (result.recall >= 0.95)]
    assert len(good) >= 1, result[["name", "latent", "precision", "recall"]]
    # The smallest models have not split the feature yet (k=3, L=8).
    row = result[(result.k == 3) & (result.latent_size == 8)].iloc[0]
    assert row.precision >= 0.95 and row.recall >= 0.95


def test_after_the_split_one_latent_keeps_precision_but_loses_recall(result):
    """The paper's two regimes (Fig. 2b): recall drops to about one sub-group."""
    big = result[(result.k == 3) & (result.latent_size == 64)].iloc[0]
    assert big.precision >= 0.95 and 0.3 <= big.recall <= 0.7


def test_after_the_split_the_feature_family_covers_both_sub_groups(sweep, labelled_store, result):
    """The family (greedy cover on train) holds the es/f and the es/m latent; the paper's
    columns are those of a probe without it."""
    fam = probe(sweep.select(k=3), labelled_store, "lang", "es", groups=["gender"])
    big = fam.set_index("name").loc["k3_L64"]
    assert big.family_size == 2 and big.family_precision >= 0.95 and big.family_recall >= 0.95
    assert set(big.family_gender.split(", ")) == {"f", "m"}
    assert int(big.latent) in map(int, big.family.split())
    paper = result.set_index("name").loc[fam.name, ["latent", "precision", "recall", "f1", "train_best_latent"]]
    pd.testing.assert_frame_equal(fam.set_index("name")[paper.columns], paper)


def test_all_latent_logistic_regression_accuracy_and_the_direct_search_bound(result):
    assert (result.logreg_test_accuracy >= 0.95).all()
    assert (result.latent_test_accuracy == result.accuracy).all()
    assert (result.train_best_f1 >= result.train_f1 - 1e-12).all()


def test_batched_scores_equal_a_per_model_sklearn_loop(sweep, result, labelled_store):
    train = load_labelled(labelled_store, "lang", "es", split="train")
    test = load_labelled(labelled_store, "lang", "es", split="test")
    for m in sweep.models()[::3]:
        clf = LogisticRegression(max_iter=2000, random_state=0).fit(m.encode(train.x).astype(np.float64), train.y)
        phi = int(np.argmax(clf.coef_[0]))
        row = result[result.name == m.spec.name].iloc[0]
        assert row.latent == phi
        pred = m.encode(test.x)[:, phi] > 0
        assert row.precision == pytest.approx(precision_score(test.y, pred, zero_division=0))
        assert row.recall == pytest.approx(recall_score(test.y, pred, zero_division=0))
