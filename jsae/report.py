"""One self-contained HTML page for a run: metrics, every analysis, and the features.

:func:`build_report` gathers ``RUN_DIR/metrics.json`` and the run's figures, every
analysis folder under ``RUN_DIR/analysis/`` (their ``analysis.json``, tables and
figures) and, for every feature the analyses identified, its top-activating
segments: their ``id``, ``source``, ``offset``, ``duration`` and labels, and an
``<audio>`` player when the audio file is reachable (the segment is cut and
embedded as a WAV data URI; formats the standard library cannot cut are linked with
a ``#t=start,end`` media fragment instead). Figures are embedded as base64 PNG, so
the page is one file that can be mailed around.
"""
from __future__ import annotations

import base64
import html
import io
import json
import re
import wave
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .results import read_analyses

__all__ = ["build_report", "top_activating", "audio_html", "resolve_audio", "REPORT_NAME"]

REPORT_NAME = "report.html"
_HIDE_COLUMNS = ("split",)
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
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" title="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _table(df: pd.DataFrame, max_rows: int = 60, escape: bool = True) -> str:
    """An HTML table in a box that scrolls sideways when the table is wider than the page;
    long column names may break after their underscores."""
    view = df.head(max_rows)
    text = view.to_html(index=False, escape=escape, float_format=lambda v: f"{v:.3f}", na_rep="", border=0)
    text = re.sub(r"<th([^>]*)>([^<]*)</th>", lambda m: f"<th{m[1]}>{m[2].replace('_', '_<wbr>')}</th>", text)
    text = f'<div class="table">{text}</div>'
    if len(df) > max_rows:
        text += f'<p class="note">{len(df) - max_rows} more rows in the CSV.</p>'
    return text


def _drop_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """Without the ``activation``/``l1_coef`` columns of an all-TopK table (always topk / 0);
    the CSV keeps them."""
    if "activation" in df.columns and (df["activation"].astype(str) == "topk").all():
        return df.drop(columns=[c for c in ("activation", "l1_coef") if c in df.columns])
    return df


def resolve_audio(source: str, store_dir: Path | None = None, store_info: dict | None = None,
                  audio_root: str | Path | None = None) -> Path | None:
    """The audio file a ``source`` entry names, if it exists: absolute, or relative to
    ``audio_root``, the export's ``--audio-dir`` or manifest folder, the store, or the
    working directory."""
    p = Path(str(source)).expanduser()
    candidates = [p] if p.is_absolute() else []
    if not p.is_absolute():
        inputs = (store_info or {}).get("inputs") or {}
        bases = [audio_root, inputs.get("audio_dir"),
                 Path(inputs["manifest"]).parent if inputs.get("manifest") else None, store_dir, Path.cwd()]
        candidates += [Path(b) / p for b in bases if b]
    for c in candidates:
        if c.is_file():
            return c
    return None


def _cut_wav(path: Path, offset: float, duration: float | None) -> bytes:
    with wave.open(str(path), "rb") as src:
        sr, n = src.getframerate(), src.getnframes()
        start = min(n, max(0, int(round(offset * sr))))
        count = n - start if duration is None or not np.isfinite(duration) else int(round(duration * sr))
        src.setpos(start)
        frames = src.readframes(max(0, count))
        buf = io.BytesIO()
        with wave.open(buf, "wb") as dst:
            dst.setnchannels(src.getnchannels())
            dst.setsampwidth(src.getsampwidth())
            dst.setframerate(sr)
            dst.writeframes(frames)
    return buf.getvalue()


