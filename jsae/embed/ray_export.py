"""``jsae embed --ray [ADDRESS]``: the shards of an export embedded by encoder actors on a Ray cluster.

This module only distributes shards; the export itself is :mod:`jsae.embed.export`'s:

1. The driver (the ``jsae embed`` process) runs :func:`jsae.embed.export.run_export` as one worker
   would: the same checks, the same plan (made once, on its CPU), the same refusal of a store
   planned with other settings. Only the step that embeds the unfinished shards
   (:func:`jsae.embed.export.pending_shards`) is replaced by :func:`ray_shards`.
2. Those shards become a Ray dataset of one row (and one block) per shard, ``{"shard": s}``, and
   ``map_batches(batch_size=1)`` hands each to an actor of a fixed pool of :class:`ShardEmbedder`:
   one per GPU of the cluster (``num_gpus=1``), or one per CPU slot (``num_cpus=1``), or
   ``--ray-workers N``. An actor loads the encoder once, then makes each shard it gets with
   :func:`jsae.embed.export.export_shard` — the function every worker uses: it writes the shard's rows
   straight into the tensorstore array (each shard is its own row range, so writers never
   conflict), then its descriptors, then its ``progress/shard-SSSSS.done`` marker — and returns one
   small row (shard, rows, audio and wall seconds) for the driver's progress bar.
3. When every shard has its marker the driver finalizes as any last worker does
   (:func:`jsae.embed.export.finalize`: ``metadata.parquet``, ``summary.json``, ``store.json``).

Faults: an actor that dies (a killed process, a lost node) is restarted and its shard run again,
up to :data:`RETRIES` times (Ray's ``max_restarts`` / ``max_task_retries``); a shard only counts
once its marker is written, so a half-written shard is simply rewritten whole. A run that stops
anyway (the driver killed or interrupted, retries spent, an error in a shard) keeps every finished
shard, and the same command resumes from the markers — with or without ``--ray``. An error in a
shard (a ``JsaeError``: an audio file changed since the plan, a full disk) stops the run with its
one line. Each row is a function of its segment only, so the store equals the single-process
export row for row (bit for bit at the same torch thread count: an actor with one CPU runs torch
on one thread, and a float32 sum over other thread counts rounds differently in the last bit).

The store folder, the audio and ``--model`` must be at the same paths on every node of the
cluster (a shared file system); on one machine they are. ``ADDRESS`` is Ray's: omitted, a new
local Ray instance on this machine (all its CPUs, or ``--ray-workers N`` of them; or the cluster at
``$RAY_ADDRESS``); ``auto``, the cluster this machine
belongs to; ``ray://HEAD:10001`` or ``HEAD:6379``. A Ray already initialised in the calling
process (``ray.init`` before :func:`run_ray_export`) is used as it is and left running.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from jsae.errors import Interrupted, JsaeError, one_line, writing_to

from jsae.embed.export import ExportConfig, ExportError, export_shard, pending_shards, read_plan, run_export

__all__ = ["RAY_INSTALL", "RETRIES", "ShardEmbedder", "import_ray", "ray_shards", "run_ray_export"]

log = logging.getLogger("jsae.embed")

#: how Ray is installed (the one-line error of ``--ray`` without it)
RAY_INSTALL = "pip install 'jsae[ray]'"
#: restarts of a dead encoder actor and runs of a shard whose actor died (then the run stops; rerun it)
RETRIES = 3


def import_ray():
    """``ray`` with Ray Data, or one :class:`~jsae.embed.export.ExportError` line saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ExportError(f"--ray needs Ray Data ({err}); install it with: {RAY_INSTALL}") from None
    return ray


