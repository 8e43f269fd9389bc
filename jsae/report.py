"""One self-contained HTML page for a run: metrics, every analysis, and the features.

:func:`build_report` gathers ``RUN_DIR/metrics.json`` and the run's figures, every
analysis folder under ``RUN_DIR/analysis/`` (their ``analysis.json``, tables and
figures) and, for every feature the analyses identified, its top-activating
segments: their ``id``, ``source``, ``offset``, ``duration`` and labels, and an
``<audio>`` player when the audio file is reachable (the segment is cut and
embedded as a WAV data URI; formats the standard library cannot cut are linked with
a ``#t=start,end`` media fragment instead). Figures are embedded as base64 PNG, so
the page is one file that can be mailed around.

**Safety.** Metadata, analysis files and paths are data, never markup: the page is
rendered by a Jinja2 template with autoescaping, so a label such as
``<script>…</script>`` is shown as text. A Content-Security-Policy ``<meta>`` allows
no script at all, images and audio only as ``data:`` URIs (audio also as a local
``file:`` link) and inline styles only. Audio is read only from files whose real
path lies under an *audio root*: ``--audio-root``, or the folders the store was
exported from (``store.json``: ``audio_roots``, ``inputs.audio_dir``, the manifest's
folder); a ``source`` such as ``../../x.wav``, an absolute path elsewhere or a link
leading out of the roots is not read, and the page says so. Figures and tables named
by an ``analysis.json`` are read only from inside that analysis folder.

**Paths.** An ``analysis.json`` names its files relative to its own folder and its store
by an absolute path, so the page is the same whatever the working directory and after
the run is moved; older files that recorded working-directory paths are read through
:func:`jsae.results.listed_file` and :func:`jsae.results.analysis_workdir`. A listed
figure or table that is not found is named on the page, never dropped silently.

**Headline.** For every probe: the best model and what it was chosen by (``best_by``),
the paper's setting (K = 20, L = 200; the summary's ``paper_*`` or the row of
``probe.csv``) and the feature family's union (``family_union_*``) when measured.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import JsaeError, MissingPathError, NotFoundError
from .results import analysis_workdir, listed_file, read_analyses

__all__ = ["build_report", "top_activating", "audio_html", "audio_src", "audio_roots", "resolve_audio",
           "locate_audio", "REPORT_NAME", "CSP"]

REPORT_NAME = "report.html"
#: the page needs no script; images are data: URIs, audio data: URIs (or a local file: link)
CSP = ("default-src 'none'; img-src data:; media-src data: file:; style-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")
_HIDE_COLUMNS = ("split", "spans")  # spans: played by the audio cell
_AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf")
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-top:.6em} h3{font-size:1.05em}
.table{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.8em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:2px 4px;text-align:right;vertical-align:middle}
th{background:#f3f3f3;max-width:7em} td{white-space:nowrap}
nav{font-size:.9em;line-height:1.6} nav a{margin-right:1em;white-space:nowrap}
img{max-width:100%;margin:.3em .5em .3em 0;border:1px solid #eee}
.params{font-family:monospace;font-size:.8em;color:#555;white-space:pre-wrap}
.note{color:#666;font-size:.85em} audio{height:28px;width:220px}
.unfinished{color:#a00}
"""

