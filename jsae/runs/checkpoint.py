"""Orbax checkpoints of a grid: the stacked state plus JSON metadata, with checksums.

``RUN_DIR/checkpoints/<step>/`` holds ``state`` (the unpadded :class:`GridState`:
stacked parameters, Adam states and dead-latent counters, one entry per
latent-size group) and ``meta`` (JSON: grid, resolved config, normalisation,
loss history, data fingerprint, package version). Saves are atomic (orbax writes
to a temporary folder and renames it), so a run killed mid-save — or one whose
disk filled up mid-save — resumes from the previous step.

**Checksums.** ``meta["checksums"]`` holds the SHA-256 of every saved array
(``{"state": {leaf path: hex}, "meta": hex}``: each leaf hashed over its dtype,
shape and C-order bytes; the meta hashed over its canonical JSON without the
checksums). They are computed from the arrays in memory before the save and live
in the same atomic save as the arrays. :func:`restore_checkpoint` recomputes them
from the restored arrays and raises :class:`CheckpointError` naming the step when
one differs (flipped bits on disk) or when orbax cannot read the step at all.
Checkpoints written before checksums existed restore unverified.
:func:`restore_newest_good` walks back from the newest step to the newest one that
verifies (what resuming a sweep does).

Restoring builds an abstract target with shardings for the devices present now,
so a checkpoint written with the model axis over 8 devices loads on 1 CPU.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from ..cluster import to_host
from ..errors import JsaeError
from ..jsonio import to_jsonable
from .layout import CHECKPOINT_DIR, CORRUPT_DIR

__all__ = ["CHECKPOINT_DIR", "CORRUPT_DIR", "CheckpointError", "abstract_state_of", "open_manager", "save_checkpoint",
           "restore_checkpoint", "restore_newest_good", "checkpoint_steps", "state_checksums",
           "meta_checksum", "set_aside"]



class CheckpointError(JsaeError):
    """A checkpoint is missing, unreadable or fails its checksums; the message names the step."""


#: what asyncio logs when a failed Task, Future or gather() (``_GatheringFuture``) is
#: garbage-collected unawaited: ``<class name> exception was never retrieved``
_NEVER_RETRIEVED = re.compile(r"^\w+ exception was never retrieved")
#: marks of an orbax/tensorstore operation in such a record (its message, exception or traceback)
_ORBAX_MARKS = ("orbax", "tensorstore", "ocdbt", "RESOURCE_EXHAUSTED")


class _OrbaxThreadNoise(logging.Filter):
    """Drops what orbax's worker threads log about a save/restore that failed — the same
    error reaches the caller as the exception of ``manager.save``/``restore`` (a full
    disk printed several hundred lines of tracebacks besides the one-line message).

    asyncio reports the failed operations of orbax's event loops as ``Task exception
    was never retrieved``, ``Future exception was never retrieved`` (a tensorstore
    write) or ``_GatheringFuture exception was never retrieved`` (orbax's
    ``asyncio.gather`` of them), whenever the garbage collector gets to them (so which
    ones, and whether at all, depends on timing). Both are dropped when the record
    (message, exception or its traceback's files) shows an orbax/tensorstore operation.
    The filter sits on the loggers, so it holds whichever handlers print them (the
    default stderr one, ``basicConfig``'s, absl's or a test runner's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "_SignalingThread.run() raised an exception" in msg:  # absl, orbax's signalling threads
            return False
        if _NEVER_RETRIEVED.match(msg):  # asyncio, at GC
            return not any(mark in _record_text(record) for mark in _ORBAX_MARKS)
        return True


def _record_text(record: logging.LogRecord) -> str:
    """A record's message, its exception (type, module, text) and the files of its traceback."""
    parts = [record.getMessage()]
    exc = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts += [type(exc).__module__, type(exc).__name__, str(exc)]
        tb = exc.__traceback__
        while tb is not None:
            parts.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return " ".join(parts)


def _is_orbax_coroutine(obj: Any, exc: BaseException | None) -> bool:
    """Whether an unraisable report is about an orbax/tensorstore coroutine (``Exception ignored
    in: <coroutine object _read_array_index_and_device_put …>``): the same failure reaches the
    caller as one :class:`CheckpointError`; each array's coroutine would print its spec again."""
    code = getattr(obj, "cr_code", None)
    if code is not None and any(mark in code.co_filename for mark in ("orbax", "tensorstore")):
        return True
    tb = exc.__traceback__ if exc is not None else None
    while tb is not None:
        if "orbax" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def _quiet_orbax_threads() -> None:
    """Install the filter on the ``absl`` and ``asyncio`` loggers and skip the
    ``RuntimeError('Event loop is closed')`` that tensorstore callbacks report as
    unraisable once orbax closed a failed operation's loop (idempotent)."""
    if getattr(_quiet_orbax_threads, "done", False):
        return
    for name in ("absl", "asyncio"):
        logging.getLogger(name).addFilter(_OrbaxThreadNoise())
    previous = sys.unraisablehook

    def hook(unraisable, previous=previous):
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        if _is_orbax_coroutine(unraisable.object, exc):  # a failed read's coroutine, collected unawaited
            return
        previous(unraisable)

    sys.unraisablehook = hook
    _quiet_orbax_threads.done = True


def open_manager(run_dir: str | Path, keep: int = 2) -> ocp.CheckpointManager:
    """A synchronous checkpoint manager for ``RUN_DIR/checkpoints``.

    Leftover temporary folders of interrupted saves (killed, disk full) are removed
    when it opens; they never count as checkpoints.
    """
    _quiet_orbax_threads()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=True,
                                           cleanup_tmp_directories=True)
    return ocp.CheckpointManager(Path(run_dir).absolute() / CHECKPOINT_DIR, options=options,
                                 item_names=("state", "meta"))


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """The finished checkpoint steps of a run, ascending (``[]`` if none), without opening orbax.

    Temporary folders of interrupted saves (``<step>.orbax-checkpoint-tmp…``) are not steps.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def _leaf_digest(a: Any) -> str:
    a = np.ascontiguousarray(to_host(a))  # the whole array, also when other processes hold parts of it
    h = hashlib.sha256(f"{a.dtype.str}{list(a.shape)}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def state_checksums(state: Any) -> dict[str, str]:
    """``{leaf path: sha256 hex}`` of every array of a pytree (dtype, shape and bytes)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(state)
    return {jax.tree_util.keystr(path): _leaf_digest(leaf) for path, leaf in leaves}


def _canonical(path: str) -> tuple[str, ...]:
    """A leaf path without its container syntax: ``.groups[0].params.W_enc`` (a GridState)
    and ``['groups'][0]['params']['W_enc']`` (the same state restored as plain dicts) are
    both ``("groups", "0", "params", "W_enc")``."""
    return tuple(re.findall(r"[A-Za-z_]\w*|\d+", path))


def abstract_state_of(run_dir: str | Path, step: int) -> Any:
    """Shapes and dtypes of the state saved at ``step``, read from the checkpoint's own
    metadata, as ``jax.ShapeDtypeStruct`` on the first local device: a target for
    :func:`restore_checkpoint` that needs no training code (plain dicts and lists)."""
    path = Path(run_dir).absolute() / CHECKPOINT_DIR / str(step) / "state"
    try:
        tree = ocp.StandardCheckpointer().metadata(path).item_metadata.tree
    except Exception as err:  # noqa: BLE001 - unreadable metadata means an unusable step
        raise _unreadable(Path(run_dir), step, err) from err
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), tree,
                        is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))


