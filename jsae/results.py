"""Where analyses write their results, and how (JSON, CSV, a short printed table).

Every analysis writes into ``RUN_DIR/analysis/<name>/`` (or ``--out``):
``analysis.json`` (``{"analysis": kind, "params": {...}, "summary": {...},
"features": [...], "files": [...]}``), its tables as CSV and its figures as PNG.
:mod:`jsae.report` reads these folders back.

Those files have fixed names (``probe.csv``, ``steer.json``, …), so ``--out DIR`` is
refused (:func:`check_analysis_out`, through :func:`jsae.safety.check_writable_folder`)
unless ``DIR`` is new, empty, or an earlier output of the same analysis: an
``analysis.json`` of that kind next to nothing but files that analysis writes.
"""
from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = ["ANALYSIS_DIR", "ANALYSIS_FILE", "ANALYSIS_OUTPUTS", "analysis_dir", "check_analysis_out",
           "is_analysis_output", "slug", "to_jsonable", "write_json",
           "atomic_write_text", "atomic_write_json", "write_analysis", "read_analyses", "format_table"]

ANALYSIS_DIR = "analysis"
ANALYSIS_FILE = "analysis.json"
#: the file names (glob patterns) each analysis writes besides ``analysis.json``
ANALYSIS_OUTPUTS: dict[str, tuple[str, ...]] = {
    "probe": ("probe.csv", "probe.json", "precision.png", "recall.png", "f1.png", "logreg_test_accuracy.png"),
    "split": ("split_levels.csv", "split_nodes.csv", "split_flows.csv", "split.json", "split_flow.png"),
    "steer": ("steer_summary.csv", "steer_table.csv", "steer.json", "delta_hist_*.png", "alpha_*.png",
              "pos_after.png", "neg_after.png"),
    "universality": ("universality.csv", "universality_matches.csv", "universality.json", "universality_hist.png",
                     "mean_max.png"),
    "consistency": ("consistency.csv", "by.csv", "consistency.json", "consistency.png"),
}
#: a temporary file of :func:`atomic_write_text` left by a killed write: ``.NAME.PID.HEX8.tmp``
_TMP = re.compile(r"^\.(?P<name>.+)\.\d+\.[0-9a-f]{8}\.tmp$")


def slug(*parts: Any) -> str:
    """A file-name-safe folder name from parts, e.g. ``probe-lang-es``."""
    text = "-".join(str(p) for p in parts if p is not None and str(p) != "")
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_") or "analysis"


def _foreign_entries(path: Path, kind: str) -> list[str] | None:
    """The entries of ``path`` that are not files of the ``kind`` analysis, or None when
    ``path`` holds no ``analysis.json`` of that kind (see :func:`is_analysis_output`)."""
    if path.is_symlink() or not path.is_dir():
        return None
    marker = path / ANALYSIS_FILE
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("analysis") != kind:
        return None
    listed = {f for f in info.get("files") or [] if isinstance(f, str)} | {ANALYSIS_FILE}
    patterns = ANALYSIS_OUTPUTS.get(kind, ())

    def known(name: str) -> bool:
        return name in listed or any(fnmatch.fnmatchcase(name, p) for p in patterns)

    foreign = []
    for entry in sorted(path.iterdir()):
        tmp = _TMP.match(entry.name)
        if entry.is_symlink() or not entry.is_file() or not (known(entry.name) or (tmp and known(tmp.group("name")))):
            foreign.append(entry.name)
    return foreign


def is_analysis_output(path: str | Path, kind: str) -> bool:
    """True if ``path`` is a folder written by the ``kind`` analysis (``probe``, ``steer``, …):
    its ``analysis.json`` says ``"analysis": kind``, and every other entry is a plain file
    (no folder, no symbolic link) that it lists or that the analysis writes
    (:data:`ANALYSIS_OUTPUTS`), or a temporary file of an interrupted write of one."""
    return _foreign_entries(Path(path), kind) == []