_TEMPLATE = r"""<!doctype html>
<html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<title>jsae report: {{ run_name }}</title>
<style>{{ style }}</style></head><body>
{%- macro table(t) %}
<div class="table"><table>
<thead><tr>{% for col in t.columns %}<th>{% for part in col.split('_') %}{% if not loop.first %}_<wbr>{% endif %}{{ part }}{% endfor %}</th>{% endfor %}</tr></thead>
<tbody>
{%- for row in t.rows %}
<tr>{% for kind, value in row %}<td>{% if kind == "audio" %}<audio controls preload="none" src="{{ value }}"></audio>{% elif kind == "note" %}<span class="note">{{ value }}</span>{% else %}{{ value }}{% endif %}</td>{% endfor %}</tr>
{%- endfor %}
</tbody></table></div>
{%- if t.more %}<p class="note">{{ t.more }} more rows in the CSV.</p>{% endif %}
{%- endmacro %}
{%- macro images(items) %}{% for im in items %}<img alt="{{ im.name }}" title="{{ im.name }}" src="{{ im.src }}">{% endfor %}{% endmacro %}
<h1>jsae report: {{ run_path }}</h1>
<p>{{ n_models }} models, step {{ step }}, embedding dim {{ dim }}, trained on {{ source }} ({{ n_train }} rows, {{ n_val }} for validation).</p>
{%- if unfinished %}
<p class="unfinished"><strong>unfinished: step {{ step }} of {{ total_steps }}</strong> — the models are partly trained; re-run the same <code>jsae sweep</code> command to finish the run.</p>
{%- endif %}
{%- if headline %}
<h2 id="headline">Headline</h2>
{%- for h in headline %}
<h3>{{ h.what }}</h3>{{ table(h.table) }}
{%- for note in h.notes %}
<p class="note">{{ note }}</p>
{%- endfor %}
{%- endfor %}
{%- endif %}
<nav>{% for id, text in links %}<a href="#{{ id }}">{{ text }}</a> {% endfor %}</nav>
<h2 id="training">Training</h2>
{%- if metrics %}{{ table(metrics) }}{% endif %}
{{ images(training_images) }}
{%- if not analyses %}
<p class="note">No analyses yet: run <code>jsae probe</code>, <code>jsae split</code>, <code>jsae steer</code> or <code>jsae universality</code> first.</p>
{%- endif %}
{%- for a in analyses %}
<h2 id="{{ a.id }}">{{ a.kind }}: {{ a.name }}</h2>
<div class="params">{{ a.params }}</div>
{%- if a.summary %}{{ table(a.summary) }}{% endif %}
{%- for title, t in a.tables %}
<h3>{{ title }}</h3>{{ table(t) }}
{%- endfor %}
{{ images(a.images) }}
{%- for note in a.notes %}
<p class="note">{{ note }}</p>
{%- endfor %}
{%- if a.segments %}
<h3>Top-activating segments ({{ a.segments.store }})</h3>
{%- for note in a.segments.notes %}
<p class="note">{{ note }}</p>
{%- endfor %}
{%- for f in a.segments.features %}
<h3>k={{ f.k }}, L={{ f.L }}, latent {{ f.latent }}</h3><p>{{ f.why }}</p>
{%- if f.table %}{{ table(f.table) }}{% else %}<p class="note">never fires on this store.</p>{% endif %}
{%- endfor %}
{%- endif %}
{%- endfor %}
</body></html>
"""


# ----------------------------------------------------------------------------- cells and tables

@dataclass(frozen=True)
class _Cell:
    """A cell the report makes itself (not data): ``audio`` (src of a player) or ``note``."""

    kind: str
    value: str