def meta_checksum(meta: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``meta`` without its ``checksums`` entry."""
    body = {k: v for k, v in meta.items() if k != "checksums"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Save ``state`` (a pytree of arrays) and ``meta`` (JSON) at ``step``, with checksums of both."""
    # what JsonRestore will give back (tuples → lists, …); strict JSON: NaN / Inf become null, never `NaN`
    meta = json.loads(json.dumps(to_jsonable(meta), allow_nan=False))
    meta["checksums"] = {"state": state_checksums(state), "meta": meta_checksum(meta)}
    manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()


#: where a library's message turns into a dump of its internals (TensorStore specs, pybind signatures)
_INTERNALS = re.compile(r"(See full TensorStore details|<bound method|\[source locations=|TensorStore\(\{|"
                        r"pybind11)")
#: the array a TensorStore spec in a message reads (the one relative path among its ``'path'`` entries)
_ARRAY_PATH = re.compile(r"'path': '([A-Za-z_][^'/]*(?:\.[^'/]+)*)/?'")


def _first_line(err: BaseException) -> str:
    """``Type: text`` of ``err`` on one line, cut before any dump of library internals, at most 200 characters."""
    text = " ".join(str(err).split())
    cut = _INTERNALS.search(text)
    text = text[:cut.start()].rstrip(" .:;,(") if cut else text
    text = text if len(text) <= 200 else text[:199] + "…"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _unreadable(run_dir: Path, step: int, err: BaseException) -> CheckpointError:
    """The one line of a checkpoint step that orbax cannot read: the folder (and the array, when
    the library's message names it), a short reason, and what to do."""
    folder = Path(run_dir) / CHECKPOINT_DIR / str(step)
    texts = []
    e: BaseException | None = err
    while e is not None and len(texts) < 8:
        texts.append(str(e))
        e = e.__cause__ or e.__context__
    found = [m for t in texts for m in _ARRAY_PATH.findall(t)]
    why = f"its array {found[0]} does not read back" if found else _first_line(err)
    problem = (f"checkpoint step {step} of {run_dir} cannot be read ({why}): a file under {folder} is truncated or "
               "damaged, the checkpoint is corrupt")
    error = CheckpointError(
        f"{problem}; re-run the `jsae sweep` command that made the run (it moves the step to {CORRUPT_DIR}/ and "
        "resumes from the newest checkpoint that verifies), or load its model files: load_sweep(run, source='models').")
    error.problem = problem + "."  # what a sweep that already moves the step aside says
    return error


def _verify(run_dir: Path, step: int, state: Any, meta: Any) -> None:
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint step {step} of {run_dir}: its meta is not a JSON object; "
                              "the checkpoint is corrupt.")
    sums = meta.get("checksums")
    if sums is None:
        return  # written before checksums existed: restored unverified
    if sums.get("meta") != meta_checksum(meta):
        raise CheckpointError(f"checkpoint step {step} of {run_dir} fails its checksum (meta); the checkpoint "
                              "is corrupt.")
    now = {_canonical(k): v for k, v in state_checksums(state).items()}
    want = {_canonical(k): v for k, v in (sums.get("state") or {}).items()}
    bad = sorted(".".join(k) for k in set(want) | set(now) if want.get(k) != now.get(k))
    if bad:
        raise CheckpointError(f"checkpoint step {step} of {run_dir} fails its checksum ({len(bad)} of "
                              f"{len(want)} arrays differ, first {bad[0]}); the checkpoint is corrupt.")


