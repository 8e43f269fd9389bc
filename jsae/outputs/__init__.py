"""What the analyses leave behind: analysis folders (CSV, JSON, ``analysis.json``), figures,
the short tables the ``jsae`` commands print, and the ``run_*`` jobs (load the models,
run the math of :mod:`jsae.analyses`, write the folder).

* :mod:`~jsae.outputs.folders`: where an analysis writes, ``analysis.json``, reading folders back,
  and the one rule protecting an output folder from another parameter set
  (:func:`~jsae.outputs.folders.check_same_parameters`, :class:`~jsae.outputs.folders.OutputExistsError`).
* :mod:`~jsae.outputs.probe`, :mod:`~jsae.outputs.split`, :mod:`~jsae.outputs.steer`,
  :mod:`~jsae.outputs.universality`, :mod:`~jsae.outputs.consistency`: one analysis each.
"""
from .consistency import consistency_text, run_consistency, write_consistency
from .folders import (ANALYSIS_DIR, ANALYSIS_FILE, ANALYSIS_OUTPUTS, analysis_dir, analysis_workdir, batch_and_dir,
                      OutputExistsError, check_analysis_out, check_same_parameters, format_table,
                      is_analysis_output, listed_file, read_analyses, slug, write_analysis)
from .probe import (BEST_BY, FAMILY_COLUMNS, PROBE_COLUMNS, best_model, family_table, probe_summary, probe_table,
                    run_probe, write_probe)
from .split import plot_split_flow, run_split, split_table, write_split
from .steer import (SteerOutputExistsError, flip_table_text, run_steer, steer_folder_name, steer_table_text,
                    units_caption, write_steer)
from .universality import run_universality, universality_table, write_universality

__all__ = [
    "ANALYSIS_DIR", "ANALYSIS_FILE", "ANALYSIS_OUTPUTS", "analysis_dir", "analysis_workdir", "batch_and_dir",
    "check_analysis_out", "format_table", "is_analysis_output", "listed_file", "read_analyses", "slug",
    "write_analysis", "OutputExistsError", "check_same_parameters",
    "BEST_BY", "FAMILY_COLUMNS", "PROBE_COLUMNS", "best_model", "family_table", "probe_summary", "probe_table",
    "run_probe", "write_probe",
    "plot_split_flow", "run_split", "split_table", "write_split",
    "SteerOutputExistsError", "flip_table_text", "run_steer", "steer_folder_name", "steer_table_text",
    "units_caption", "write_steer",
    "run_universality", "universality_table", "write_universality",
    "consistency_text", "run_consistency", "write_consistency",
]