def _fmt(value: Any) -> str:
    """A table cell as text: floats with 3 decimals, missing values empty."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(float(value)) else f"{float(value):.3f}"
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return str(value)


def _table(df: pd.DataFrame, max_rows: int = 60) -> dict[str, Any]:
    """A table for the template: column names, and cells as ``(kind, text)`` with kind
    ``text``, ``audio`` (an :class:`_Cell` made here: the player's src) or ``note``; the
    template escapes every one."""
    view = df.head(max_rows)
    rows = [[(cell.kind, cell.value) if isinstance(cell, _Cell) else ("text", _fmt(cell)) for cell in row]
            for row in view.itertuples(index=False, name=None)]
    return {"columns": [str(c) for c in view.columns], "rows": rows, "more": max(0, len(df) - max_rows)}


def _drop_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """Without the ``activation``/``l1_coef`` columns of an all-TopK table (always topk / 0);
    the CSV keeps them."""
    if "activation" in df.columns and (df["activation"].astype(str) == "topk").all():
        return df.drop(columns=[c for c in ("activation", "l1_coef") if c in df.columns])
    return df


def _image(path: Path) -> dict[str, str]:
    return {"name": path.name, "src": "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")}


# ----------------------------------------------------------------------------- audio

def audio_roots(store_info: dict | None = None, audio_root: str | Path | Iterable[str | Path] | None = None
                ) -> list[Path]:
    """The folders audio may be read from: ``audio_root`` (the ``--audio-root`` option) and
    the folders the store was exported from (``store.json``: ``audio_roots``,
    ``inputs.audio_dir``, the manifest's folder), as real paths; the file-system root
    is never one."""
    given = [audio_root] if isinstance(audio_root, (str, os.PathLike)) else list(audio_root or [])
    info = store_info or {}
    inputs = info.get("inputs") or {}
    stored = list(info.get("audio_roots") or [])
    if inputs.get("audio_dir"):
        stored.append(inputs["audio_dir"])
    if inputs.get("manifest"):
        stored.append(Path(str(inputs["manifest"])).parent)
    roots: list[Path] = []
    for r in given + stored:
        try:
            p = Path(str(r)).expanduser().resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if p.is_dir() and p != Path(p.anchor) and p not in roots:
            roots.append(p)
    return roots


def locate_audio(source: Any, roots: Sequence[Path]) -> tuple[Path | None, str]:
    """``(real path, "")`` of the audio file ``source`` names if it lies under one of ``roots``;
    otherwise ``(None, reason)`` with reason ``"outside"`` (it exists but its real path is not
    under a root: ``../``, an absolute path elsewhere, a link leading out), ``"missing"`` or
    ``"no roots"``."""
    text = "" if source is None else str(source)
    if not text or "\0" in text:
        return None, "missing"
    if not roots:
        return None, "no roots"
    p = Path(text).expanduser()
    candidates = [p] if p.is_absolute() else [r / p for r in roots]
    outside = False
    for c in candidates:
        try:
            real = c.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if not real.is_file():
            continue
        for r in roots:
            try:
                real.relative_to(r)
            except ValueError:
                continue
            return real, ""
        outside = True
    return None, "outside" if outside else "missing"


def resolve_audio(source: str, store_dir: Path | None = None, store_info: dict | None = None,
                  audio_root: str | Path | None = None) -> Path | None:
    """The audio file a ``source`` entry names, if it exists under an audio root
    (:func:`audio_roots`); ``None`` otherwise. ``store_dir`` is not a root (kept for
    compatibility)."""
    return locate_audio(source, audio_roots(store_info, audio_root))[0]


def _read_wav(path: Path, offset: float, duration: float | None) -> tuple[bytes, dict[str, int]]:
    """Raw frames of ``[offset, offset + duration)`` of a WAV file and its format."""
    with wave.open(str(path), "rb") as src:
        sr, n = src.getframerate(), src.getnframes()
        start = min(n, max(0, int(round(offset * sr))))
        count = n - start if duration is None or not np.isfinite(duration) else int(round(duration * sr))
        src.setpos(start)
        fmt = {"channels": src.getnchannels(), "width": src.getsampwidth(), "rate": sr}
        return src.readframes(max(0, count)), fmt


def _read_soundfile(path: Path, offset: float, duration: float | None) -> tuple[bytes, dict[str, int]]:
    import soundfile as sf  # optional (the embed extra)

    info = sf.info(str(path))
    start = int(round(offset * info.samplerate))
    stop = None if duration is None or not np.isfinite(duration) else start + int(round(duration * info.samplerate))
    data, sr = sf.read(str(path), start=start, stop=stop, dtype="int16", always_2d=True)
    return data.astype("<i2").tobytes(), {"channels": data.shape[1], "width": 2, "rate": sr}


def _wav_bytes(frames: bytes, fmt: dict[str, int]) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as dst:
        dst.setnchannels(fmt["channels"])
        dst.setsampwidth(fmt["width"])
        dst.setframerate(fmt["rate"])
        dst.writeframes(frames)
    return buf.getvalue()


def _spans(value: Any) -> list[tuple[float, float]] | None:
    """A segment's source spans (metadata ``spans``: JSON ``[[start, end], ...]`` seconds), or ``None``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    try:
        spans = json.loads(value) if isinstance(value, str) else list(value)
        out = [(float(a), float(b)) for a, b in spans]
    except (TypeError, ValueError):
        return None
    return [(a, b) for a, b in out if math.isfinite(a) and math.isfinite(b) and b > a] or None


def _number(value: Any, default: float | None) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


def audio_src(path: Path | None, offset: Any = 0.0, duration: Any = None, max_seconds: float = 30.0,
              spans: Any = None) -> str | None:
    """The ``src`` of an ``<audio>`` element for ``[offset, offset + duration)`` of ``path``
    (``None`` if there is none) — or, given a segment's ``spans`` (its non-silent source
    pieces, joined by ``jsae embed``), those pieces concatenated, as the encoder heard them.
    WAV files (and, with soundfile installed, any format it reads) are cut into a ``data:``
    URI; other audio files are linked with a media fragment (first span start to last span
    end). At most ``max_seconds`` are played. ``path`` must already be checked
    (:func:`locate_audio`)."""
    if path is None or path.suffix.lower() not in _AUDIO_SUFFIXES:
        return None
    pieces = _spans(spans)
    if pieces is None:
        start = max(0.0, _number(offset, 0.0) or 0.0)
        dur = _number(duration, None)
        pieces = [(start, start + min(dur, max_seconds) if dur is not None and dur > 0 else math.inf)]
    kept, left = [], max_seconds
    for a, b in pieces:  # at most max_seconds in all
        if left <= 0:
            break
        b = min(b, max(a, 0.0) + left)
        kept.append((max(a, 0.0), b))
        left -= b - max(a, 0.0)
    for read in (_read_wav, _read_soundfile):
        try:
            parts = [read(path, a, None if not math.isfinite(b) else b - a) for a, b in kept]
        except Exception:  # noqa: BLE001 - not this reader's format; try the next
            continue
        data = _wav_bytes(b"".join(f for f, _ in parts), parts[0][1])
        return "data:audio/wav;base64," + base64.b64encode(data).decode()
    start, end = kept[0][0], kept[-1][1]
    return path.as_uri() + f"#t={start:g}" + (f",{end:g}" if math.isfinite(end) else "")


def audio_html(path: Path | None, offset: float = 0.0, duration: float | None = None,
               max_seconds: float = 30.0) -> str:
    """An ``<audio>`` element (escaped) for ``[offset, offset + duration)`` of ``path`` ('' if none)."""
    from markupsafe import escape

    src = audio_src(path, offset, duration, max_seconds)
    return "" if src is None else f'<audio controls preload="none" src="{escape(src)}"></audio>'


def top_activating(model, store, latents: Sequence[int], top: int = 5, block: int = 8192) -> dict[int, pd.DataFrame]:
    """The ``top`` rows of ``store`` with the largest activation of each latent.

    Returns ``{latent: metadata rows + "activation"}``, streaming the store in blocks.
    """
    latents = [int(j) for j in latents]
    best_val = {j: np.empty(0) for j in latents}
    best_row = {j: np.empty(0, int) for j in latents}
    for start, x in store.iter_blocks(block):
        v = model.encode(x)[:, latents]  # [b, J]
        for t, j in enumerate(latents):
            vals = np.concatenate([best_val[j], v[:, t]])
            rows = np.concatenate([best_row[j], start + np.arange(len(x))])
            keep = np.argsort(-vals, kind="stable")[:top]
            best_val[j], best_row[j] = vals[keep], rows[keep]
    out = {}
    for j in latents:
        fired = best_val[j] > 0
        table = store.metadata.iloc[best_row[j][fired]].reset_index(drop=True).copy()
        table.insert(0, "activation", best_val[j][fired])
        out[j] = table
    return out


@dataclass
class _AudioCheck:
    roots: list[Path]
    outside: int = 0
    missing: int = 0


def _feature_section(sweep, feats: list[dict[str, Any]], store, top: int, audio_root) -> dict[str, Any]:
    """The top-activating segments of ``feats`` for the template."""
    out: dict[str, Any] = {"store": str(store.path), "features": [], "notes": []}
    check = _AudioCheck(audio_roots(store.info, audio_root))
    by_model: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for f in feats:
        by_model.setdefault((int(f["k"]), int(f["latent_size"])), []).append(f)
    for (k, L), fs in by_model.items():
        try:
            model = sweep.model(k=k, latent_size=L)
        except NotFoundError:  # a feature of a model the run does not have (another run's analysis)
            continue
        lat = list(dict.fromkeys(int(f["latent"]) for f in fs))
        tops = top_activating(model, store, lat, top)
        for f in fs:
            j = int(f["latent"])
            table = tops[j].copy()
            entry = {"k": k, "L": L, "latent": j, "why": str(f.get("why", "")), "table": None}
            if not table.empty:
                if "source" in table.columns:
                    table["audio"] = [_audio_cell(check, r) for r in table.to_dict("records")]
                cols = [c for c in table.columns if c not in _HIDE_COLUMNS and not str(c).startswith("_")]
                entry["table"] = _table(table[cols])
            out["features"].append(entry)
    if check.outside:
        roots = ", ".join(str(r) for r in check.roots)
        out["notes"].append(f"{check.outside} segment(s) not played: their source lies outside the audio roots "
                            f"({roots}); only files under these are read (jsae report --audio-root DIR adds one).")
    if check.missing and not check.roots:
        out["notes"].append("no audio played: the store names no audio folder; pass jsae report --audio-root DIR "
                            "(the folder the source paths are relative to).")
    return out


def _audio_cell(check: _AudioCheck, row: dict[str, Any]) -> "_Cell | str":
    path, why = locate_audio(row.get("source"), check.roots)
    if why == "outside":
        check.outside += 1
        return _Cell("note", "outside the audio roots")
    if path is None:
        check.missing += 1
        return ""
    src = audio_src(path, row.get("offset", 0.0), row.get("duration"), spans=row.get("spans"))
    return _Cell("audio", src) if src else ""


#: the paper's setting (K, L), shown next to the best model of every probe
PAPER_SETTING = (20, 200)
_BEST_BY = {"f1": "test F1 of the probe latent", "precision": "test precision of the probe latent",
            "recall": "test recall of the probe latent", "train_f1": "train F1 of the probe latent",
            "train_best_f1": "train F1 of the best single latent"}


def _f1(precision: Any, recall: Any, f1: Any = None) -> Any:
    """``f1``, else the harmonic mean of ``precision`` and ``recall`` when both are numbers."""
    if f1 is not None:
        return f1
    p, r = _number(precision, None), _number(recall, None)
    return None if p is None or r is None else (0.0 if p + r == 0 else 2 * p * r / (p + r))


def _paper_row(folder: Path, a: dict[str, Any]) -> dict[str, Any] | None:
    """The probe's K = 20, L = 200 model: ``paper_*`` of its summary, else its row of ``probe.csv``."""
    s = a.get("summary") or {}
    if s.get("paper_model") is not None or s.get("paper_precision") is not None:
        return {"model": s.get("paper_model"), "latent": s.get("paper_latent"), "precision": s.get("paper_precision"),
                "recall": s.get("paper_recall"), "f1": _f1(s.get("paper_precision"), s.get("paper_recall"),
                                                           s.get("paper_f1"))}
    path = listed_file(folder, (a.get("tables") or {}).get("probe", "probe.csv"))
    if path is None:
        return None
    try:
        df = pd.read_csv(path)
        rows = df[(df["k"] == PAPER_SETTING[0]) & (df["latent_size"] == PAPER_SETTING[1])]
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return None
    if "activation" in rows.columns and (rows["activation"].astype(str) == "topk").any():
        rows = rows[rows["activation"].astype(str) == "topk"]
    if rows.empty:
        return None
    r = rows.iloc[0]
    return {"model": r.get("name"), "latent": r.get("latent"), "precision": r.get("precision"),
            "recall": r.get("recall"), "f1": r.get("f1")}


def _headline(analyses: Sequence[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """For every probe: its best model and what it was chosen by, the paper setting
    (K = 20, L = 200) when the run has it, and the feature family's union when the probe
    measured one."""
    out = []
    for folder, a in analyses:
        s = a.get("summary") if isinstance(a.get("summary"), dict) else {}
        if a.get("analysis") != "probe" or s.get("best_model") is None:
            continue
        p = a.get("params") if isinstance(a.get("params"), dict) else {}
        by = s.get("best_by") or "f1"
        by = _BEST_BY.get(str(by), str(by))
        rows = [{"setting": "best model", "chosen by": f"highest {by}", "model": s.get("best_model"),
                 "latent": s.get("best_latent"), "precision": s.get("best_precision"),
                 "recall": s.get("best_recall"), "f1": s.get("best_f1")}]
        notes = []
        paper = _paper_row(folder, a)
        k, L = PAPER_SETTING
        if paper is not None:
            rows.append({"setting": f"paper setting (K = {k}, L = {L})", "chosen by": "fixed (the paper's)", **paper})
        else:
            notes.append(f"the run has no K = {k}, L = {L} model (the paper's setting) to compare with.")
        if s.get("family_union_precision") is not None or s.get("family_union_recall") is not None:
            size = s.get("family_size")
            members = s.get("family", s.get("family_latents"))
            rows.append({"setting": "feature family union" + (f" ({size} latent{'s' * (size != 1)})"
                                                              if isinstance(size, int) else ""),
                         "chosen by": "union of the family's latents (best model)",
                         "model": s.get("family_model", s.get("best_model")),
                         "latent": " ".join(map(str, members)) if isinstance(members, list) else members,
                         "precision": s.get("family_union_precision"), "recall": s.get("family_union_recall"),
                         "f1": _f1(s.get("family_union_precision"), s.get("family_union_recall"),
                                   s.get("family_union_f1"))})
        df = pd.DataFrame(rows, columns=["setting", "chosen by", "model", "latent", "precision", "recall", "f1"],
                          dtype=object)
        df = df.loc[:, df.notna().any()]
        what = f"{p.get('label', '?')} = {p.get('positive', '?')}"
        out.append({"what": f"{what} ({folder.name})", "table": _table(df), "notes": notes})
    return out


def _stored_path(path: Any, workdir: Path | None) -> str:
    """A store path an analysis recorded. Current analyses record absolute paths; an older
    relative one was relative to the analysis' working directory (``workdir``, inferred by
    :func:`jsae.results.analysis_workdir`), tried first, then to the current one."""
    text = str(path)
    if workdir is not None and not Path(text).is_absolute() and (workdir / text).exists():
        return str(workdir / text)
    return text


def _check_out(out: Path) -> None:
    """The page replaces only an earlier jsae report, never another file (``--out notes.html``)."""
    from .safety import UnsafeDeleteError

    if out.is_dir():
        raise UnsafeDeleteError(f"--out {out} is a folder; give the path of the HTML file to write.")
    if out.exists() or out.is_symlink():
        try:
            with open(out, encoding="utf-8", errors="replace") as f:
                head = f.read(4096)
        except OSError:
            head = ""
        if out.is_symlink() or "<title>jsae report:" not in head:
            raise UnsafeDeleteError(f"refusing to overwrite --out {out}: it is not a jsae report. Nothing was "
                                    "written; choose another --out.")


def build_report(run_dir: str | Path, *, out: str | Path | None = None, top: int = 5,
                 audio_root: str | Path | None = None, store: str | Path | None = None,
                 max_features: int = 12) -> Path:
    """Write ``RUN_DIR/analysis/report.html`` (or ``out``) and return its path.

    ``store``: where to look for top-activating segments (default: the store each
    analysis used). ``audio_root``: a folder audio may be read from, besides those the
    store was exported from; relative ``source`` paths are relative to it.
    """
    import jinja2

    from .labelled import as_store
    from .rundir import load_run

    run_dir = Path(run_dir)
    if not (run_dir / "sweep.json").is_file():
        raise MissingPathError(f"{run_dir}: no sweep.json; give a `jsae sweep` run directory.")
    try:
        info = json.loads((run_dir / "sweep.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MissingPathError(f"{run_dir}/sweep.json cannot be read ({type(err).__name__}); the run is "
                               "damaged.") from None
    info = info if isinstance(info, dict) else {}
    out = Path(out) if out is not None else run_dir / "analysis" / REPORT_NAME
    _check_out(out)
    data = info.get("data") if isinstance(info.get("data"), dict) else {}
    ctx: dict[str, Any] = {
        "csp": CSP, "style": _STYLE, "run_name": run_dir.name, "run_path": str(run_dir.resolve()),
        "n_models": len(info.get("models") or []), "step": info.get("step"), "dim": info.get("dim"),
        "source": str(data.get("source")), "n_train": data.get("n_train"), "n_val": data.get("n_val"),
        "unfinished": info.get("total_steps") is not None and not info.get("complete", True),  # killed/stopped
        "total_steps": info.get("total_steps"),
    }
    analyses = read_analyses(run_dir)
    ctx["headline"] = _headline(analyses)
    ctx["links"] = [("headline", "Headline")] * bool(ctx["headline"]) + [("training", "Training")] + [(f"a-{f.name}", f"{a.get('analysis', '?')}: {f.name}")
                                                 for f, a in analyses]
    metrics = info.get("metrics") or []
    cols = ["name", "k", "latent_size", "val_nmse", "fraction_variance_explained", "dead_fraction", "mean_l0"]
    ctx["metrics"] = (_table(pd.DataFrame(metrics)[[c for c in cols if c in metrics[0]]], max_rows=200)
                      if metrics and isinstance(metrics[0], dict) else None)
    ctx["training_images"] = [_image(p) for p in sorted(run_dir.glob("*.png")) if p.is_file()]

    sweep = None
    ctx["analyses"] = []
    for folder, a in analyses:
        entry: dict[str, Any] = {"id": f"a-{folder.name}", "kind": str(a.get("analysis", "?")), "name": folder.name,
                                 "params": json.dumps(a.get("params", {}), default=str), "summary": None,
                                 "tables": [], "images": [], "notes": [], "segments": None}
        ctx["analyses"].append(entry)
        summ = {k: v for k, v in (a.get("summary") or {}).items() if not isinstance(v, (list, dict))}
        if summ:
            entry["summary"] = _table(pd.DataFrame([summ]))
        absent: list[str] = []
        for title, name in (a.get("tables") or {}).items():
            path = listed_file(folder, name)
            if path is None:
                absent.append(str(name))
                continue
            entry["tables"].append((str(title), _table(_drop_defaults(pd.read_csv(path)))))
        for f in a.get("files") or []:
            if not str(f).lower().endswith(".png"):
                continue
            path = listed_file(folder, f)
            if path is None:
                absent.append(str(f))
            else:
                entry["images"].append(_image(path))
        if absent:
            shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
            entry["notes"].append(f"not shown: {shown}, listed in {folder / 'analysis.json'} but not found inside "
                                  f"{folder} (only files inside an analysis folder are read).")
        feats = list(a.get("features") or [])[:max_features]
        src = store or (a.get("params") or {}).get("store")
        if not (feats and src):
            continue
        try:
            st = as_store(store if store else _stored_path(src, analysis_workdir(folder, a)))
        except (JsaeError, OSError) as err:  # a moved store should not stop the report
            entry["notes"].append(f"store {src} unavailable: {err}")
            continue
        if st.dim != int(info.get("dim", st.dim)):
            entry["notes"].append(f"store {st.path} holds {st.dim}-d embeddings but this run was trained on "
                                  f"{info.get('dim')}-d ones: no top-activating segments (pass the store of the "
                                  "training encoder with --data).")
            continue
        if sweep is None:
            sweep = load_run(run_dir)
        entry["segments"] = _feature_section(sweep, feats, st, top, audio_root)

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    page = env.from_string(_TEMPLATE).render(**ctx)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
