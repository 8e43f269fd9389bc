"""Build the atlas folder: the statistics, the audio clips, every page, and the files that list them.

:func:`build_site` (and :func:`build_atlas`, which returns only the index path):

1. opens the models (a run directory or any ModelBatch) and the store, and says where the
   atlas goes (``out``, default ``RUN/analysis/atlas-<store folder name>``, :func:`default_out`);
2. refuses before any work a folder that is neither new, empty nor an earlier atlas
   (:func:`is_atlas_output`), and an earlier atlas made with other parameters unless
   ``overwrite`` (the one output rule of :mod:`jsae.outputs.folders`);
3. runs :func:`jsae.analyses.atlas.latent_atlas`;
4. gives every store row shown as an example its audio clip (:mod:`jsae.atlas.clips`: cut or
   copied once into ``OUT/audio/`` and reused by later builds; new clips are added to the
   previous atlas's ``audio/``, a cache whose files are each written atomically, so a killed
   build keeps the clips it cut and the previous atlas still plays every one of its own);
5. writes the new atlas into a temporary sibling of ``OUT`` (:func:`jsae.safety.replace_folder`):
   the clips it shows (hard links to those of ``OUT/audio/``, or copies), ``index.html``,
   ``<model>/index.html`` and ``<model>/latent-<j>.html`` rendered with the Jinja2 templates of
   ``jsae/atlas/templates/`` (autoescaped; :mod:`jsae.atlas.pages` builds their contexts),
   ``<model>/latents.csv``, ``models.csv``, ``atlas.json`` (parameters, models, clip counts,
   every file), the style sheet and script, and ``analysis.json`` (kind ``atlas``) so that
   the run's report lists it;
6. swaps it in as one unit: a reader sees the complete previous atlas or the complete new one;
   a failure (a full disk: one line) leaves the previous one as it was.

A missing audio file gives its example a note naming the file (``audio not available: file
not found: PATH``) and one warning line gives their number.

The pages load one local script (``atlas.js``: sorting, search, audio durations) and one
style sheet, under :data:`CSP`: no inline script or style, nothing remote.
"""
from __future__ import annotations

import errno
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from ..analyses.atlas import AtlasOptions, AtlasResult, latent_atlas
from ..analyses.labelled import as_store
from ..errors import BadValueError, writing_to
from ..jsonio import to_jsonable
from ..models import ModelBatch
from ..outputs.folders import (ANALYSIS_DIR, ANALYSIS_FILE, batch_and_dir, check_same_parameters, finish_output,
                               folder_name, slug, source_record, write_analysis, write_csv, write_json)
from ..report.audio import missing_audio_warning
from ..safety import UnsafeDeleteError, check_deletable, check_no_link, check_writable_folder, replace_folder
from . import clips as clip_mod
from .links import appearances
from .pages import ModelPages, latent_file, row_fragments, row_values, shown_columns

__all__ = ["CSP", "KIND", "ATLAS_FILE", "TEMPLATES", "STATIC", "SiteSummary", "build_atlas", "build_site",
           "default_out", "is_atlas_output", "atlas_identity", "environment"]

#: the pages' Content-Security-Policy: one local script and style sheet, local audio, nothing inline
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
       "base-uri 'none'; form-action 'none'")
#: the analysis kind in ``analysis.json``
KIND = "atlas"
ATLAS_FILE = "atlas.json"
MODELS_CSV = "models.csv"
LATENTS_CSV = "latents.csv"
#: the template folder, and the files copied from it as they are
TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = ("atlas.css", "atlas.js")
#: parameters of AtlasOptions that change no page (left out of the identity)
_NOT_IDENTITY = ("block_rows",)


@dataclass
class SiteSummary:
    """What :func:`build_site` wrote: ``out`` (the folder), ``index`` (``out/index.html``),
    ``models``, ``latents``, ``pages``, ``files`` (every file written, relative),
    ``clips`` (counts: cut, copied, reused, unavailable, reasons), ``seconds`` (per step
    and ``total``)."""

    out: Path
    index: Path
    models: int
    latents: int
    pages: int
    files: list[str] = field(default_factory=list)
    clips: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    audio: bool = True

    def lines(self) -> list[str]:
        """The short summary ``jsae atlas`` prints."""
        c = self.clips
        audio = ("audio: off (--no-audio)" if not self.audio else
                 f"audio clips: {c.get('cut', 0)} cut, {c.get('copied', 0)} copied, {c.get('reused', 0)} reused, "
                 f"{c.get('unavailable', 0)} unavailable"
                 + (" (" + "; ".join(f"{n} {why}" for why, n in sorted(c.get("reasons", {}).items())) + ")"
                    if c.get("reasons") else ""))
        sec = {k: self.seconds.get(k, 0.0) for k in ("total", "stats", "audio", "pages")}
        return [f"atlas: {self.models} models, {self.latents} latents, {self.pages} pages, {len(self.files)} files",
                audio, f"seconds: {sec['total']:.1f} (statistics {sec['stats']:.1f}, audio {sec['audio']:.1f}, "
                       f"pages {sec['pages']:.1f})",
                f"index: {self.index}"]