def _cut_soundfile(path: Path, offset: float, duration: float | None) -> bytes:
    import soundfile as sf  # optional (the embed extra)

    info = sf.info(str(path))
    start = int(round(offset * info.samplerate))
    stop = None if duration is None or not np.isfinite(duration) else start + int(round(duration * info.samplerate))
    data, sr = sf.read(str(path), start=start, stop=stop, dtype="int16", always_2d=True)
    buf = io.BytesIO()
    sf.write(buf, data, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def audio_html(path: Path | None, offset: float = 0.0, duration: float | None = None,
               max_seconds: float = 30.0) -> str:
    """An ``<audio>`` element for ``[offset, offset + duration)`` of ``path`` ('' if absent).

    WAV files (and, with soundfile installed, any format it reads) are cut and
    embedded as a data URI; other files are linked with a media fragment.
    """
    if path is None:
        return ""
    offset = float(offset or 0.0)
    dur = None if duration is None or pd.isna(duration) else min(float(duration), max_seconds)
    for cut in (_cut_wav, _cut_soundfile):
        try:
            data = cut(path, offset, dur)
        except Exception:  # noqa: BLE001 - not this reader's format; try the next
            continue
        return f'<audio controls preload="none" src="data:audio/wav;base64,{base64.b64encode(data).decode()}"></audio>'
    frag = f"#t={offset:g}" + (f",{offset + dur:g}" if dur is not None else "")
    return f'<audio controls preload="none" src="{html.escape(path.resolve().as_uri() + frag)}"></audio>'


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


def _feature_section(sweep, feats: list[dict[str, Any]], store, top: int, audio_root) -> str:
    parts = []
    by_model: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for f in feats:
        by_model.setdefault((int(f["k"]), int(f["latent_size"])), []).append(f)
    for (k, L), fs in by_model.items():
        try:
            model = sweep.model(k=k, latent_size=L)
        except KeyError:
            continue
        lat = list(dict.fromkeys(int(f["latent"]) for f in fs))
        tops = top_activating(model, store, lat, top)
        for f in fs:
            j = int(f["latent"])
            table = tops[j]
            parts.append(f"<h3>k={k}, L={L}, latent {j}</h3><p>{html.escape(str(f.get('why', '')))}</p>")
            if table.empty:
                parts.append('<p class="note">never fires on this store.</p>')
                continue
            if "source" in table.columns:
                table["audio"] = [audio_html(resolve_audio(r["source"], store.path, store.info, audio_root),
                                             r.get("offset", 0.0), r.get("duration"))
                                  for _, r in table.iterrows()]
            cols = [c for c in table.columns if c not in _HIDE_COLUMNS and not str(c).startswith("_")]
            show = table[cols].copy()
            for c in show.columns:
                if c != "audio" and show[c].dtype == object:
                    show[c] = show[c].map(lambda s: html.escape(str(s)))
            parts.append(_table(show, escape=False))
    return "\n".join(parts)


def build_report(run_dir: str | Path, *, out: str | Path | None = None, top: int = 5,
                 audio_root: str | Path | None = None, store: str | Path | None = None,
                 max_features: int = 12) -> Path:
    """Write ``RUN_DIR/analysis/report.html`` (or ``out``) and return its path.

    ``store``: where to look for top-activating segments (default: the store each
    analysis used). ``audio_root``: where relative ``source`` paths live.
    """
    from .labelled import as_store
    from .sweep import load_sweep

    run_dir = Path(run_dir)
    if not (run_dir / "sweep.json").is_file():
        raise FileNotFoundError(f"{run_dir}: no sweep.json; give a `jsae sweep` run directory.")
    out = Path(out) if out is not None else run_dir / "analysis" / REPORT_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    info = json.loads((run_dir / "sweep.json").read_text())
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>jsae report: {html.escape(run_dir.name)}</title>"
         f"<style>{_STYLE}</style></head><body>", f"<h1>jsae report: {html.escape(str(run_dir.resolve()))}</h1>"]
    data = info.get("data") or {}
    h.append(f"<p>{len(info.get('models', []))} models, step {info.get('step')}, embedding dim {info.get('dim')}, "
             f"trained on {html.escape(str(data.get('source')))} ({data.get('n_train')} rows, "
             f"{data.get('n_val')} for validation).</p>")
    analyses = read_analyses(run_dir)
    links = [("training", "Training")] + [(f"a-{f.name}", f"{a.get('analysis', '?')}: {f.name}") for f, a in analyses]
    h.append("<nav>" + " ".join(f'<a href="#{html.escape(i)}">{html.escape(t)}</a>' for i, t in links) + "</nav>")
    h.append('<h2 id="training">Training</h2>')
    metrics = info.get("metrics") or []
    if metrics:
        cols = ["name", "k", "latent_size", "val_nmse", "fraction_variance_explained", "dead_fraction", "mean_l0"]
        h.append(_table(pd.DataFrame(metrics)[[c for c in cols if c in metrics[0]]], max_rows=200))
    h += [_img(p) for p in sorted(run_dir.glob("*.png"))]

    if not analyses:
        h.append('<p class="note">No analyses yet: run <code>jsae probe</code>, <code>jsae split</code>, '
                 '<code>jsae steer</code> or <code>jsae universality</code> first.</p>')
    sweep = None
    for folder, a in analyses:
        h.append(f"<h2 id=\"a-{html.escape(folder.name)}\">{html.escape(a.get('analysis', '?'))}: "
                 f"{html.escape(folder.name)}</h2>")
        h.append(f"<div class='params'>{html.escape(json.dumps(a.get('params', {}), default=str))}</div>")
        summ = {k: v for k, v in (a.get("summary") or {}).items() if not isinstance(v, (list, dict))}
        if summ:
            h.append(_table(pd.DataFrame([summ])))
        for title, name in (a.get("tables") or {}).items():
            if (folder / name).exists():
                h.append(f"<h3>{html.escape(title)}</h3>" + _table(_drop_defaults(pd.read_csv(folder / name))))
        h += [_img(folder / f) for f in a.get("files", []) if f.endswith(".png") and (folder / f).exists()]
        feats = list(a.get("features") or [])[:max_features]
        src = store or (a.get("params") or {}).get("store")
        if feats and src:
            try:
                st = as_store(src)
            except Exception as err:  # noqa: BLE001 - a moved store should not stop the report
                h.append(f'<p class="note">store {html.escape(str(src))} unavailable: {html.escape(str(err))}</p>')
                continue
            if sweep is None:
                sweep = load_sweep(run_dir)
            if st.dim != int(info.get("dim", st.dim)):
                h.append(f'<p class="note">store {html.escape(str(st.path))} holds {st.dim}-d embeddings but this '
                         f'run was trained on {info.get("dim")}-d ones: no top-activating segments (pass the '
                         'store of the training encoder with --data).</p>')
                continue
            h.append(f"<h3>Top-activating segments ({html.escape(str(st.path))})</h3>")
            h.append(_feature_section(sweep, feats, st, top, audio_root))
    h.append("</body></html>")
    out.write_text("\n".join(h), encoding="utf-8")
    return out
