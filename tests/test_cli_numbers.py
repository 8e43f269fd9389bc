"""Every numeric option of the analysis commands refuses non-finite and out-of-range values
as a one-line usage error naming the value and the range, before any work (``nan``,
``inf``, ``1e30`` never reach an analysis: ``steer --alpha nan`` was an IndexError,
``--alpha inf`` claimed flips with empty results, ``probe --C 0`` an sklearn traceback)."""
from __future__ import annotations

import pytest

from jsae.sweeps.cli import build_parser, main

COMMON = ["--data", "STORE", "--label", "lang", "--positive", "es"]
BAD = [
    (["steer", "RUN", *COMMON, "--negative", "en", "--alpha"], "nan", "--alpha", "[-1e+06, 1e+06]"),
    (["steer", "RUN", *COMMON, "--negative", "en", "--alpha"], "inf", "--alpha", "[-1e+06, 1e+06]"),
    (["steer", "RUN", *COMMON, "--negative", "en", "--alpha"], "1e30", "--alpha", "[-1e+06, 1e+06]"),
    (["steer", "RUN", *COMMON, "--negative", "en", "--flip-threshold", "--a-max"], "0", "--a-max", "(0, 1e+06]"),
    (["probe", "RUN", *COMMON, "--C"], "nan", "--C", "(0, ∞)"),
    (["probe", "RUN", *COMMON, "--C"], "0", "--C", "(0, ∞)"),
    (["probe", "RUN", *COMMON, "--C"], "-1", "--C", "(0, ∞)"),
    (["probe", "RUN", *COMMON, "--family-min-precision"], "nan", "--family-min-precision", "[0, 1]"),
    (["probe", "RUN", *COMMON, "--family-min-precision"], "1.5", "--family-min-precision", "[0, 1]"),
    (["probe", "RUN", *COMMON, "--family-max"], "0", "--family-max", "whole number in [1, ∞)"),
    (["split", "RUN", *COMMON, "--group", "g", "--min-coverage"], "nan", "--min-coverage", "[0, 1]"),
    (["split", "RUN", *COMMON, "--group", "g", "--min-cosine"], "-2", "--min-cosine", "[-1, 1]"),
    (["consistency", "RUN", *COMMON, "--folds"], "1", "--folds", "whole number in [2, ∞)"),
    (["consistency", "RUN", *COMMON, "--C"], "inf", "--C", "(0, ∞)"),
    (["universality", "RUN_A", "RUN_B", "--threshold"], "2", "--threshold", "[-1, 1]"),
    (["universality", "RUN_A", "RUN_B", "--max-rows"], "-5", "--max-rows", "whole number in [1, ∞)"),
]


@pytest.mark.parametrize("argv, value, option, wanted", BAD, ids=lambda x: x if isinstance(x, str) else None)
def test_a_bad_number_is_one_line_naming_the_option_and_the_range(argv, value, option, wanted, capsys):
    assert main([*argv, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith(f"jsae {argv[0]}: error: argument {option}") and f"got {value!r}" in line, line
    assert wanted in line, line


def test_values_in_range_parse_as_numbers():
    p = build_parser()
    a = p.parse_args(["steer", "RUN", *COMMON, "--negative", "en", "--alpha", "-2", "0.5", "1e6"])
    assert a.alpha == [-2.0, 0.5, 1e6]
    a = p.parse_args(["probe", "RUN", *COMMON, "--C", "1e-4", "--family-max", "3", "--family-min-precision", "1"])
    assert (a.C, a.family_max, a.family_min_precision) == (1e-4, 3, 1.0) and isinstance(a.family_max, int)