def check_analysis_out(out: str | Path, kind: str) -> None:
    """Refuse ``--out DIR`` for the ``kind`` analysis unless ``DIR`` is new, empty or an
    earlier output of that analysis (:func:`is_analysis_output`): it writes files with
    fixed names (``probe.csv``, …) that would overwrite or mix with other files there.
    Raises :class:`jsae.safety.UnsafeDeleteError` (a one-line JsaeError); nothing is written."""
    from .safety import UnsafeDeleteError, check_writable_folder

    what = f"an earlier `jsae {kind}` output"
    foreign = _foreign_entries(Path(out), kind)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", …" if len(foreign) > 5 else "")
        raise UnsafeDeleteError(
            f"--out {out} is not empty and not {what}: it holds an analysis.json of `jsae {kind}` but also {shown}, "
            f"which `jsae {kind}` does not write (or a folder or symbolic link); choose a new or empty folder."
        )
    check_writable_folder(out, what=what, is_ours=lambda p: is_analysis_output(p, kind))


def analysis_dir(run_dir: str | Path | None, name: str, out: str | Path | None = None, *,
                 kind: str | None = None) -> Path:
    """``out`` or ``RUN_DIR/analysis/<name>``, created (models from no run directory need ``out``).

    An ``out`` given by the user is checked first with :func:`check_analysis_out`
    (``kind``: the analysis, by default the first part of ``name``, e.g. ``probe``).
    """
    if out is not None:
        check_analysis_out(out, kind or name.split("-", 1)[0])
    elif run_dir is None:
        from .errors import BadValueError

        raise BadValueError(f"the models of this {name} come from no run directory, so there is no default output "
                            "folder; pass out=DIR.")
    path = Path(out) if out is not None else Path(run_dir) / ANALYSIS_DIR / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays → Python; NaN/Inf → ``None`` (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, pd.DataFrame):
        return to_jsonable(obj.to_dict(orient="records"))
    return obj


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a temporary file in the same folder,
    flushed to disk, then renamed over ``path``.

    A reader sees the old file or the new one, never a half-written one, even if the
    process is killed or the disk fills up mid-write (the temporary file is removed
    and the error — e.g. ``OSError(ENOSPC)`` — propagates; the old file is intact).
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode as a plain open() gives
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 1, **dumps_kwargs: Any) -> Path:
    """``json.dumps(obj)`` written with :func:`atomic_write_text`."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, **dumps_kwargs))


def write_json(path: str | Path, obj: Any) -> Path:
    """Strict JSON of ``obj`` (numpy → Python, NaN/Inf → null), written atomically."""
    return atomic_write_json(path, to_jsonable(obj), allow_nan=False)


def write_analysis(out_dir: Path, kind: str, params: dict[str, Any], summary: dict[str, Any],
                   files: Iterable[str | Path], features: Sequence[dict[str, Any]] = (),
                   tables: dict[str, str] | None = None) -> Path:
    """Write ``analysis.json``; ``files`` are made relative to ``out_dir``.

    ``features``: the latents the analysis identified, each
    ``{"k", "latent_size", "latent", "why"}``: :mod:`jsae.report` lists their
    top-activating segments. ``tables``: ``{title: csv file}`` to show in the report.
    """
    rel = sorted({str(Path(f).relative_to(out_dir)) if Path(f).is_absolute() else str(f) for f in files})
    return write_json(out_dir / ANALYSIS_FILE, {"analysis": kind, "params": params, "summary": summary,
                                                "features": list(features), "files": rel,
                                                "tables": tables or {}})


def read_analyses(run_dir: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """``(folder, analysis.json)`` of every analysis of a run, sorted by folder name."""
    root = Path(run_dir) / ANALYSIS_DIR
    if not root.exists():
        return []
    out = []
    for f in sorted(root.glob(f"*/{ANALYSIS_FILE}")):
        try:
            out.append((f.parent, json.loads(f.read_text())))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def format_table(df: pd.DataFrame, columns: Sequence[str] | None = None, max_rows: int = 40,
                 floatfmt: str = "{:.3f}") -> str:
    """A short fixed-width text table of ``df`` (floats rounded)."""
    cols = [c for c in (columns or df.columns) if c in df.columns]
    view = df[cols].head(max_rows).copy()
    for c in cols:
        if pd.api.types.is_float_dtype(view[c]):
            view[c] = view[c].map(lambda v: "nan" if pd.isna(v) else floatfmt.format(v))
    text = view.to_string(index=False)
    if len(df) > max_rows:
        text += f"\n... ({len(df) - max_rows} more rows)"
    return text
