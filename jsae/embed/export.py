"""Resumable, shardable export of speaker embeddings into a jsae store.

One export is three steps, all in the store folder ``STORE/``:

1. **Plan** (once, by the worker with ``shard_index == 0``): read and segment every
   recording (:func:`jsae.embed.plan.make_plan`), write ``plan.parquet`` (one row per segment,
   in store order), create the ``[N, M]`` zarr3 array, then write ``plan.json``
   (settings, skipped files, counts) — its presence means the plan is complete. Other
   workers wait for ``plan.json``. A plan whose settings differ from the command's
   (inputs, encoder, model, segmentation, shard size) is refused, never mixed.
2. **Embed shards.** The work unit is one zarr shard of ``rows_per_shard`` rows; shard
   ``s`` belongs to worker ``s % num_shards``, so workers never write the same shard.
   A shard's rows are embedded in batches of clips of similar length (sorted longest
   first), written with one :func:`jsae.store.write_rows` call, and only *then* is the
   marker ``progress/shard-SSSSS.done`` written (JSON: rows, audio and wall seconds).
   On restart, shards with a marker are skipped and any other shard is recomputed and
   rewritten whole, so a killed run resumes with no duplicated or missing rows.
   Every worker makes a shard with :func:`export_shard`; ``jsae embed --ray`` hands the
   unfinished shards (:func:`pending_shards`) to encoder actors on a Ray cluster instead
   (:mod:`jsae.embed.ray_export`), with the same plan before and the same merge after.
   A segment's waveform is the concatenation of its source spans (one span for a
   contiguous segment; several for a joined one, see :mod:`jsae.embed.segment`).
   With ``describe`` (the default) the same waveforms are described too
   (:mod:`jsae.embed.describe`: eGeMAPS functionals, speech probability) and written to
   ``progress/shard-SSSSS.describe.parquet`` before the marker, so a resumed shard has
   both or neither; a row whose descriptors fail gets NaN and the reason, the rest go on.
3. **Finalize** (merge): when every shard has its marker, write ``summary.json``, then
   ``metadata.parquet`` (with the descriptor columns of every shard, when described) and
   ``store.json`` with ``"complete": true`` via
   :func:`jsae.store.finalize_store`. The worker that finishes the last shard does this
   automatically (guarded by ``progress/finalize.lock``); ``jsae embed --merge --out
   STORE`` does it by hand and reports which shards are missing. Only then does
   :func:`jsae.store.open_store` accept the store.

SIGINT / SIGTERM (Ctrl-C, a scheduler's preemption) stop a worker cleanly: the shard being
embedded is abandoned (its marker is not written, so the next run computes it again),
finished shards are kept, and :class:`~jsae.errors.Interrupted` says so in one line (exit
status 130 / 143 from ``jsae embed``); during planning nothing is kept. A second signal
stops at once (:class:`~jsae.errors.StoppedAtOnce`); an unmarked shard is recomputed then too.

Storage: an ``--out`` on a read-only file system or in a folder the user may not write is
refused in one line before the encoder is loaded; a full disk later is one line naming the
store and saying the finished shards are kept. A store folder holding a symbolic link is never
written into, and ``--overwrite`` deletes a store only when every file in it is one a store
writer makes (:func:`jsae.store.check_store_files`).

Results do not depend on the number of workers, the batch size or where a run was
killed: each row is a function of its segment only (see :mod:`jsae.embed.encoders`).

``summary.json`` also holds ``segmentation_accounting``: the non-silent seconds found,
the seconds kept in segments and dropped and the segments (and the short ones among
them, ``--min-keep``), in total, per recording and per label value, and a warning for a
label value that kept more than ``imbalance_points`` percentage points less of its audio
than its label column overall (:func:`jsae.embed.plan.imbalance_warnings`); ``jsae embed``
prints the totals, the per-label table and the warnings at the end.

The plan is fixed when it is made: files added to ``--audio-dir`` later are not picked
up (start a new store, or ``--overwrite``), and a planned file whose size changed stops
the export with a message rather than mixing old and new audio.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from jsae.console import SignalStop
from jsae.errors import Interrupted, JsaeError, writing_to
from jsae.safety import check_deletable, check_writable_folder, is_store_dir, remove_tree

from jsae.embed.audio import AudioReadError, load_audio
from jsae.embed.encoders import Encoder, get_encoder
from jsae.embed.plan import IMBALANCE_POINTS, PUBLIC_COLUMNS, Plan, imbalance_warnings, make_plan, read_manifest, \
    scan_audio_dir, shard_bounds
from jsae.embed.segment import SegmentConfig

__all__ = [
    "ExportConfig",
    "ExportError",
    "run_export",
    "finalize",
    "export_status",
    "export_shard",
    "pending_shards",
    "read_plan",
    "ShardRunner",
    "PLAN_TABLE",
    "PLAN_INFO",
    "PROGRESS_DIR",
    "SUMMARY_NAME",
]

log = logging.getLogger("jsae.embed")

PLAN_TABLE = "plan.parquet"
PLAN_INFO = "plan.json"
PROGRESS_DIR = "progress"
SUMMARY_NAME = "summary.json"
LOCK_NAME = "finalize.lock"
#: 2: plan tables carry ``spans``/``_spans_ms`` (joined segments); version 1 plans (contiguous) still resume
PLAN_VERSION = 2


class ExportError(JsaeError, RuntimeError):
    """The export cannot go on; the message names the file or setting and the fix."""


@dataclass(frozen=True)
class ExportConfig:
    """Everything one ``jsae embed`` worker needs.

    Attributes:
      out: the store folder.
      manifest / audio_dir: the input (exactly one).
      encoder, model: registry name and model path/name (``None`` = the encoder's default).
      segment: segmentation settings.
      batch_size: clips per encoder call; ``None``: 32 on a GPU, the encoder's
        ``cpu_batch_size`` on a CPU (TitaNet 1, resemblyzer 16).
      device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
      num_shards, shard_index: this worker is ``shard_index`` of ``num_shards``.
      rows_per_shard: rows per zarr shard = the unit of work and of resumption.
      rows_per_chunk: rows per inner chunk (read unit); default: largest divisor of
        ``rows_per_shard`` that is ≤ 512.
      overwrite: delete an existing store at ``out`` first (single worker only).
      plan_timeout: seconds a worker other than 0 waits for the plan.
      plan_only: stop after the plan.
      progress: show tqdm progress bars.
      describe: add the per-segment acoustic descriptors (:mod:`jsae.embed.describe`; needs the
        describe extra). A setting of the store: every worker and a resume must agree.
    """

    out: Path
    manifest: Path | None = None
    audio_dir: Path | None = None
    encoder: str = "titanet"
    model: str | None = None
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    batch_size: int | None = None
    device: str = "auto"
    num_shards: int = 1
    shard_index: int = 0
    rows_per_shard: int = 1024
    rows_per_chunk: int | None = None
    overwrite: bool = False
    plan_timeout: float = 3600.0
    plan_only: bool = False
    progress: bool = True
    describe: bool = True

    def __post_init__(self) -> None:
        if (self.manifest is None) == (self.audio_dir is None):
            raise ExportError("give exactly one input: --manifest M.jsonl or --audio-dir DIR.")
        if self.batch_size is not None and self.batch_size < 1:
            raise ExportError(f"--batch-size must be >= 1; got {self.batch_size}.")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ExportError(
                f"--shard-index must be in [0, --num-shards); got {self.shard_index} of {self.num_shards}."
            )
        if self.rows_per_shard < 1:
            raise ExportError(f"--rows-per-shard must be >= 1; got {self.rows_per_shard}.")
        if self.rows_per_chunk is not None and (self.rows_per_chunk < 1 or self.rows_per_shard % self.rows_per_chunk):
            raise ExportError(
                f"--rows-per-chunk ({self.rows_per_chunk}) must divide --rows-per-shard ({self.rows_per_shard})."
            )
        if self.overwrite and self.num_shards > 1:
            raise ExportError(
                "--overwrite cannot be combined with several workers; delete the store once, then start them."
            )

    @property
    def chunk_rows(self) -> int:
        if self.rows_per_chunk:
            return self.rows_per_chunk
        return max(d for d in range(1, min(512, self.rows_per_shard) + 1) if self.rows_per_shard % d == 0)

    def settings(self) -> dict[str, Any]:
        """What fixes the rows of a store; a resumed or parallel run must agree on all of it."""
        if self.manifest is not None:
            path = Path(self.manifest).resolve()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            inputs = {"manifest": str(path), "manifest_sha256": digest}
        else:
            inputs = {"audio_dir": str(Path(self.audio_dir).resolve())}
        model = self.model
        if model and Path(model).expanduser().exists():
            model = str(Path(model).expanduser().resolve())
        return {"inputs": inputs, "encoder": self.encoder, "model": model,
                "segmentation": self.segment.to_dict(), "rows_per_shard": self.rows_per_shard,
                "rows_per_chunk": self.chunk_rows, "describe": bool(self.describe)}


# ----------------------------------------------------------------------------- files

def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _marker(out: Path, shard: int) -> Path:
    return out / PROGRESS_DIR / f"shard-{shard:05d}.done"


def _described(out: Path, shard: int) -> Path:
    """A shard's descriptors (``id`` + :data:`jsae.embed.describe.COLUMNS`), written before its marker."""
    return out / PROGRESS_DIR / f"shard-{shard:05d}.describe.parquet"


def _done_shards(out: Path, num_shards: int) -> set[int]:
    return {s for s in range(num_shards) if _marker(out, s).exists()}


def read_plan(out: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """A planned store's ``plan.json`` and plan table (one row per segment, in store order)."""
    info = _read_json(out / PLAN_INFO)
    table = pd.read_parquet(out / PLAN_TABLE) if info["num_rows"] else pd.DataFrame()
    if len(table) and "short" not in table.columns:
        # planned before short segments existed (the strict rule): none of its segments is short
        at = max(table.columns.get_loc(c) for c in PUBLIC_COLUMNS if c in table.columns) + 1
        table.insert(at, "short", False)
    return info, table


def _check_settings(out: Path, planned: dict[str, Any], wanted: dict[str, Any]) -> None:
    norm = lambda d: json.loads(json.dumps(d, default=str))  # noqa: E731
    planned, wanted = norm(planned), norm(wanted)
    seg = planned.get("segmentation")
    if isinstance(seg, dict) and "mode" not in seg:
        # planned before joined segments existed: it cut every stretch on its own
        seg = planned["segmentation"] = {**seg, "mode": "contiguous", "max_gap": None}
    if isinstance(seg, dict) and "min_keep" not in seg:
        # planned before short segments existed: the strict rule, min_keep = min_seconds
        planned["segmentation"] = {**seg, "min_keep": seg.get("min_seconds")}
    for settings in (planned, wanted):
        settings.setdefault("describe", False)     # planned before descriptors existed: none
    if planned == wanted:
        return
    diffs = []
    for key in sorted(set(planned) | set(wanted)):
        a, b = planned.get(key), wanted.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            diffs.extend(f"{key}.{k}: store has {a.get(k)!r}, this command gives {b.get(k)!r}"
                         for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
        elif key == "describe":
            diffs.append(f"describe: store has {a!r}, this command gives {b!r} ("
                         + ("pass --describe" if a else "pass --no-describe, then add the descriptors to the "
                            "finished store with `jsae describe STORE`") + ")")
        else:
            diffs.append(f"{key}: store has {a!r}, this command gives {b!r}")
    raise ExportError(
        f"{out} was planned with other settings ({'; '.join(diffs)}). Rerun with the original settings to "
        "resume it, choose another --out, or pass --overwrite to start over."
    )


def _inputs(cfg: "ExportConfig") -> list[Path]:
    """The command's input files and folders (never deleted by --overwrite)."""
    return [p for p in (cfg.manifest, cfg.audio_dir, cfg.model) if p is not None and Path(p).exists()]


def _clear_store(out: Path, inputs: list[Path] = ()) -> None:
    """``--overwrite``: delete the store at ``out``, only if it is one (:func:`jsae.safety.check_deletable`:
    never the working directory, a folder holding an input, or a folder with other files) and every
    file inside is one a store writer makes (:func:`jsae.store.check_store_files`: a user's file
    inside ``embeddings.zarr/`` or a symbolic link is refused by name, and nothing is deleted)."""
    from jsae.store import check_store_files

    try:
        check_deletable(out, what="an embedding store", is_ours=is_store_dir, inputs=inputs)
        check_store_files(out, deleting=True)
        remove_tree(out, what="an embedding store", is_ours=is_store_dir, inputs=inputs)
    except JsaeError as err:
        raise ExportError(f"--overwrite: {err}") from None


def audio_roots(paths) -> list[str]:
    """The folders the audio of a store came from: the distinct folders of ``paths``, without
    those inside another one. ``jsae report`` plays only files under these (or ``--audio-root``)."""
    roots: list[str] = []
    for folder in sorted({os.path.dirname(os.path.abspath(str(p))) for p in paths}):
        if not any(folder == r or folder.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
            roots.append(folder)
    return roots


# ----------------------------------------------------------------------------- plan

def _tqdm(enabled: bool, **kw):
    from tqdm.auto import tqdm

    return tqdm(disable=not enabled, dynamic_ncols=True, **kw)


def _make_plan(cfg: ExportConfig, encoder: Encoder, signals: SignalStop | None = None) -> dict[str, Any]:
    from jsae.store import create_array

    out = cfg.out
    t0 = time.time()
    recordings = read_manifest(cfg.manifest) if cfg.manifest is not None else scan_audio_dir(cfg.audio_dir)
    bar = _tqdm(cfg.progress, total=len(recordings), desc="plan: files", unit="file")

    def progress(items):
        for rec in items:
            if signals is not None and signals.requested:   # before anything is written
                raise Interrupted("interrupted while planning; nothing kept; run the same command to start again",
                                  signals.exit_status)
            yield rec
            bar.update(1)

    try:
        plan: Plan = make_plan(recordings, encoder.sample_rate, cfg.segment, progress=progress)
    finally:
        bar.close()
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / PROGRESS_DIR, ignore_errors=True)
    (out / PROGRESS_DIR).mkdir()
    if plan.num_rows:
        tmp = out / (PLAN_TABLE + ".tmp")
        plan.table.to_parquet(tmp, index=False)
        os.replace(tmp, out / PLAN_TABLE)
        create_array(out, plan.num_rows, encoder.dim, rows_per_shard=cfg.rows_per_shard,
                     rows_per_chunk=cfg.chunk_rows)
    warnings = imbalance_warnings(plan.labels, mode=cfg.segment.mode)
    accounting = {"mode": cfg.segment.mode, "totals": plan.totals(), "labels": plan.labels,
                  "imbalance_points": IMBALANCE_POINTS, "warnings": warnings, "recordings": plan.recordings}
    info = {
        "format": "jsae-embed-plan", "version": PLAN_VERSION, "settings": cfg.settings(),
        "encoder": encoder.info(), "num_rows": plan.num_rows, "dim": encoder.dim,
        "num_shards": len(shard_bounds(plan.num_rows, cfg.rows_per_shard)),
        "files_total": plan.files_total, "files_skipped": len(plan.skipped),
        "files_used": int(plan.table.groupby(["_path", "_rec_offset_ms", "_rec_duration_ms"]).ngroups)
        if plan.num_rows else 0,
        "input_seconds": plan.input_seconds, "audio_seconds": plan.audio_seconds,
        "skipped": plan.skipped, "segmentation_accounting": accounting,
        "started_at": t0, "plan_wall_seconds": time.time() - t0,
    }
    _write_json(out / PLAN_INFO, info)
    tot = accounting["totals"]
    log.info("plan: %d segments (%.1f s of audio) from %d of %d files, %d skipped, %d shards; %s segmentation "
             "kept %.1f of %.1f s of non-silent audio (%.0f %%), dropped %.1f s",
             plan.num_rows, plan.audio_seconds, info["files_used"], plan.files_total, len(plan.skipped),
             info["num_shards"], cfg.segment.mode, tot["kept_seconds"], tot["nonsilent_seconds"],
             100 * tot["kept_fraction"], tot["dropped_seconds"])
    for message in warnings:
        log.warning("%s", message)
    return info


def _wait_for_plan(cfg: ExportConfig) -> None:
    deadline = time.time() + cfg.plan_timeout
    while not (cfg.out / PLAN_INFO).exists():
        if time.time() > deadline:
            raise ExportError(
                f"worker {cfg.shard_index}: no plan appeared in {cfg.out} within {cfg.plan_timeout:.0f} s. "
                "The worker with --shard-index 0 makes it; start it (or run once with --plan-only)."
            )
        time.sleep(1.0)


# ----------------------------------------------------------------------------- shards

def _segment_spans(r: dict[str, Any]) -> list[tuple[int, int]]:
    """A plan row's source spans, ms from the start of its (excerpt of the) recording."""
    spans = r.get("_spans_ms")
    if isinstance(spans, str) and spans:
        return [(int(a), int(b)) for a, b in json.loads(spans)]
    return [(int(r["_seg_offset_ms"]), int(r["_seg_offset_ms"]) + int(r["_duration_ms"]))]   # version-1 plan


def _shard_waves(rows: pd.DataFrame, sample_rate: int) -> list[np.ndarray]:
    """Cut the waveforms ``[T_i]`` (float32, ``sample_rate`` Hz) of a shard's rows: each is
    the concatenation of its segment's source spans."""
    waves: list[np.ndarray] = []
    key, audio = None, None
    for r in rows.to_dict("records"):
        k = (r["_path"], r["_rec_offset_ms"], r["_rec_duration_ms"])
        if k != key:
            path = Path(r["_path"])
            try:
                size = path.stat().st_size
                if size != r["_file_bytes"]:
                    raise AudioReadError(path, f"size is {size} bytes, the plan saw {r['_file_bytes']}")
                rec_ms = r["_rec_duration_ms"]
                audio = load_audio(path, sample_rate, offset=r["_rec_offset_ms"] / 1000,
                                   duration=None if rec_ms < 0 else rec_ms / 1000)
            except (AudioReadError, OSError) as err:
                raise ExportError(
                    f"{path} changed or vanished since the plan was made ({err}); restore it, or start "
                    "the export again with --overwrite."
                ) from None
            key = k
        pieces = []
        for start_ms, end_ms in _segment_spans(r):
            a = round(start_ms * sample_rate / 1000)
            n = round((end_ms - start_ms) * sample_rate / 1000)
            w = audio[a : a + n]
            if w.shape[0] != n:
                raise ExportError(f"{path}: segment {r['id']} runs past the end of the audio; the file changed.")
            pieces.append(w)
        waves.append(pieces[0] if len(pieces) == 1 else np.concatenate(pieces))
    return waves


def _embed_shard(encoder: Encoder, waves: list[np.ndarray], batch_size: int, bar,
                 check_stop: Callable[[], None] = lambda: None) -> np.ndarray:
    """The embeddings ``[n, dim]`` of a shard's waveforms; ``check_stop()`` runs before each
    batch (it raises to abandon the shard)."""
    order = sorted(range(len(waves)), key=lambda i: (-waves[i].shape[0], i))
    out = np.empty((len(waves), encoder.dim), np.float32)
    for b in range(0, len(order), batch_size):
        check_stop()
        idx = order[b : b + batch_size]
        out[idx] = encoder.embed([waves[i] for i in idx])
        bar.update(len(idx))
    return out


def _describe_shard(out: Path, shard: int, ids: pd.Series, waves: list[np.ndarray], sample_rate: int) -> int:
    """Describe a shard's waveforms and write its descriptor file atomically; returns the
    number of rows whose descriptors (some or all) failed."""
    from jsae.embed.describe import ERROR_COLUMN, describe_waves

    frame = describe_waves(waves, sample_rate)
    frame.insert(0, "id", ids.astype(str).to_numpy())
    path = _described(out, shard)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    failed = frame[frame[ERROR_COLUMN] != ""]
    for rid, reason in zip(failed["id"], failed[ERROR_COLUMN]):
        log.warning("descriptors of %s failed: %s", rid, reason)
    return len(failed)


def _descriptor_table(out: Path, num_shards: int, ids: pd.Series) -> pd.DataFrame:
    """Every shard's descriptors in store order (``id`` + :data:`jsae.embed.describe.COLUMNS`)."""
    from jsae.embed.describe import COLUMNS

    missing = [s for s in range(num_shards) if not _described(out, s).exists()]
    if missing:
        raise ExportError(
            f"{out}: {len(missing)} shard(s) have no descriptors (e.g. {missing[:10]}; {PROGRESS_DIR}/"
            "shard-SSSSS.describe.parquet); run the workers again (the same command computes them), then merge."
        )
    frame = pd.concat([pd.read_parquet(_described(out, s)) for s in range(num_shards)], ignore_index=True)
    if list(frame.columns) != ["id", *COLUMNS] or not np.array_equal(frame["id"].to_numpy(dtype=str),
                                                                       ids.to_numpy(dtype=str)):
        raise ExportError(f"{out}: the shards' descriptor files do not match the plan (other columns or rows); delete "
                          f"{PROGRESS_DIR}/*.describe.parquet and the .done markers, and run the workers again.")
    return frame


def _finished_shards(cfg: ExportConfig, num_shards: int) -> set[int]:
    done = _done_shards(cfg.out, num_shards)
    if cfg.describe:   # a shard counts as done with its descriptors only (else it is computed again)
        done = {s for s in done if _described(cfg.out, s).exists()}
    return done


def pending_shards(cfg: ExportConfig, num_rows: int) -> list[int]:
    """The shards of worker ``cfg.shard_index`` of ``cfg.num_shards`` (``s % num_shards ==
    shard_index``) not finished yet (no marker, or no descriptors when ``cfg.describe``), in order."""
    num_shards = len(shard_bounds(num_rows, cfg.rows_per_shard))
    done = _finished_shards(cfg, num_shards)
    return [s for s in range(num_shards) if s % cfg.num_shards == cfg.shard_index and s not in done]


def export_shard(cfg: ExportConfig, encoder: Encoder, table: pd.DataFrame, shard: int, *, array=None,
                 waves: list[np.ndarray] | None = None, bar=None, check_stop: Callable[[], None] = lambda: None,
                 worker: str | None = None, started: float | None = None) -> dict[str, Any]:
    """Embed shard ``shard`` of the plan ``table`` and write its rows (one :func:`jsae.store.write_rows`),
    then its descriptors (``cfg.describe``), then its marker; returns the marker.

    The one way a shard is made, by every worker: :func:`run_export`'s loop here and the encoder
    actors of :mod:`jsae.embed.ray_export`. ``array``: the store's array opened for writing (else opened
    here); ``waves``: the shard's waveforms when already read (else read here); ``bar``: a progress
    bar updated per batch; ``check_stop`` runs before each batch and before the write and raises to
    abandon the shard (no marker: it is computed again); ``worker``: who made it (the marker's
    ``worker``, default ``shard_index/num_shards``); ``started``: when the shard's work began
    (its ``wall_seconds`` count from there; default now).
    """
    from jsae.store import open_array, write_rows

    t0 = time.time() if started is None else started
    out = cfg.out
    sr = encoder.sample_rate
    start = shard * cfg.rows_per_shard
    stop = min(start + cfg.rows_per_shard, len(table))
    if array is None:
        array = open_array(out, write=True)
    if waves is None:
        waves = _shard_waves(table.iloc[start:stop], sr)
    if bar is None:
        bar = _tqdm(False)
    device = str(getattr(encoder, "device", "cpu"))
    batch_size = cfg.batch_size or (32 if device.startswith("cuda") else encoder.cpu_batch_size)
    emb = _embed_shard(encoder, waves, batch_size, bar, check_stop)
    check_stop()
    write_rows(array, start, emb)
    seconds = float(sum(w.shape[0] for w in waves)) / sr
    described = {}
    if cfg.describe:
        bar.set_postfix_str("describing")
        t_describe = time.time()
        failed = _describe_shard(out, shard, table["id"].iloc[start:stop], waves, sr)
        described = {"describe_seconds": time.time() - t_describe, "describe_failed": failed}
    marker = {
        "shard": shard, "start": start, "stop": stop, "rows": stop - start, "audio_seconds": seconds,
        "wall_seconds": time.time() - t0, "worker": worker or f"{cfg.shard_index}/{cfg.num_shards}",
        "host": socket.gethostname(), "device": device, "batch_size": batch_size,
        "finished_at": time.time(), **described,
    }
    _write_json(_marker(out, shard), marker)
    return marker


def _run_shards(cfg: ExportConfig, encoder: Encoder, info: dict[str, Any], table: pd.DataFrame,
                signals: SignalStop | None = None) -> list[int]:
    """Embed this worker's unfinished shards one after the other (reading the next while one embeds)."""
    from jsae.store import open_array

    out = cfg.out
    bounds = shard_bounds(info["num_rows"], cfg.rows_per_shard)
    todo = pending_shards(cfg, info["num_rows"])
    if not todo:
        return []
    array = open_array(out, write=True)
    sr = encoder.sample_rate
    total = sum(bounds[s][1] - bounds[s][0] for s in todo)
    bar = _tqdm(cfg.progress, total=total, desc=f"embed [{cfg.shard_index}/{cfg.num_shards}]", unit="seg")
    audio_done = 0.0
    t_start = time.time()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)   # reads the next shard while this one embeds
    current: list[int | None] = [None]

    def check_stop() -> None:
        """On SIGINT / SIGTERM: abandon the current shard (no marker: it is computed again), keep the rest."""
        if signals is None or not signals.requested:
            return
        kept = len(_finished_shards(cfg, len(bounds)))
        abandoned = "" if current[0] is None else f", shard {current[0]} abandoned"
        raise Interrupted(f"interrupted; {kept} of {len(bounds)} shards done and kept in {out}{abandoned}; "
                          "run the same command to resume", signals.exit_status)

    try:
        load = lambda s: _shard_waves(table.iloc[bounds[s][0] : bounds[s][1]], sr)  # noqa: E731
        pending = pool.submit(load, todo[0])
        for j, s in enumerate(todo):
            current[0] = None
            check_stop()
            current[0] = s
            t0 = time.time()
            waves = pending.result()
            if j + 1 < len(todo):
                pending = pool.submit(load, todo[j + 1])
            marker = export_shard(cfg, encoder, table, s, array=array, waves=waves, bar=bar,
                                  check_stop=check_stop, started=t0)
            audio_done += marker["audio_seconds"]
            bar.set_postfix_str(f"{audio_done / max(time.time() - t_start, 1e-9):.0f} audio s/s")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return todo


# ----------------------------------------------------------------------------- finalize

def _take_lock(out: Path) -> bool:
    lock = out / PROGRESS_DIR / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                other = _read_json(lock)
            except (OSError, ValueError):
                return False
            alive = True
            if other.get("host") == me["host"]:
                try:
                    os.kill(int(other["pid"]), 0)
                except ProcessLookupError:
                    alive = False
                except PermissionError:
                    pass
            if alive:
                return False
            lock.unlink(missing_ok=True)       # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return True
    return False


def export_status(out: str | os.PathLike) -> dict[str, Any]:
    """Where an export stands: ``planned``, ``num_shards``, ``done`` / ``missing`` shard ids, ``complete``."""
    out = Path(out)
    status: dict[str, Any] = {"out": str(out), "planned": (out / PLAN_INFO).exists(), "complete": False}
    store_info = out / "store.json"
    if store_info.exists():
        status["complete"] = bool(_read_json(store_info).get("complete"))
    if status["planned"]:
        info = _read_json(out / PLAN_INFO)
        done = _done_shards(out, info["num_shards"])
        status.update(num_shards=info["num_shards"], num_rows=info["num_rows"], done=sorted(done),
                      missing=[s for s in range(info["num_shards"]) if s not in done])
    return status


def finalize(out: str | os.PathLike, *, force: bool = True) -> dict[str, Any]:
    """Check every shard is done, then write ``summary.json``, the metadata and ``store.json``.

    With ``force=False`` (automatic merge by a worker) nothing happens when another
    live process holds the finalize lock. Returns the summary.
    """
    from jsae.store import finalize_store

    out = Path(out)
    if not (out / PLAN_INFO).exists():
        raise ExportError(f"{out}: no {PLAN_INFO}; nothing to merge. Run `jsae embed ... --out {out}` first.")
    info, table = read_plan(out)
    status = export_status(out)
    if status["missing"]:
        miss = status["missing"]
        raise ExportError(
            f"{out}: {len(miss)} of {info['num_shards']} shards are not done yet (e.g. {miss[:10]}); "
            "run the workers again (the same command resumes them) and merge afterwards."
        )
    lock = out / PROGRESS_DIR / LOCK_NAME
    if not _take_lock(out):
        if not force:
            log.info("another process is finalizing %s", out)
            return {}
        lock.unlink(missing_ok=True)
        _take_lock(out)
    try:
        markers = [_read_json(_marker(out, s)) for s in range(info["num_shards"])]
        embed_wall = float(sum(m["wall_seconds"] for m in markers))
        metadata = table[[c for c in table.columns if not c.startswith("_")]]
        describe, store_describe = None, {}
        if info["settings"].get("describe"):
            from jsae.embed.describe import ERROR_COLUMN, check_available

            descriptors = _descriptor_table(out, info["num_shards"], table["id"])
            clash = [c for c in descriptors.columns[1:] if c in metadata.columns]
            if clash:
                raise ExportError(f"{out}: the manifest has a label named {clash[0]!r}, a descriptor column; rename "
                                  "that label, or pass --no-describe (with --overwrite).")
            metadata = pd.concat([metadata.reset_index(drop=True), descriptors.iloc[:, 1:]], axis=1)
            errors = descriptors[ERROR_COLUMN].to_numpy(dtype=str)
            failed = [{"id": str(rid), "source": str(src), "reason": str(reason)} for rid, src, reason
                      in zip(table["id"].to_numpy()[errors != ""], table["source"].to_numpy()[errors != ""],
                             errors[errors != ""])]
            try:
                tools = check_available()
            except JsaeError:        # merging by hand where the tools are missing: the columns are made
                tools = {}
            describe = {"columns": int(descriptors.shape[1] - 1), "described": int((errors == "").sum()),
                        "failed": failed, "wall_seconds": float(sum(m.get("describe_seconds", 0.0) for m in markers))}
            store_describe = {"describe": {"producer": "jsae embed", **tools, "rows": int(len(descriptors)),
                                           "failed": len(failed)}}
        audio = float(info["audio_seconds"])
        now = time.time()
        summary = {
            "encoder": info["encoder"],
            "segmentation": info["settings"]["segmentation"],
            "inputs": info["settings"]["inputs"],
            "files": {"total": info["files_total"], "embedded": info["files_used"], "skipped": info["files_skipped"]},
            "segments": info["num_rows"], "rows": info["num_rows"], "dim": info["dim"],
            "shards": info["num_shards"], "rows_per_shard": info["settings"]["rows_per_shard"],
            "skipped": info["skipped"],
            "input_seconds": info["input_seconds"], "audio_seconds": audio,
            "wall_seconds": {"plan": info["plan_wall_seconds"], "embed": embed_wall,
                             "total": info["plan_wall_seconds"] + embed_wall,
                             "elapsed": now - info["started_at"]},
            "real_time_factor": embed_wall / audio if audio else None,
            "x_real_time": audio / embed_wall if embed_wall else None,
            "workers": sorted({m["worker"] for m in markers}),
            "finished_at": now,
            **({"describe": describe} if describe is not None else {}),
            # last: its per-recording list can be long
            "segmentation_accounting": info.get("segmentation_accounting"),
        }
        _write_json(out / SUMMARY_NAME, summary)
        finalize_store(out, metadata, {
            "producer": "jsae embed", "encoder": info["encoder"], "segmentation": summary["segmentation"],
            "inputs": summary["inputs"], "audio_roots": audio_roots(table["_path"]),
            "rows_per_shard": info["settings"]["rows_per_shard"],
            "rows_per_chunk": info["settings"]["rows_per_chunk"], "summary": SUMMARY_NAME, **store_describe,
        })
    finally:
        lock.unlink(missing_ok=True)
    log.info("store %s complete: %d rows x %d, %.1f s of audio, %d files skipped",
             out, summary["rows"], summary["dim"], audio, info["files_skipped"])
    return summary


# ----------------------------------------------------------------------------- entry

#: embeds a worker's unfinished shards: ``(cfg, encoder, plan info, plan table, signals) -> shards made``
ShardRunner = Callable[[ExportConfig, Encoder, dict, pd.DataFrame, "SignalStop | None"], list]


def run_export(cfg: ExportConfig, encoder: Encoder | None = None, *,
               run_shards: ShardRunner | None = None) -> dict[str, Any]:
    """Run one worker of an export (plan if needed, own shards, merge if last).

    ``encoder``: an already loaded encoder (else ``cfg.encoder``/``cfg.model`` are loaded).
    ``run_shards``: what embeds the worker's unfinished shards (:func:`pending_shards`, each with
    :func:`export_shard`); default: here, one after the other; :mod:`jsae.embed.ray_export` passes
    one that hands them to encoder actors on a Ray cluster.
    Returns ``{"status": "complete" | "planned" | "partial", "summary": ..., "shards": [...]}``.
    Raises :class:`~jsae.errors.Interrupted` (``exit_status`` 130 / 143) on SIGINT / SIGTERM
    in the main thread, after abandoning the shard being embedded (finished shards are kept).
    """
    out = Path(cfg.out)
    with SignalStop() as signals, writing_to(f"the embedding store {out}",
                                             kept=f"the shards finished before are kept in {out} (the same command "
                                                  "resumes from them)"):
        return _run_export(cfg, encoder, signals, run_shards or _run_shards)


def _run_export(cfg: ExportConfig, encoder: Encoder | None, signals: SignalStop,
                run_shards: ShardRunner) -> dict[str, Any]:
    from jsae.store import check_can_write, check_store_files

    out = Path(cfg.out)
    if cfg.overwrite:
        _clear_store(out, _inputs(cfg))
    if not (out / PLAN_INFO).exists() and not (out / "store.json").exists():
        try:  # a new export writes only into a new or empty folder (or one it started itself)
            check_writable_folder(out, what="an embedding store", is_ours=is_store_dir)
        except JsaeError as err:
            raise ExportError(str(err)) from None
    try:   # never write through a link inside the store
        check_store_files(out, deleting=False)
    except JsaeError as err:
        raise ExportError(str(err)) from None
    # a read-only or forbidden --out: one line now, not after the encoder is loaded and the audio planned
    check_can_write(out, f"the embedding store {out}", kept="nothing was written (no plan, no shard)")
    wanted = cfg.settings()
    if (out / "store.json").exists() and not (out / PLAN_INFO).exists():
        raise ExportError(f"{out} is a store not made by `jsae embed`; choose another --out or pass --overwrite.")
    if (out / PLAN_INFO).exists():
        _check_settings(out, _read_json(out / PLAN_INFO)["settings"], wanted)
        if export_status(out)["complete"]:
            log.info("%s is already complete; nothing to do", out)
            summary = _read_json(out / SUMMARY_NAME) if (out / SUMMARY_NAME).exists() else {}
            return {"status": "complete", "summary": summary, "shards": []}
    if cfg.describe and not cfg.plan_only:
        from jsae.embed.describe import DescribeUnavailableError, check_available

        try:
            check_available()
        except DescribeUnavailableError as err:
            raise ExportError(f"{err}. jsae embed adds per-segment descriptors by default; install them, or pass "
                              "--no-describe (and add them later with `jsae describe STORE`).") from None
    if encoder is None:
        encoder = get_encoder(cfg.encoder).load(cfg.model, cfg.device)
    elif encoder.name != cfg.encoder:
        raise ExportError(f"the given encoder is {encoder.name!r} but the config says {cfg.encoder!r}.")
    if not (out / PLAN_INFO).exists():
        if cfg.shard_index == 0:
            _make_plan(cfg, encoder, signals)
        else:
            _wait_for_plan(cfg)
    info, table = read_plan(out)
    _check_settings(out, info["settings"], wanted)
    if (info["dim"], info["encoder"]["sample_rate"]) != (encoder.dim, encoder.sample_rate):
        raise ExportError(
            f"{out} was planned for {info['dim']}-d embeddings at {info['encoder']['sample_rate']} Hz but the "
            f"loaded encoder gives {encoder.dim}-d at {encoder.sample_rate} Hz; is it the same model?"
        )
    if info["num_rows"] == 0:
        _write_json(out / SUMMARY_NAME, {"encoder": info["encoder"], "segments": 0, "rows": 0,
                                         "files": {"total": info["files_total"], "embedded": 0,
                                                   "skipped": info["files_skipped"]},
                                         "skipped": info["skipped"],
                                         "segmentation_accounting": info.get("segmentation_accounting")})
        reasons = "; ".join(f"{s['source']}: {s['reason']}" for s in info["skipped"][:5])
        raise ExportError(f"no segment found in any of the {info['files_total']} files, nothing to store "
                          f"(see {out / SUMMARY_NAME}). First reasons: {reasons}")
    if cfg.plan_only:
        return {"status": "planned", "summary": {}, "shards": []}
    shards = run_shards(cfg, encoder, info, table, signals)
    status = export_status(out)
    if not status["missing"] and not status["complete"]:
        summary = finalize(out, force=False)
        if summary:
            return {"status": "complete", "summary": summary, "shards": shards}
    if export_status(out)["complete"]:
        return {"status": "complete", "summary": _read_json(out / SUMMARY_NAME), "shards": shards}
    log.info("worker %d/%d done (%d shards); %d shards of other workers still missing — the last worker "
             "merges, or run `jsae embed --merge --out %s`", cfg.shard_index, cfg.num_shards, len(shards),
             len(status["missing"]), out)
    return {"status": "partial", "summary": {}, "shards": shards}
