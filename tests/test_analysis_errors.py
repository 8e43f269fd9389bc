"""Bad input to the analyses is refused with a message that names the offending value
and the fix: from the Python API (a ``StoreError``) and from the CLI (one line on
stderr, exit status 2)."""
import re

import numpy as np
import pandas as pd
import pytest

from jsae.analyses.labelled import load_labelled
from jsae.analyses.probing import probe
from jsae.analyses.splitting import feature_split
from jsae.analyses.steering import steer
from jsae.store import StoreError, write_store
from jsae.sweeps.cli import main


def small_store(path, dim=24, split=True, splits=("train",) * 6 + ("test",) * 4,
                lang=("es", "en") * 5):
    """A 10-row store; ``lang``/``split`` as given (``split=False``: no split column)."""
    table = pd.DataFrame({"lang": list(lang), "gender": ["f", "m"] * 5})
    if split:
        table["split"] = list(splits)
    x = np.random.default_rng(0).standard_normal((len(table), dim)).astype(np.float32)
    return str(write_store(path, x, table).path)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-stores")
    return {
        "wide": small_store(root / "wide", dim=32),
        "no_split": small_store(root / "no_split", split=False),
        "no_test": small_store(root / "no_test", splits=["train"] * 8 + ["sae"] * 2),
        # es only in train: the test split has 4 en rows and no es row.
        "es_train_only": small_store(root / "es_train_only", lang=["es", "en"] * 3 + ["en"] * 4),
    }


def cli(capsys, *argv):
    """Run `jsae ARGV`; returns (exit status, the stderr line)."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return rc, err


def test_unknown_label_column_names_the_columns(sweep, labelled_store):
    with pytest.raises(StoreError, match=r"no label column 'language'.*'lang'.*--label"):
        probe(sweep, labelled_store, "language", "es")


def test_unknown_label_value_names_the_values_present(sweep, labelled_store):
    with pytest.raises(StoreError, match=r"'lang' has no value 'fr' \(the positive class\).*\['en', 'es'\]"):
        probe(sweep, labelled_store, "lang", "fr")
    with pytest.raises(StoreError, match=r"no value 'de' \(the negative class\).*\['en', 'es'\].*--negative"):
        steer(sweep, labelled_store, "lang", "es", "de", k=3, latent_size=8)


def test_cli_unknown_label_value(sweep, capsys, labelled_store, trained_run):
    rc, err = cli(capsys, "probe", trained_run, "--data", labelled_store, "--label", "lang",
                  "--positive", "fr")
    assert rc == 2
    assert err.startswith("jsae probe: error:") and "no value 'fr'" in err and "['en', 'es']" in err


def test_class_without_test_rows_names_the_split_and_the_counts(sweep, stores):
    with pytest.raises(StoreError) as info:
        probe(sweep, stores["es_train_only"], "lang", "es")
    msg = str(info.value)
    assert "split 'test' has no rows with lang='es'" in msg
    assert "0 with lang='es', 4 with lang!='es'" in msg
    assert re.search(r"lang='es' \{'train': 3\}", msg), msg  # where the positives are


def test_embedding_dimension_mismatch_names_both_dims(sweep, stores):
    for analysis in (lambda s: probe(sweep, s, "lang", "es"),
                     lambda s: steer(sweep, s, "lang", "es", k=3, latent_size=8),
                     lambda s: feature_split(sweep, s, "lang", "es", "gender", 3)):
        with pytest.raises(StoreError, match=r"holds 32-d embeddings but sweep .* was trained on 24-d"):
            analysis(stores["wide"])


def test_cli_embedding_dimension_mismatch(stores, capsys, trained_run):
    for command in (["probe"], ["split", "--group", "gender", "--k", "3"],
                    ["steer", "--k", "3", "--latent-size", "8"]):
        rc, err = cli(capsys, command[0], trained_run, "--data", stores["wide"], "--label", "lang",
                      "--positive", "es", *command[1:])
        assert rc == 2 and err.startswith(f"jsae {command[0]}: error:"), err
        assert "32-d embeddings" in err and "24-d" in err


def test_store_without_split_column(sweep, stores, capsys, trained_run):
    with pytest.raises(StoreError, match=r"no 'split' column .*Add a 'split' column"):
        probe(sweep, stores["no_split"], "lang", "es")
    rc, err = cli(capsys, "probe", trained_run, "--data", stores["no_split"], "--label", "lang",
                  "--positive", "es")
    assert rc == 2 and "no 'split' column" in err


def test_store_without_test_rows_names_the_splits_present(stores):
    with pytest.raises(StoreError, match=r"no rows with split in \['test'\].*\{'train': 8, 'sae': 2\}.*--test-split"):
        load_labelled(stores["no_test"], "lang", "es", split="test")
    assert len(load_labelled(stores["no_test"], "lang", "es", split="sae")) == 2  # a split that exists works


def test_report_of_a_folder_that_is_no_run(tmp_path, capsys):
    rc, err = cli(capsys, "report", tmp_path / "nothing")
    assert rc == 2 and "no sweep.json" in err
    assert not (tmp_path / "nothing").exists()  # nothing written