class ShardEmbedder:
    """A Ray Data actor: loads the encoder once (``device``: ``cuda`` on the GPU Ray gave it, or
    ``cpu``), reads the plan once, then makes every shard it is given with
    :func:`jsae.embed.export.export_shard` and returns one row per shard.

    A :class:`~jsae.errors.JsaeError` (an audio file changed since the plan, a full disk, an
    encoder or descriptor tool that does not load on this node) is returned as the row's
    ``error`` (its one line; the driver stops with it), not raised: Ray would keep only its text.
    """

    def __init__(self, cfg: ExportConfig, device: str):
        os.environ.setdefault("JAX_PLATFORMS", "cpu")   # the store is written with tensorstore, not JAX
        from jsae.store import open_array

        from jsae.embed.encoders import get_encoder

        self.cfg, self.error = cfg, ""
        self.worker = f"ray:{os.uname().nodename}:{os.getpid()}"
        try:
            with writing_to(f"the embedding store {cfg.out}"):
                self.encoder = get_encoder(cfg.encoder).load(cfg.model, device)
                self.table = read_plan(cfg.out)[1]
                self.array = open_array(cfg.out, write=True)
        except JsaeError as err:
            self.error = f"{self.worker}: {one_line(err)}"

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        rows: dict[str, list] = {key: [] for key in ("shard", "rows", "audio_seconds", "wall_seconds", "error")}
        for shard in batch["shard"]:
            marker, error = {"rows": 0, "audio_seconds": 0.0, "wall_seconds": 0.0}, self.error
            if not error:
                try:
                    with writing_to(f"the embedding store {self.cfg.out}", kept="the finished shards are kept"):
                        marker = export_shard(self.cfg, self.encoder, self.table, int(shard), array=self.array,
                                              worker=self.worker)
                except JsaeError as err:
                    error = one_line(err)
            for key, value in {**marker, "shard": int(shard), "error": error}.items():
                if key in rows:
                    rows[key].append(value)
        return rows


def _connect(ray, address: str | None, workers: int | None) -> bool:
    """Connect to (or start) Ray unless it already runs in this process; True when this call did.
    A new local instance has no dashboard and, with ``workers``, that many CPU slots (one per actor;
    else all CPUs: Ray starts a worker process for each)."""
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if not address and not os.environ.get("RAY_ADDRESS"):
        options.update(include_dashboard=False, num_cpus=workers)
    _check_reachable(address or os.environ.get("RAY_ADDRESS"))
    try:
        ray.init(address=address or None, **options)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ExportError(f"--ray: cannot reach {where} ({one_line(err)}); give the address of a running cluster "
                          "(`ray start --head` prints it), or none for a local one") from None
    return True


#: seconds to wait for a TCP connection to a Ray cluster's address before giving up
CONNECT_SECONDS = 10.0


def _check_reachable(address: str | None) -> None:
    """A ``host:port`` (or ``ray://host:port``) address that accepts no TCP connection is one
    :class:`ExportError` line at once: ``ray.init`` would retry it for minutes. ``auto``, no
    address and addresses without a port are left to Ray."""
    if not address:
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as err:
        raise ExportError(f"--ray: cannot reach the Ray cluster at {address} ({err.strerror or type(err).__name__}, "
                          f"within {CONNECT_SECONDS:.0f} s); start it with `ray start --head` and give the address "
                          "it prints, or give no address for a local one") from None


def _actors(ray, device: str, workers: int | None, shards: int) -> tuple[str, int, dict[str, Any]]:
    """The actors' device, their number and the resources of each."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    on_gpu = device.startswith("cuda") or (device == "auto" and gpus > 0)
    if on_gpu and not gpus:
        raise ExportError(f"--device {device}: the Ray cluster has no GPU; pass --device cpu (or auto).")
    count = workers or (gpus if on_gpu else max(cpus, 1))
    return ("cuda" if on_gpu else "cpu"), max(1, min(count, shards)), (
        {"num_gpus": 1, "num_cpus": 1} if on_gpu else {"num_cpus": 1})


@contextlib.contextmanager
def _quiet(ray):
    """Datasets made inside show no Ray Data progress bars, log lines or warnings about Ray's own
    settings (jsae's bar counts segments)."""
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # Ray 2.60 names no parameter for bounded restarts (its default is to restart for ever)
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.")
        context = ray.data.DataContext.get_current()
        saved = context.enable_progress_bars, context.print_on_execution_start
        context.enable_progress_bars = context.print_on_execution_start = False
        try:
            yield
        finally:
            context.enable_progress_bars, context.print_on_execution_start = saved
            data_log.setLevel(level)


def _reason(err: BaseException) -> str:
    """The first line of what Ray says stopped the run, without its colours."""
    cause = getattr(err, "cause", None) or err
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).strip().splitlines() or [""]
    return f"{type(cause).__name__}: {lines[0]}".rstrip(": ")