def default_out(run_dir: str | Path | None, store_path: str | Path) -> Path:
    """``RUN/analysis/atlas-<store folder name>`` (models from no run need ``out``)."""
    if run_dir is None:
        raise BadValueError("the models of this atlas come from no run directory, so there is no default output "
                            "folder; pass out=DIR (--out DIR).")
    return Path(run_dir) / ANALYSIS_DIR / folder_name("atlas", Path(store_path).name)


def is_atlas_output(path: str | Path) -> bool:
    """True if ``path`` is a folder written by :func:`build_site`: its ``analysis.json`` says
    ``"analysis": "atlas"`` (a plain file, not a link), or it holds nothing but the clips of
    an interrupted first build (``audio/`` with its ``clips.json``, ``.build-*`` folders)."""
    import json

    folder = Path(path)
    marker = folder / ANALYSIS_FILE
    if folder.is_symlink():
        return False
    if not marker.is_file() or marker.is_symlink():
        entries = list(folder.iterdir()) if folder.is_dir() else []
        audio = folder / clip_mod.AUDIO_DIR
        return (bool(entries) and all(e.name == clip_mod.AUDIO_DIR or e.name.startswith(".build-") for e in entries)
                and audio.is_dir() and not audio.is_symlink() and (audio / clip_mod.INDEX_NAME).is_file())
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("analysis") == KIND


def _check_out(out: Path, store_path: Path, run_dir: Path | None = None) -> None:
    """The folder must be new, empty or an earlier atlas, no symbolic link (nor, for the default
    folder, ``RUN/analysis``: ``run_dir``), no protected folder (the working directory, a mount
    point, …); never the store or a folder holding it."""
    check_no_link(out, below=run_dir, fix="give the real folder or choose another --out" if run_dir is None else
                  "remove the link (or put a real folder in its place), or choose another folder with --out DIR")
    real_out, real_store = Path(os.path.realpath(out)), Path(os.path.realpath(store_path))
    if real_out == real_store or real_store.is_relative_to(real_out) or real_out.is_relative_to(real_store):
        raise UnsafeDeleteError(f"--out {out} is, holds or lies inside the store {store_path}; choose a folder "
                                "outside it.")
    check_writable_folder(out, what="an earlier `jsae atlas` output", is_ours=is_atlas_output)
    if out.exists():
        check_deletable(out, what="an earlier `jsae atlas` output",
                        is_ours=lambda p: is_atlas_output(p) or not any(p.iterdir()), inputs=[store_path])


def atlas_identity(models: ModelBatch, store_path: str | Path, options: AtlasOptions, audio: bool) -> dict[str, Any]:
    """The parameters the atlas depends on (recorded in ``analysis.json``; another atlas of
    other ones in the same folder is refused without ``overwrite``)."""
    opts = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.__dict__.items() if k not in _NOT_IDENTITY}
    return to_jsonable({**opts, "store": str(store_path), "models": list(models.names),
                        "run_dir": None if models.run_dir is None else os.path.abspath(models.run_dir),
                        "step": models.step, "audio": bool(audio)})


def environment() -> jinja2.Environment:
    """The Jinja2 environment of the atlas's templates (autoescaped; an undefined name is an error)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True, auto_reload=False)


# ----------------------------------------------------------------------------- writing


class _Writer:
    """Files written into the new atlas folder ``tmp`` (swapped in as a whole when complete);
    ``files`` lists them, relative."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.files: list[str] = []
        self._dirs: set[Path] = set()

    def path(self, rel: str) -> Path:
        p = self.tmp / rel
        if p.parent not in self._dirs:
            p.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(p.parent)
        self.files.append(rel)
        return p

    def text(self, rel: str, text: str) -> None:
        with open(self.path(rel), "w", encoding="utf-8", newline="\n") as f:
            f.write(text)


def _link_clips(src: Path, dest: Path) -> None:
    """The clip files of ``src`` (``OUT/audio``) in ``dest`` (the new atlas's ``audio``): hard
    links (no copy, the cache is not changed), or copies where the file system has none.
    Only plain files; a file the clips index renames later is replaced, never written in place."""
    dest.mkdir(parents=True, exist_ok=True)
    if src.is_symlink() or not src.is_dir():
        return
    for f in src.iterdir():
        if f.is_symlink() or not f.is_file() or f.name.endswith(".tmp"):
            continue
        try:
            os.link(f, dest / f.name)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP,
                                                   errno.EOPNOTSUPP):
                raise
            shutil.copy2(f, dest / f.name)


