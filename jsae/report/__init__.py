"""One self-contained HTML page for a run: metrics, every analysis, and the features.

:func:`build_report` gathers what the page shows (:mod:`jsae.report.page`: metrics, the
run's figures, every analysis folder, the headline of :mod:`jsae.report.headline`, the
top-activating segments of :mod:`jsae.report.segments` with audio players from
:mod:`jsae.report.audio`) and renders it with the Jinja2 template files in
``jsae/report/templates/`` (``report.html.j2``, ``report.css``), autoescaped, so a label
such as ``<script>…</script>`` is shown as text. The page is written atomically: a
reader sees the old page or the new one, never half of one; on a full disk, a read-only
folder or a denied permission the previous page is kept and the error is one line
(:func:`jsae.errors.writing_to`). The default page ``RUN/analysis/report.html`` is never
written through a symbolic link (``RUN/analysis`` must be a real folder). Segments whose
audio file was not found say so in their cell, and one warning line gives their number.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import jinja2

from ..analyses.defaults import REPORT_TOP
from ..errors import MissingPathError, NotFoundError, writing_to
from ..jsonio import atomic_write_text
from ..safety import UnsafeDeleteError, check_no_link
from .audio import audio_html, audio_roots, audio_src, locate_audio, missing_audio_warning, resolve_audio
from .page import CSP, page_context
from .segments import top_activating

__all__ = ["build_report", "render", "top_activating", "audio_html", "audio_src", "audio_roots", "resolve_audio",
           "locate_audio", "REPORT_NAME", "CSP", "TEMPLATES"]

REPORT_NAME = "report.html"
#: the folder of the page's template files
TEMPLATES = Path(__file__).resolve().parent / "templates"


def _check_out(out: Path) -> None:
    """The page replaces only an earlier jsae report, never another file (``--out notes.html``)."""
    if out.is_dir():
        raise UnsafeDeleteError(f"--out {out} is a folder, but the report's --out is the HTML file to write; give "
                                f"a file path, e.g. --out {out / REPORT_NAME}.")
    if out.exists() or out.is_symlink():
        try:
            with open(out, encoding="utf-8", errors="replace") as f:
                head = f.read(4096)
        except OSError:
            head = ""
        if out.is_symlink() or "<title>jsae report:" not in head:
            raise UnsafeDeleteError(f"refusing to overwrite --out {out}: it is not a jsae report. Nothing was "
                                    "written; choose another --out.")


def _missing_audio(ctx: dict[str, Any]) -> str | None:
    """The one warning line about the page's segments whose audio file was not found (None: none)."""
    sections = [a["segments"] for a in ctx.get("analyses") or [] if a.get("segments")]
    roots = list(dict.fromkeys(r for sec in sections for r in sec.get("audio_roots") or []))
    return missing_audio_warning(sum(int(sec.get("audio_not_found") or 0) for sec in sections), roots)


def _read_info(run_dir: Path) -> dict:
    """The run's ``sweep.json``; a missing or unreadable one is a one-line error."""
    if not (run_dir / "sweep.json").is_file():
        raise MissingPathError(f"{run_dir}: no sweep.json; give a `jsae sweep` run directory.")
    try:
        info = json.loads((run_dir / "sweep.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MissingPathError(f"{run_dir}/sweep.json cannot be read ({type(err).__name__}); the run is "
                               "damaged.") from None
    return info if isinstance(info, dict) else {}


def _selected(info: dict, models: Sequence[str] | None) -> set[str] | None:
    """``models`` as a set, every one checked against the run's models (a one-line error names them)."""
    if models is None:
        return None
    wanted = [str(m) for m in ([models] if isinstance(models, str) else models)]
    have = [str(m.get("name")) for m in info.get("models") or [] if isinstance(m, dict)]
    missing = [m for m in wanted if m not in have]
    if missing:
        raise NotFoundError(f"the run has no models {missing}; its models: {have}.")
    return set(wanted)


def render(context: dict) -> str:
    """The page: ``report.html.j2`` rendered with ``context`` (autoescaped; an undefined name is an error)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template("report.html.j2").render(**context)


def build_report(run_dir: str | Path, *, out: str | Path | None = None, top: int = REPORT_TOP,
                 audio_root: str | Path | None = None, store: str | Path | None = None,
                 models: Sequence[str] | None = None, max_features: int = 12) -> Path:
    """Write ``RUN_DIR/analysis/report.html`` (or ``out``) and return its path.

    ``store``: where to look for top-activating segments (default: the store each
    analysis used). ``audio_root``: a folder audio may be read from, besides those the
    store was exported from; relative ``source`` paths are relative to it. ``models``:
    names of the run's models to show (``None``: every model): every per-model table,
    the headline and the top-activating segments keep only those. ``out`` replaces only
    an earlier report; the page is written atomically.
    """
    run_dir = Path(run_dir)
    info = _read_info(run_dir)
    selected = _selected(info, models)
    if out is None:
        out = run_dir / "analysis" / REPORT_NAME
        check_no_link(out.parent, below=run_dir, fix="remove the link (or put a real folder in its place), or "
                                                     "write the page elsewhere with --out FILE")
    out = Path(out)
    _check_out(out)
    ctx = page_context(run_dir, info, top=top, audio_root=audio_root, store=store, models=selected,
                       max_features=max_features, page_dir=out.resolve().parent)
    page = render(ctx)
    kept = "the previous page is unchanged" if out.exists() else "no page was written"
    with writing_to(f"the report {out}", kept=f"{kept} (the page replaces it only when complete)"):
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write_text(out, page)
        except OSError as err:  # name the page, not the temporary file that was removed
            if isinstance(err.filename, str) and Path(err.filename).parent == out.parent:
                err.filename = str(out)
            raise
    note = _missing_audio(ctx)
    if note:
        warnings.warn(note, stacklevel=2)
    return out