def restore_checkpoint(run_dir: str | Path, abstract_state: Any = None, step: int | None = None, *,
                       manager: ocp.CheckpointManager | None = None) -> tuple[Any, dict, int]:
    """Restore and verify ``(state, meta, step)``; ``abstract_state`` fixes shapes and shardings.

    Without ``abstract_state`` the state comes back as plain dicts and lists on the first
    local device (:func:`abstract_state_of`). ``step``: default the newest. ``manager``: an open manager of ``run_dir`` to use
    (one is opened and closed otherwise). Raises :class:`CheckpointError` when there
    is no checkpoint, when orbax cannot read the step, or when its checksums differ.
    """
    run_dir = Path(run_dir)
    if manager is None:
        with open_manager(run_dir) as own:
            return restore_checkpoint(run_dir, abstract_state, step, manager=own)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"{run_dir}: no checkpoint found under {CHECKPOINT_DIR}/; train it first with "
                              "`jsae sweep CONFIG --out RUN`.")
    if int(step) not in manager.all_steps():
        raise CheckpointError(f"{run_dir}: no checkpoint at step {step}; steps present: "
                              f"{sorted(manager.all_steps())}.")
    if abstract_state is None:
        abstract_state = abstract_state_of(run_dir, int(step))
    try:
        restored = manager.restore(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except Exception as err:  # noqa: BLE001 - any failure to read a step means it is unusable
        raise _unreadable(run_dir, int(step), err) from err
    _verify(run_dir, int(step), restored["state"], restored["meta"])
    return restored["state"], restored["meta"], int(step)


def restore_newest_good(run_dir: str | Path, abstract_state: Any, manager: ocp.CheckpointManager,
                        ) -> tuple[Any, dict, int, list[tuple[int, CheckpointError]]]:
    """The newest checkpoint that restores and verifies: ``(state, meta, step, bad)``.

    ``bad``: ``(step, error)`` of the newer steps that failed, newest first. Raises
    :class:`CheckpointError` when no step verifies.
    """
    bad: list[tuple[int, CheckpointError]] = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state, meta, got = restore_checkpoint(run_dir, abstract_state, step, manager=manager)
        except CheckpointError as err:
            bad.append((step, err))
            continue
        return state, meta, got, bad
    steps = ", ".join(str(s) for s, _ in bad)
    raise CheckpointError(f"no checkpoint of {run_dir} verifies (steps {steps}: {bad[0][1] if bad else '-'}); "
                          f"delete {Path(run_dir) / CHECKPOINT_DIR} to train from scratch, or use a new --out.")


def set_aside(run_dir: str | Path, step: int) -> Path:
    """Move ``checkpoints/<step>`` to ``checkpoints.corrupt/<step>[-<time>]`` (kept for inspection)."""
    src = Path(run_dir) / CHECKPOINT_DIR / str(step)
    dest_root = Path(run_dir) / CORRUPT_DIR
    dest_root.mkdir(exist_ok=True)
    dest = dest_root / str(step)
    if dest.exists():
        dest = dest_root / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    shutil.move(str(src), str(dest))
    return dest
