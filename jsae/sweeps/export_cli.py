"""``jsae export``: trained models in the layouts of SAELens and EleutherAI's sparsify (:mod:`jsae.export`).

    jsae export RUN --format saelens|sparsify --out DIR [--model NAME ...] [--k K ...] [--latent-size L ...]

Every selected model (default: every model of the run) is written to ``DIR/<model>/``.
The models are read from ``RUN/models`` (the model files: no checkpoint needed). ``DIR`` is
written aside and replaces an earlier export only when complete: after a kill or a full disk
the same command finishes the job.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from jsae.sweeps import conventions as cli

__all__ = ["add_export_command"]


def _model_files_batch(run: str):
    """The models of ``RUN/models`` as a ModelBatch (what :func:`jsae.sweeps.conventions.select` narrows)."""
    from jsae.models import ModelBatch, RunInfo
    from jsae.runs.modelfiles import PARAM_NAMES, read_models
    from jsae.core.spec import ModelSpec
    from jsae.core.sae import SAEParams

    index, files = read_models(run)
    return ModelBatch([ModelSpec.from_dict(f.spec) for f in files],
                      [SAEParams(**{k: f.params[k] for k in PARAM_NAMES}) for f in files], files[0].normalizer,
                      RunInfo(run_dir=Path(run), step=int(index["step"])))


def _cmd_export(args: argparse.Namespace) -> int:
    from jsae.export import export_models

    names = cli.select(_model_files_batch(args.run), args).names
    out = export_models(args.run, names, args.format, args.out)
    print(f"exported {len(names)} model(s) of {args.run} in the {args.format} layout to {out.resolve()}")
    for name in names:
        print(f"  {out / name}")
    return 0


def add_export_command(sub: Any) -> argparse.ArgumentParser:
    """Declare ``jsae export`` (see the module docstring)."""
    from jsae.export import FORMATS

    p = cli.add_command(sub, "export", _cmd_export, "export trained SAEs for SAELens or EleutherAI sparsify "
                                                     "(raw-embedding input: jsae's normalisation folded in)")
    cli.add_run(p, help="run directory of `jsae sweep` (reads RUN/models)")
    p.add_argument("--format", required=True, choices=FORMATS, help="target library layout")
    cli.add_out(p, "new or empty folder, or an earlier jsae export (replaced); one subfolder per model",
                required=True)
    cli.add_selection(p)
    return p