def ray_shards(cfg: ExportConfig, info: dict[str, Any], signals=None, *, address: str | None = None,
               device: str = "auto", workers: int | None = None) -> list[int]:
    """Embed the unfinished shards of the planned store ``cfg.out`` on Ray (see the module
    docstring); returns them. A :class:`~jsae.console.SignalStop` ``signals`` is checked after each
    shard (the shards on the actors then are abandoned: no marker)."""
    from tqdm.auto import tqdm

    todo = pending_shards(cfg, info["num_rows"])
    if not todo:
        return []
    ray = import_ray()
    started = _connect(ray, address, workers)
    num_shards = info["num_shards"]
    kept = lambda: num_shards - len(pending_shards(cfg, info["num_rows"]))  # noqa: E731
    try:
        device, count, resources = _actors(ray, device, workers, len(todo))
        log.info("ray: %d shards to embed on %d %s encoder actor(s)", len(todo), count, device)
        total = sum(min(cfg.rows_per_shard, info["num_rows"] - s * cfg.rows_per_shard) for s in todo)
        with _quiet(ray), tqdm(total=total, desc=f"embed [ray x{count}]", unit="seg", disable=not cfg.progress,
                               dynamic_ncols=True) as bar:
            shards = ray.data.from_items([{"shard": s} for s in todo], override_num_blocks=len(todo)).map_batches(
                ShardEmbedder, fn_constructor_kwargs={"cfg": cfg, "device": device}, batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=count, max_tasks_in_flight_per_actor=1),
                max_restarts=RETRIES, max_task_retries=RETRIES, **resources)
            audio, t0 = 0.0, time.time()
            for row in shards.iter_rows():
                if row["error"]:
                    raise ExportError(f"{row['error']} (shard {row['shard']}; {kept()} of {num_shards} shards are "
                                      f"done and kept in {cfg.out})")
                bar.update(int(row["rows"]))
                audio += float(row["audio_seconds"])
                bar.set_postfix_str(f"{audio / max(time.time() - t0, 1e-9):.0f} audio s/s")
                if signals is not None and signals.requested:
                    raise Interrupted(f"interrupted; {kept()} of {num_shards} shards done and kept in {cfg.out}; "
                                      "run the same command to resume", signals.exit_status)
    except (JsaeError, KeyboardInterrupt):
        raise
    except Exception as err:
        if not isinstance(err, ray.exceptions.RayError) or isinstance(err, ray.exceptions.UserCodeException):
            raise      # a bug, here or on an actor: its traceback
        raise ExportError(f"the Ray run stopped ({_reason(err)}); {kept()} of {num_shards} shards are done and kept "
                          f"in {cfg.out}; run the same command to resume") from None
    finally:
        if started:
            ray.shutdown()
    return todo


def run_ray_export(cfg: ExportConfig, *, address: str | None = None, workers: int | None = None) -> dict[str, Any]:
    """:func:`jsae.embed.export.run_export` with the shards embedded on Ray (:func:`ray_shards`).

    The driver plans on its CPU; the actors load the encoder on ``cfg.device`` (``auto``: a GPU
    each when the cluster has GPUs). Returns what :func:`~jsae.embed.export.run_export` returns.
    """
    if workers is not None and workers < 1:
        raise ExportError(f"--ray-workers must be >= 1; got {workers}.")
    if cfg.num_shards != 1:
        raise ExportError("--ray hands out every shard itself; drop --num-shards / --shard-index.")
    if not cfg.plan_only:
        import_ray()      # one line now, not after planning
    # the actors may run in other folders: absolute paths
    model = cfg.model
    if model and Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())
    actors_cfg = replace(cfg, out=Path(cfg.out).resolve(), model=model)

    def run_shards(_cfg, _encoder, info, _table, signals) -> list[int]:
        return ray_shards(actors_cfg, info, signals, address=address, device=cfg.device, workers=workers)

    return run_export(replace(cfg, device="cpu"), run_shards=run_shards)