def _model_row(name: str, m, folder: str) -> dict[str, Any]:
    lat = m.latents
    dead = int((lat["n_fires"] == 0).sum())
    return {"name": name, "k": int(m.spec.get("k", 0)), "latent_size": len(lat), "folder": folder,
            "live": len(lat) - dead, "dead": dead, "labelled": int(lat["label_column"].notna().sum()),
            "correlated": int(lat["correlate_column"].notna().sum())}


def _audio_note(audio: bool, counts: dict[str, Any], roots: list[Path]) -> str:
    if not audio:
        return "not cut (the atlas was built with --no-audio)."
    text = (f"every example has a player when its segment could be read: {counts.get('cut', 0)} clips cut, "
            f"{counts.get('copied', 0)} copied, {counts.get('reused', 0)} reused from an earlier build, "
            f"{counts.get('unavailable', 0)} unavailable")
    reasons = counts.get("reasons") or {}
    if reasons:
        text += " (" + "; ".join(f"{n}: {why}" for why, n in sorted(reasons.items())) + ")"
    text += ". Audio is read only from the allowed roots: " + (", ".join(str(r) for r in roots) or "none") + \
            " (jsae atlas --audio-root DIR adds one)."
    return text


def build_site(models: "ModelBatch | str | Path", store: Any, out: str | Path | None = None, *,
               audio_root: str | Path | None = None, overwrite: bool = False, options: AtlasOptions | None = None,
               audio: bool = True, progress: bool | None = None, workers: int | None = None,
               **overrides: Any) -> SiteSummary:
    """Build the feature atlas of ``models`` on ``store`` into ``out`` (see the module docstring).

    Args:
      models: a run directory, a :class:`~jsae.runs.load.Sweep` or any ModelBatch.
      store: the store (or its path) whose rows the latents are described on.
      out: the atlas folder (default :func:`default_out`).
      audio_root: a folder audio may be read from besides the store's own roots.
      overwrite: replace an atlas of other parameters in ``out``.
      options: :class:`~jsae.analyses.atlas.AtlasOptions`; ``overrides``: fields of it.
      audio: cut / copy the examples' audio (``False``: pages without players).
      progress: the clips' progress bar (``None``: on a terminal). workers: cutting processes.
    """
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    batch, run_dir = batch_and_dir(models)
    st = as_store(store)
    o = options or AtlasOptions()
    if overrides:
        o = replace(o, **overrides)
    default = out is None
    run = run_dir if run_dir is not None else batch.run_dir
    out = Path(out) if out is not None else default_out(run, st.path)
    _check_out(out, Path(st.path), Path(run) if default else None)
    identity = atlas_identity(batch, st.path, o, audio)
    source = source_record(batch, {"store": st})  # the step and the store's fingerprint, for the report
    check_same_parameters(out, KIND, identity, overwrite=overwrite, source=source)

    t = time.perf_counter()
    result = latent_atlas(batch, st, options=o)
    seconds["stats"] = time.perf_counter() - t

    t = time.perf_counter()
    example_rows = sorted({int(r) for m in result.models.values() for r in m.examples["row"].to_numpy()})
    report = None
    if audio:  # the clip cache OUT/audio: every clip file is written atomically; the old atlas stays whole
        kept = "the previous atlas is unchanged; the clips cut so far are kept for the next build"
        with writing_to(f"the audio clips of the atlas {out / clip_mod.AUDIO_DIR}", kept=kept):
            out.mkdir(parents=True, exist_ok=True)
            report = clip_mod.make_clips(st, example_rows, out, audio_root=audio_root, progress=progress,
                                         workers=workers)
    seconds["audio"] = time.perf_counter() - t

    t = time.perf_counter()
    params = {**identity, "audio_root": None if audio_root is None else os.path.abspath(audio_root)}
    with replace_folder(out, what=f"the atlas {out}") as tmp:  # swapped in as one unit when complete
        if report is not None:
            _link_clips(out / clip_mod.AUDIO_DIR, tmp / clip_mod.AUDIO_DIR)
            clip_mod.prune_clips(tmp, {c.file for c in report.clips.values() if c.file})
        summary = _write_pages(_Writer(tmp), result, batch, run_dir, st, out, o, report, audio)
        counts = summary.clips
        write_analysis(tmp, KIND, params,
                       {"models": summary.models, "latents": summary.latents, "pages": summary.pages,
                        "index": "index.html", "clips_cut": counts.get("cut", 0),
                        "clips_copied": counts.get("copied", 0), "clips_reused": counts.get("reused", 0),
                        "clips_unavailable": counts.get("unavailable", 0)},
                       ["index.html", ATLAS_FILE, MODELS_CSV, *STATIC], tables={"atlas models": MODELS_CSV})
        finish_output(tmp, identity, (), source)
    seconds["pages"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    summary.seconds = {k: round(v, 3) for k, v in seconds.items()}
    note = missing_audio_warning(report.not_found(), report.roots) if report is not None else None
    if note:
        warnings.warn(note, stacklevel=2)
    return summary


def build_atlas(models: "ModelBatch | str | Path", store: Any, out: str | Path | None = None, *,
                audio_root: str | Path | None = None, overwrite: bool = False, options: AtlasOptions | None = None,
                **kwargs: Any) -> Path:
    """:func:`build_site`, returning the path of ``OUT/index.html``."""
    return build_site(models, store, out, audio_root=audio_root, overwrite=overwrite, options=options, **kwargs).index


def _write_pages(w: _Writer, result: AtlasResult, batch: ModelBatch, run_dir: Path | None, st, out: Path,
                 o: AtlasOptions, report, audio: bool) -> SiteSummary:
    env = environment()
    names = list(result.models)
    folders: dict[str, str] = {}
    for name in names:
        f = slug(name)
        while f in folders.values() or f in (clip_mod.AUDIO_DIR,) or f.startswith("."):
            f = "m-" + f
        folders[name] = f
    run = run_dir if run_dir is not None else batch.run_dir
    links = appearances(run, batch.specs, {n: out / folders[n] for n in names}, exclude=out)
    columns = shown_columns(st.metadata)
    hidden_values = {c: pd.to_numeric(st.metadata[c], errors="coerce").to_numpy(float)
                     for c in result.numeric if c not in columns}
    example_rows = sorted({int(r) for m in result.models.values() for r in m.examples["row"].to_numpy()})
    values = row_values(st.metadata, example_rows, columns)
    macro = env.get_template("cells.html.j2").module.example_cells
    fragments = row_fragments(values, report.clips if report is not None else None, macro,
                              f"../{clip_mod.AUDIO_DIR}/")
    counts = report.counts() if report is not None else {}
    roots = report.roots if report is not None else []
    store_name = Path(st.path).name
    common = {"csp": CSP, "generated": f"{len(result.rows)} rows of the store {store_name}"
                                       + (f", models of {Path(run).name}" if run is not None else "")}
    latent_t = env.get_template("latent.html.j2")
    model_t = env.get_template("model_index.html.j2")
    model_rows = []
    pages = 0
    n_latents = 0
    for name in names:
        m = result.models[name]
        folder = folders[name]
        mp = ModelPages(m, result, folders, fragments, links.get(name, {}), o, hidden_values)
        shared = {**common, "root": "../", "columns": columns, "has_audio": report is not None}
        for j in range(mp.L):
            w.text(f"{folder}/{latent_file(j)}", latent_t.render(**shared, **mp.latent(j)))
        pages += mp.L + 1
        n_latents += mp.L
        w.text(f"{folder}/index.html", model_t.render(**common, root="../", **mp.index()))
        lat = m.latents.copy()
        lat.insert(0, "model", name)
        lat.insert(2, "page", [latent_file(j) for j in range(len(lat))])
        write_csv(lat, w.path(f"{folder}/{LATENTS_CSV}"))  # labels as text in a spreadsheet
        model_rows.append(_model_row(name, m, folder))
    write_csv(pd.DataFrame(model_rows), w.path(MODELS_CSV))
    index_models = [{**r, "href": f"{r['folder']}/index.html", "L": r["latent_size"]} for r in model_rows]
    title = (f"{Path(run).name} on {store_name}" if run is not None else store_name)
    w.text("index.html", env.get_template("atlas_index.html.j2").render(
        **common, root="", title=title, models=index_models, n_latents=n_latents, n_rows=len(result.rows),
        store=str(st.path), run_dir=None if run is None else str(run), step=batch.step,
        categorical=result.categorical, numeric=result.numeric, audio_note=_audio_note(audio, counts, roots)))
    pages += 1
    for name in STATIC:
        shutil.copyfile(TEMPLATES / name, w.path(name))
    files = sorted([*w.files, ATLAS_FILE])
    info = {"format": "jsae-atlas", "version": 1, "params": result.params, "store": str(st.path),
            "run_dir": None if run is None else os.path.abspath(run), "n_rows": len(result.rows),
            "categorical": result.categorical, "numeric": result.numeric, "models": model_rows,
            "pages": pages, "audio": {"enabled": audio, "folder": clip_mod.AUDIO_DIR if audio else None,
                                      "roots": [str(r) for r in roots], **counts},
            "files": files}
    write_json(w.path(ATLAS_FILE), info)
    return SiteSummary(out=out, index=out / "index.html", models=len(names), latents=n_latents, pages=pages,
                       files=files, clips=counts, audio=audio)
