"""Where analyses write their results, and how (JSON, CSV, a short printed table).

:func:`batch_and_dir` opens what an analysis was given (a run directory, a
:class:`~jsae.runs.load.Sweep` or any :class:`~jsae.models.ModelBatch`) and says where its
outputs go by default. Every analysis writes into ``RUN_DIR/analysis/<name>/`` (or ``--out``):
``analysis.json`` (``{"analysis": kind, "params": {...}, "summary": {...},
"features": [...], "files": [...]}``), its tables as CSV and its figures as PNG.
:mod:`jsae.report` reads these folders back. ``files`` and ``tables`` name paths
relative to the analysis folder (never to the working directory), so a run reads the
same from any working directory and after it is moved; :func:`listed_file` also finds
the files of older ``analysis.json`` files that recorded working-directory paths.

Those files have fixed names (``probe.csv``, ``steer.json``, …), so ``--out DIR`` is
refused (:func:`check_analysis_out`, through :func:`jsae.safety.check_writable_folder`)
unless ``DIR`` is new, empty, or an earlier output of the same analysis: an
``analysis.json`` of that kind next to nothing but files that analysis writes.

**One rule for every analysis.** Default folder names are made of the parameters that
change the output (:func:`folder_name`), and ``analysis.json`` records those parameters
(its ``identity``, with the store, the run and the models analysed). Before any work,
:func:`check_same_parameters` refuses a folder (default or ``--out``) holding an output of
the same analysis made with other parameters (:class:`OutputExistsError`) unless
``overwrite=True`` (``--overwrite``); overwritten, the folder is replaced as a whole (no file
of the old output remains). The same parameters again are a plain rerun.

**Bound to what it was computed from.** ``analysis.json`` records, under
:data:`SOURCE_KEY` (``computed_from``, :func:`source_record`), the training step of the
models analysed (``step``, ``total_steps``; universality also ``step_b``) and the
fingerprint of every store it read (``store_fingerprint``: :func:`store_fingerprint`, a
hash of ``store.json`` and ``metadata.parquet``, never of the embeddings). A rerun into a
folder whose output was computed from a store that changed since (same path, other
content) is refused like other parameters (:func:`check_same_parameters`), and the report
marks analyses older than the run's step or than their store.

**Replaced as one unit.** The ``run_*`` jobs write an output folder into a temporary
sibling and swap it in when every file is written (:func:`writing_output`, through
:func:`jsae.safety.replace_folder`): a rerun that is killed or fills the disk leaves the
previous output complete (never the old ``analysis.json`` beside a new ``probe.csv``), and
the temporary folder is removed (or, after a kill, by the next analysis writing into the
same parent). :func:`read_analyses` never reads such a temporary folder. Before any work,
:func:`check_output` refuses a folder that is, or lies below, a symbolic link inside the
run (``RUN/analysis`` and ``RUN/analysis/<name>`` must be real folders: an analysis never
writes into or replaces a folder outside the run through a link; ``--out`` must not be a
link either), a file where the folder should be, a default folder holding files the
analysis does not write, a mount point and the working directory.

**Names never collide.** A part that :func:`slug` changes (``a/b`` and ``a_b`` both read
``a_b``) adds a short hash of the raw parts to the default name (:func:`folder_name`).

**CSV is safe to open in a spreadsheet.** Every CSV an analysis writes goes through
:func:`write_csv`: a text cell or column header that starts with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return (OWASP's CSV-injection list) is written with a leading
``'`` (:func:`safe_cell`), so a spreadsheet shows it as text, never as a formula. Numbers
stay numbers: a numeric column is written as it is, and a text cell that reads as a
finite decimal number (``-0.5``, ``+3``, ``1e-3``) is not prefixed. A text cell already
starting with ``'`` and then one of those characters gets one more ``'``, so
:func:`read_csv` (:func:`raw_cell`) gives back exactly the raw values. Lines end with CRLF
(RFC 4180), so a cell holding a carriage return is quoted. JSON and parquet files keep
the raw values.
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import inspect
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import pandas as pd

from ..errors import JsaeError
# atomic_write_text and to_jsonable: re-exported (public names of this module)
from ..jsonio import atomic_write_bytes, atomic_write_text, json_bytes, to_jsonable  # noqa: F401
from ..models import ModelBatch

__all__ = ["batch_and_dir", "ANALYSIS_DIR", "ANALYSIS_FILE", "ANALYSIS_OUTPUTS", "analysis_dir", "check_analysis_out",
           "is_analysis_output", "slug", "to_jsonable", "write_json",
           "atomic_write_text", "atomic_write_json", "write_analysis", "listed_file", "analysis_workdir",
           "read_analyses", "format_table", "signature_defaults", "option_parts", "OutputExistsError", "check_same_parameters", "record_identity",
           "remove_stale", "finish_output", "folder_name", "short_hash", "num", "IDENTITY_KEY",
           "safe_cell", "raw_cell", "safe_cells", "write_csv", "read_csv", "FORMULA_START",
           "SOURCE_KEY", "store_fingerprint", "store_key", "source_record", "record_source", "stale_marks",
           "output_folder", "check_output", "writing_output"]

ANALYSIS_DIR = "analysis"
ANALYSIS_FILE = "analysis.json"
#: the file names (glob patterns) each analysis writes besides ``analysis.json``
ANALYSIS_OUTPUTS: dict[str, tuple[str, ...]] = {
    "probe": ("probe.csv", "probe.json", "precision.png", "recall.png", "f1.png", "logreg_test_accuracy.png",
              "probe_family.csv", "probe_groups.csv", "family_recall.png", "family_precision.png"),
    "split": ("split_levels.csv", "split_nodes.csv", "split_flows.csv", "split.json", "split_flow.png"),
    "steer": ("steer_summary.csv", "steer_table.csv", "steer.json", "delta_hist_*.png", "alpha_*.png",
              "pos_after.png", "neg_after.png", "steer_flip_threshold.csv", "flip_threshold_*.png"),
    "universality": ("universality.csv", "universality_matches.csv", "universality.json", "universality_hist.png",
                     "mean_max.png"),
    "consistency": ("consistency.csv", "by.csv", "consistency.json", "consistency.png"),
}
#: a temporary file of :func:`atomic_write_text` left by a killed write: ``.NAME.PID.HEX8.tmp``
_TMP = re.compile(r"^\.(?P<name>.+)\.\d+\.[0-9a-f]{8}\.tmp$")


def batch_and_dir(run: "ModelBatch | str | Path") -> tuple[ModelBatch, Path | None]:
    """The models an analysis was given, and their run directory (where outputs go by default).

    ``run``: a run directory (loaded with :func:`jsae.runs.load.load_run`: its model files,
    or its checkpoint; a damaged one is a one-line error), a :class:`~jsae.runs.load.Sweep`
    or any :class:`~jsae.models.ModelBatch` (e.g. ``sweep.select(k=20)``).
    """
    if isinstance(run, ModelBatch):
        return run, None if run.run_dir is None else Path(run.run_dir)
    from ..runs.load import load_run

    return load_run(run), Path(run)


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
    from ..safety import UnsafeDeleteError, check_writable_folder

    what = f"an earlier `jsae {kind}` output"
    foreign = _foreign_entries(Path(out), kind)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", …" if len(foreign) > 5 else "")
        raise UnsafeDeleteError(
            f"--out {out} is not empty and not {what}: it holds an analysis.json of `jsae {kind}` but also {shown}, "
            f"which `jsae {kind}` does not write (or a folder or symbolic link); choose a new or empty folder."
        )
    check_writable_folder(out, what=what, is_ours=lambda p: is_analysis_output(p, kind))


def output_folder(run_dir: str | Path | None, name: str, out: str | Path | None = None) -> Path:
    """``out`` or ``RUN_DIR/analysis/<name>`` (not created); models from no run directory
    need ``out`` (a one-line BadValueError, raised before any work)."""
    if out is not None:
        return Path(out)
    if run_dir is None:
        from ..errors import BadValueError

        raise BadValueError(f"the models of this {name} come from no run directory, so there is no default output "
                            "folder; pass out=DIR.")
    return Path(run_dir) / ANALYSIS_DIR / name


def analysis_dir(run_dir: str | Path | None, name: str, out: str | Path | None = None, *,
                 kind: str | None = None) -> Path:
    """``out`` or ``RUN_DIR/analysis/<name>``, checked (:func:`check_output`) and created
    (models from no run directory need ``out``); for writing into it directly. The ``run_*``
    jobs replace the folder as one unit instead (:func:`writing_output`).

    ``kind``: the analysis, by default the first part of ``name``, e.g. ``probe``.
    """
    path = output_folder(run_dir, name, out)
    check_output(path, kind or name.split("-", 1)[0], run_dir=run_dir, out_given=out is not None)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _stray_entries(path: Path, kind: str) -> list[str]:
    """The entries of an existing default output folder that are no files of the ``kind``
    analysis (a rerun replaces the folder as a whole, so they would be lost): without an
    ``analysis.json`` (an older, interrupted write), the plain files whose names the analysis
    writes (:data:`ANALYSIS_OUTPUTS`) are its own; with one of another kind, every entry is stray."""
    found = _foreign_entries(path, kind)
    if found is not None:
        return found
    marker = path / ANALYSIS_FILE
    entries = sorted(path.iterdir(), key=lambda e: e.name)
    if os.path.lexists(marker):
        return [e.name for e in entries]
    patterns = ANALYSIS_OUTPUTS.get(kind, ())

    def own(e: Path) -> bool:
        m = _TMP.match(e.name)
        name = m.group("name") if m else e.name
        return e.is_file() and not e.is_symlink() and any(fnmatch.fnmatchcase(name, p) for p in patterns)

    return [e.name for e in entries if not own(e)]


def check_output(folder: str | Path, kind: str, *, run_dir: str | Path | None = None, out_given: bool = True) -> None:
    """Refuse, before any work (a one-line JsaeError; nothing is written), an output folder
    of the ``kind`` analysis that cannot be replaced as one unit (:func:`writing_output`):

    * a symbolic link: ``--out`` itself (``out_given``), or, for the default folder inside
      a run, ``RUN/analysis`` or ``RUN/analysis/<name>`` (nothing is written or deleted
      through it; the message names the link and its target);
    * a file where the folder should be;
    * ``--out``: a folder that is not new, empty or an earlier output of ``kind``
      (:func:`check_analysis_out`); the default folder: one holding files the analysis does
      not write (:func:`_stray_entries`);
    * the working directory, the home folder, a folder holding them, or a mount point
      (:func:`jsae.safety.check_deletable`).
    """
    from ..safety import UnsafeDeleteError, check_deletable, check_no_link

    folder = Path(folder)
    if out_given:
        check_no_link(folder)
        check_analysis_out(folder, kind)
    else:
        check_no_link(folder, below=run_dir, fix="remove the link (or put a real folder in its place), or choose "
                                                 "another folder with --out DIR")
        if folder.exists() and not folder.is_dir():
            raise UnsafeDeleteError(f"{folder} is a file where `jsae {kind}` writes its output folder; the file is "
                                    "untouched: move it away, or choose another folder with --out DIR.")
        stray = _stray_entries(folder, kind) if folder.is_dir() else []
        if stray:
            shown = ", ".join(stray[:5]) + (", …" if len(stray) > 5 else "")
            raise UnsafeDeleteError(f"{folder} holds {shown}, which `jsae {kind}` does not write (or a folder or "
                                    "symbolic link); a rerun replaces this folder as a whole: move them away, or "
                                    "choose another folder with --out DIR.")
    if folder.exists():
        check_deletable(folder, what=f"an earlier `jsae {kind}` output", is_ours=lambda p: True)


@contextlib.contextmanager
def writing_output(folder: str | Path, kind: str) -> Iterator[Path]:
    """Write the output folder of a ``kind`` analysis as one unit: yields an empty temporary
    sibling to write every file into; when the block ends, it replaces ``folder``
    (:func:`jsae.safety.replace_folder`). On a failure ``folder`` is unchanged and the
    temporary folder removed; a full disk, a read-only folder or a denied permission is a
    one-line :class:`~jsae.errors.StorageError` saying so. Check ``folder`` first
    (:func:`check_output`)."""
    from ..safety import replace_folder

    with replace_folder(folder, what=f"the `jsae {kind}` output {folder}") as tmp:
        yield tmp


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 1) -> Path:
    """Strict JSON of ``obj`` (:func:`jsae.jsonio.json_bytes`: numpy → Python, NaN/Inf → null;
    never ``NaN`` or ``Infinity``, which strict JSON readers refuse), written atomically."""
    return atomic_write_bytes(path, json_bytes(obj, indent=indent))


def write_json(path: str | Path, obj: Any) -> Path:
    """Strict JSON of ``obj`` (numpy → Python, NaN/Inf → null), written atomically."""
    return atomic_write_json(path, obj)


def _folder_relative(f: str | Path, out_dir: Path) -> str:
    """``f`` (absolute, relative to the working directory, or already relative to ``out_dir``)
    as a path relative to ``out_dir`` when it lies inside it; otherwise absolute."""
    p = Path(f)
    if not p.is_absolute() and len(p.parts) == 1:
        return p.as_posix()          # a bare name: inside out_dir
    bases = {Path(os.path.abspath(out_dir)), Path(os.path.realpath(out_dir))}
    for full in (Path(os.path.abspath(p)), Path(os.path.realpath(p))):
        for base in bases:
            try:
                return full.relative_to(base).as_posix()
            except ValueError:
                continue
    if not p.is_absolute() and (Path(out_dir) / p).exists():
        return p.as_posix()          # already relative to out_dir
    return os.path.abspath(p)


def write_analysis(out_dir: Path, kind: str, params: dict[str, Any], summary: dict[str, Any],
                   files: Iterable[str | Path], features: Sequence[dict[str, Any]] = (),
                   tables: dict[str, str] | None = None) -> Path:
    """Write ``analysis.json``; ``files`` are recorded relative to ``out_dir``.

    ``files`` may be absolute, relative to the working directory (``out_dir / "x.png"``
    with a relative ``out_dir``) or names inside ``out_dir``; either way the file lists a
    path relative to the analysis folder, so the run reads the same from any working
    directory and after it is moved (:func:`listed_file` reads it back).

    ``features``: the latents the analysis identified, each
    ``{"k", "latent_size", "latent", "why"}``: :mod:`jsae.report` lists their
    top-activating segments. ``tables``: ``{title: csv file}`` to show in the report
    (file names relative to ``out_dir`` too).
    """
    out_dir = Path(out_dir)
    rel = sorted({_folder_relative(f, out_dir) for f in files})
    tabs = {str(t): _folder_relative(f, out_dir) for t, f in (tables or {}).items()}
    return write_json(out_dir / ANALYSIS_FILE, {"analysis": kind, "params": params, "summary": summary,
                                                "features": list(features), "files": rel,
                                                "tables": tabs})


def _inside(folder: Path, name: Any) -> Path | None:
    """``folder / name`` if its real path stays inside ``folder`` and is a file (names come from data)."""
    try:
        text = str(name)
        if not text or "\0" in text:
            return None
        base = Path(folder).resolve()
        path = (Path(folder) / text).resolve()
        path.relative_to(base)
    except (OSError, ValueError, RuntimeError):
        return None
    return path if path.is_file() else None


def listed_file(folder: str | Path, name: Any) -> Path | None:
    """The file an ``analysis.json`` in ``folder`` lists as ``name``, or None (missing, or outside the folder).

    ``name`` is relative to the analysis folder (what :func:`write_analysis` records). Older
    ``analysis.json`` files recorded paths relative to the working directory of the analysis
    (``runs/demo/analysis/probe-lang-es/recall.png``) or absolute ones: when ``name`` names
    the folder itself (a part equal to ``folder``'s name), the part after it is tried
    inside ``folder``. Either way only files whose real path lies inside ``folder`` are
    returned (names come from data)."""
    folder = Path(folder)
    found = _inside(folder, name)
    if found is not None or name is None:
        return found
    parts = Path(str(name)).parts
    if folder.name in parts:
        i = len(parts) - 1 - parts[::-1].index(folder.name)
        if parts[i + 1:]:
            return _inside(folder, Path(*parts[i + 1:]))
    return None


def analysis_workdir(folder: str | Path, info: dict[str, Any]) -> Path | None:
    """The working directory an older analysis ran in, inferred from a file it listed
    relative to that directory (``runs/demo/analysis/probe-x/recall.png`` in
    ``/home/me/runs/demo/analysis/probe-x`` → ``/home/me``); None when every listed
    file is relative to the folder (the current format) or it cannot be told."""
    folder = Path(os.path.abspath(folder))
    for name in info.get("files") or []:
        parts = Path(str(name)).parts if isinstance(name, str) else ()
        if not parts or Path(str(name)).is_absolute() or ".." in parts or folder.name not in parts[:-1]:
            continue
        i = len(parts) - 2 - parts[-2::-1].index(folder.name)
        if len(folder.parts) > i + 1 and folder.parts[-(i + 1):] == parts[:i + 1]:
            return folder.parents[i]
    return None


def read_analyses(run_dir: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """``(folder, analysis.json)`` of every analysis of a run, sorted by folder name; hidden
    folders (the temporary ones of an output being replaced) are skipped."""
    root = Path(run_dir) / ANALYSIS_DIR
    if not root.exists():
        return []
    out = []
    for f in sorted(root.glob(f"*/{ANALYSIS_FILE}")):
        if f.parent.name.startswith("."):  # a folder being written or set aside (jsae.safety.replace_folder)
            continue
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


# ----------------------------------------------------------------------------- CSV safe in a spreadsheet

#: the first characters that make a spreadsheet read a cell as a formula (OWASP: CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: a finite decimal number written as text (``-0.5``, ``+3``, ``1e-3``): a number, not a formula
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def safe_cell(value: Any) -> Any:
    """``value`` as a spreadsheet shows it as text: a string whose first character (after
    any leading ``'``) is one of :data:`FORMULA_START` gets a leading ``'``, unless it is a
    finite decimal number (``-0.5`` stays ``-0.5``). Anything that is not a string is
    returned as it is (numbers stay numbers)."""
    if not isinstance(value, str) or value.lstrip("'")[:1] not in FORMULA_START or _NUMBER.match(value):
        return value
    return "'" + value


def raw_cell(value: Any) -> Any:
    """The inverse of :func:`safe_cell`: a string read back from a CSV of :func:`write_csv`."""
    if isinstance(value, str) and value[:1] == "'" and value.lstrip("'")[:1] in FORMULA_START:
        return value[1:]
    return value


def _map_text(df: pd.DataFrame, fn: Callable[[Any], Any]) -> pd.DataFrame:
    out = df.copy()
    out.columns = [fn(c) if isinstance(c, str) else c for c in df.columns]
    for i in range(out.shape[1]):
        col = out.iloc[:, i]
        if isinstance(col.dtype, pd.CategoricalDtype):
            col = col.astype(object)
        elif not (pd.api.types.is_object_dtype(col.dtype) or pd.api.types.is_string_dtype(col.dtype)):
            continue
        out.isetitem(i, col.map(fn))
    return out


def safe_cells(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells and column headers are :func:`safe_cell`."""
    return _map_text(df, safe_cell)


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """``df`` as CSV (no index), its text cells and headers made :func:`safe_cell`, written
    atomically. Lines end with CRLF (RFC 4180), so a cell holding a carriage return or a
    newline is quoted and stays one cell for every reader."""
    return atomic_write_text(path, safe_cells(df).to_csv(index=False, lineterminator="\r\n"))


def read_csv(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """A CSV of :func:`write_csv` read back (``pd.read_csv(path, **kwargs)``) with the raw
    text (:func:`raw_cell`) in its cells and headers."""
    return _map_text(pd.read_csv(path, **kwargs), raw_cell)


# ----------------------------------------------------------------------------- protected output folders


class OutputExistsError(JsaeError, FileExistsError):
    """The output folder holds an output of the same analysis made with other parameters
    (pass ``overwrite=True`` / ``--overwrite``, or choose another ``--out``)."""


#: the key of ``analysis.json`` that records the parameters an output depends on
IDENTITY_KEY = "identity"
#: beyond this length a default folder name keeps its first parts and a short hash of the rest
MAX_NAME = 100


def short_hash(obj: Any) -> str:
    """Eight hex digits of the SHA-1 of ``obj`` as sorted JSON."""
    return hashlib.sha1(json.dumps(to_jsonable(obj), sort_keys=True, default=str).encode()).hexdigest()[:8]


def num(x: Any) -> str:
    """A number compactly (``1``, ``0.001``, ``1e-05``)."""
    return f"{float(x):g}"


def signature_defaults(fn: Callable[..., Any], names: Iterable[str]) -> dict[str, Any]:
    """The defaults of ``fn``'s parameters ``names``: an analysis's options are defined once, in
    its own signature, and folder names and identities read them from there."""
    params = inspect.signature(fn).parameters
    return {n: params[n].default for n in names}


def option_parts(options: dict[str, Any], defaults: dict[str, Any], tags: dict[str, str]) -> list[str]:
    """One folder-name part per option of ``tags`` (in its order) whose value differs from its
    default: ``tags[name]`` prefixes it; a flag adds the bare prefix, a number the number
    (:func:`num`; the integer for an int option), anything else its text (``train=dev``)."""
    parts = []
    for name, tag in tags.items():
        value, default = options[name], defaults[name]
        if isinstance(default, bool):
            if bool(value) != default:
                parts.append(tag)
        elif isinstance(default, (int, float)):
            if float(value) != float(default):
                parts.append(f"{tag}{int(value) if isinstance(default, int) else num(value)}")
        elif value != default:
            parts.append(f"{tag}{value}")
    return parts


def folder_name(*parts: Any, fixed: int = 0) -> str:
    """:func:`slug` of ``parts``; a name over :data:`MAX_NAME` characters keeps its first
    ``fixed`` parts (at least the analysis) and a short hash of all of them. When
    :func:`slug` changes a part (``a/b`` → ``a_b``, ``es `` → ``es``), a short hash of the
    raw parts is added, so values that read the same once sanitised never share a folder."""
    kept = [str(p) for p in parts if p is not None and str(p) != ""]
    name = slug(*parts)
    changed = any(slug(p) != p for p in kept)
    if len(name) + 9 * changed <= MAX_NAME:
        return f"{name}-{short_hash(kept)}" if changed else name
    head = slug(*parts[:max(fixed, 1)])[:MAX_NAME - 9]
    return f"{head}-{short_hash([str(p) for p in parts])}"


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(to_jsonable(obj), default=str))


def _same_value(key: str, old: Any, new: Any) -> bool:
    if key in PATH_KEYS and old is not None and new is not None:
        try:
            return Path(old).resolve() == Path(new).resolve()
        except (OSError, RuntimeError, TypeError):
            return str(old) == str(new)
    return old == new


#: identity keys holding paths (compared by their resolved path)
PATH_KEYS = frozenset({"store", "store_b", "run_dir", "run_a", "run_b"})


def check_same_parameters(folder: str | Path | None, kind: str, params: dict[str, Any],
                          identity_keys: Sequence[str] | None = None, overwrite: bool = False, *,
                          error: type[OutputExistsError] = OutputExistsError,
                          normalize: Callable[[str, Any], Any] | None = None, strict: bool = False,
                          source: dict[str, Any] | None = None) -> list[str]:
    """Refuse a ``folder`` that holds an ``analysis.json`` of the ``kind`` analysis made with
    other parameters than ``params`` (those of ``identity_keys``, default all of them: the
    parameters that change the output), unless ``overwrite``.

    The recorded parameters are its ``identity`` (:data:`IDENTITY_KEY`, written by
    :func:`record_identity`), else its ``params`` (older outputs: only the keys it holds are
    compared, unless ``strict``: then a key it lacks reads as None). ``normalize(key, old_value)``
    maps older spellings of a value to today's. ``source`` (:func:`source_record` of the new
    output): a store it records by the same fingerprint key with another fingerprint (the
    store changed since, e.g. re-imported at the same path) is a differing parameter too.
    Raises ``error`` (:class:`OutputExistsError`, a one-line JsaeError naming at most four
    differing parameters, old vs new, and the fix); returns the files the old output lists
    when it is to be replaced (to remove the stale ones: :func:`remove_stale`), else ``[]``.
    A folder that is no output of ``kind`` is left to :func:`check_analysis_out`.
    """
    if folder is None:
        return []
    marker = Path(folder) / ANALYSIS_FILE
    if marker.is_symlink() or not marker.is_file():
        return []
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or info.get("analysis") != kind:
        return []
    keys = list(identity_keys) if identity_keys is not None else list(params)
    recorded = info.get(IDENTITY_KEY)
    legacy = not isinstance(recorded, dict)
    if legacy:
        recorded = info.get("params") if isinstance(info.get("params"), dict) else {}
        if not strict:
            keys = [k for k in keys if k in recorded]  # older outputs: what they recorded
    new = _jsonable({k: params.get(k) for k in keys})
    old = {k: normalize(k, recorded.get(k)) if normalize else recorded.get(k) for k in keys}
    diff = [f"{k}: {old[k]!r} there, {new[k]!r} now" for k in keys if not _same_value(k, old[k], new[k])]
    was = info.get(SOURCE_KEY) if isinstance(info.get(SOURCE_KEY), dict) else {}
    for k, v in (source or {}).items():  # the same store path, other content: computed from another store
        if k.endswith(_FINGERPRINT) and v is not None and was.get(k) is not None and was.get(k) != v:
            diff.append(f"{k}: {was.get(k)!r} there, {v!r} now: the store {source.get(k[:-len(_FINGERPRINT)])} "
                        "changed since")
    if diff and not overwrite:
        shown = "; ".join(diff[:4])
        raise error(f"{folder} holds a `jsae {kind}` output of other parameters ({shown}"
                    f"{'; …' if len(diff) > 4 else ''}); choose another --out, or pass --overwrite "
                    "(overwrite=True) to replace it.")
    return [f for f in info.get("files") or [] if isinstance(f, str)] if diff else []


def record_identity(folder: str | Path, identity: dict[str, Any], source: dict[str, Any] | None = None) -> Path:
    """Add ``identity`` (the parameters the output depends on) and ``source`` (what it was
    computed from: :func:`source_record`) to ``folder``'s ``analysis.json``."""
    marker = Path(folder) / ANALYSIS_FILE
    info = json.loads(marker.read_text(encoding="utf-8"))
    info[IDENTITY_KEY] = identity
    if source is not None:
        info[SOURCE_KEY] = _jsonable(source)
    return write_json(marker, info)


# ----------------------------------------------------------------------------- what an output was computed from

#: the key of ``analysis.json`` recording what the output was computed from (:func:`source_record`)
SOURCE_KEY = "computed_from"
_FINGERPRINT = "_fingerprint"
_FINGERPRINTS: dict[tuple, str] = {}


def store_fingerprint(store: Any) -> str | None:
    """A cheap fingerprint of a store (a path or an opened store): 16 hex digits of the
    SHA-256 of its ``store.json`` and ``metadata.parquet`` bytes (``store.json`` records the
    hash of every shard, so the embeddings are never read). None when they cannot be read."""
    path = Path(getattr(store, "path", store))
    files = (path / "store.json", path / "metadata.parquet")
    try:
        key = tuple((os.path.realpath(f), st.st_ino, st.st_size, st.st_mtime_ns) for f in files
                    for st in (os.stat(f),))
        if key in _FINGERPRINTS:
            return _FINGERPRINTS[key]
        h = hashlib.sha256()
        for f in files:
            data = f.read_bytes()
            h.update(f"{f.name}\0{len(data)}\0".encode())
            h.update(data)
    except OSError:
        return None
    if len(_FINGERPRINTS) > 256:
        _FINGERPRINTS.clear()
    _FINGERPRINTS[key] = h.hexdigest()[:16]
    return _FINGERPRINTS[key]


def store_key(store: Any) -> str:
    """How an output records a store (a store or its path): its absolute path, so that the same
    store named relatively or absolutely, from the command line or by ``jsae demo``, is one store."""
    return os.path.abspath(str(getattr(store, "path", store)))


def source_record(models: ModelBatch | None = None, stores: dict[str, Any] | None = None,
                  models_b: ModelBatch | None = None) -> dict[str, Any]:
    """What an output is computed from (``analysis.json``'s :data:`SOURCE_KEY`): the models'
    training ``step``, ``total_steps`` and ``run_dir`` (``models_b``: ``step_b``,
    ``total_steps_b``, ``run_b``), and every store of ``stores`` (``{"store": path or
    store}``) by its absolute path and :func:`store_fingerprint` (``store_fingerprint``)."""
    rec: dict[str, Any] = {}
    for m, tail, run_key in ((models, "", "run_dir"), (models_b, "_b", "run_b")):
        if m is not None:
            rec.update({f"step{tail}": m.step, f"total_steps{tail}": m.total_steps,
                        run_key: None if m.run_dir is None else os.path.abspath(m.run_dir)})
    for key, st in (stores or {}).items():
        if st is not None:
            rec[key] = store_key(st)
            rec[f"{key}{_FINGERPRINT}"] = store_fingerprint(st)
    return _jsonable(rec)


def record_source(folder: str | Path, source: dict[str, Any]) -> Path:
    """Add ``source`` (:func:`source_record`) to ``folder``'s ``analysis.json``."""
    marker = Path(folder) / ANALYSIS_FILE
    info = json.loads(marker.read_text(encoding="utf-8"))
    info[SOURCE_KEY] = _jsonable(source)
    return write_json(marker, info)


def stale_marks(info: dict[str, Any], step: Any = None) -> list[str]:
    """Why an output (its ``analysis.json``, ``info``) may be out of date: computed at
    another step than the run's ``step`` now, or from a store whose content changed since
    (:func:`store_fingerprint` of the recorded path differs). [] when neither is known."""
    src = info.get(SOURCE_KEY) if isinstance(info.get(SOURCE_KEY), dict) else {}
    ident = info.get(IDENTITY_KEY) if isinstance(info.get(IDENTITY_KEY), dict) else {}
    marks = []
    then = src.get("step", ident.get("step"))
    try:
        if then is not None and step is not None and int(then) != int(step):
            marks.append(f"computed at step {int(then)}; the run is now at step {int(step)}: re-run it.")
    except (TypeError, ValueError):
        pass
    for key, fp in src.items():
        path = src.get(key[:-len(_FINGERPRINT)]) if key.endswith(_FINGERPRINT) else None
        if fp is None or not isinstance(path, str):
            continue
        now = store_fingerprint(path)
        if now is not None and now != fp:
            marks.append(f"the store {path} changed since this analysis: re-run it.")
    return marks


def remove_stale(folder: str | Path, stale: Iterable[str], written: Iterable[str | Path]) -> list[str]:
    """Remove the files ``stale`` (names an overwritten output listed) that the new output did
    not write again (``written``): plain files directly inside ``folder`` only."""
    keep = {Path(f).name for f in written} | {ANALYSIS_FILE}
    removed = []
    for f in stale:
        path = Path(folder) / f
        if "/" not in f and "\\" not in f and f not in keep and path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(f)
    return removed


def finish_output(folder: str | Path, identity: dict[str, Any], stale: Iterable[str],
                  source: dict[str, Any] | None = None) -> None:
    """After an analysis wrote ``folder``: record ``identity`` and ``source`` (what it was
    computed from: :func:`source_record`) and remove the files ``stale`` of an output it
    replaced in place that ``analysis.json`` no longer lists (none when the folder is written
    as a whole, :func:`writing_output`)."""
    record_identity(folder, _jsonable(identity), source)
    info = json.loads((Path(folder) / ANALYSIS_FILE).read_text(encoding="utf-8"))
    remove_stale(folder, stale, [f for f in info.get("files") or [] if isinstance(f, str)])
