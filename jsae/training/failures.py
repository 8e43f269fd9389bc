"""What a sweep does when it fails: a full disk, a diverged loss, a failed start.

* a full disk (ENOSPC/EDQUOT, also inside orbax/tensorstore's wrappers) becomes one
  :class:`DiskFullError` line naming what was being written and the last good checkpoint
  (:func:`writing` marks what is being written); a read-only file system or a denied
  permission (EROFS/EACCES/EPERM) one :class:`~jsae.errors.StorageError` line, likewise;
* a loss, or any training or validation metric, that stops being finite is a
  :class:`TrainingDivergedError` naming the model, the metric and the step;
* a run that fails before its first checkpoint leaves no ``config.yaml``/``sweep.json``
  behind (:func:`cleanup_failed_start`), so the corrected command starts it afresh;
* temporary folders of interrupted orbax saves are removed (:func:`remove_partial_saves`).
"""
from __future__ import annotations

import contextlib
import errno
import shutil
import time
from pathlib import Path

from ..errors import JsaeError, StorageError, storage_error, storage_problem
from ..runs.checkpoint import checkpoint_steps
from ..runs.layout import CHECKPOINT_DIR, CONFIG_FILE, LOCK_NAME, SWEEP_FILE

__all__ = ["DiskFullError", "TrainingDivergedError", "is_disk_full", "writing", "disk_full_error",
           "not_writable_error", "diverged", "cleanup_failed_start", "remove_partial_saves"]


class DiskFullError(JsaeError):
    """The disk (or quota) filled up while the sweep was writing; names the last good checkpoint."""


class TrainingDivergedError(JsaeError, FloatingPointError):
    """A model's training loss became NaN/Inf."""


def is_disk_full(err: BaseException | None) -> bool:
    """Whether ``err`` (or an exception it was raised from) is ENOSPC/EDQUOT, also as
    orbax/tensorstore word it (``ValueError('RESOURCE_EXHAUSTED: … [os_error_code='28']')``)."""
    found = storage_problem(err)
    return found is not None and found[0] in (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(run_dir: Path, doing: str, err: BaseException) -> DiskFullError:
    quota = "quota" in str(err).lower() or any(
        isinstance(e, OSError) and e.errno == errno.EDQUOT for e in (err, err.__cause__, err.__context__))
    what = "disk quota exceeded" if quota else "no space left on device"
    steps = checkpoint_steps(run_dir)
    if steps:
        left = (f"the last good checkpoint is step {steps[-1]}; free space (or copy {run_dir} to a larger disk) "
                "and re-run the same command to resume from it")
    else:
        left = "no checkpoint was saved yet; free space and re-run the same command to start the run"
    return DiskFullError(f"{what} while {doing} in {run_dir}; {left}.")


def not_writable_error(run_dir: Path, doing: str, err: BaseException) -> StorageError | None:
    """One :class:`~jsae.errors.StorageError` line for a read-only file system or a denied
    permission (any storage problem but a full disk) met while ``doing``; None for other errors."""
    steps = checkpoint_steps(run_dir)
    kept = (f"the last good checkpoint is step {steps[-1]}" if steps
            else "no checkpoint was saved yet")
    return storage_error(err, f"{run_dir} ({doing})", kept=kept,
                         finish=f"give a --out on a writable file system (or make {run_dir} writable for you) and "
                                "run the command again")


@contextlib.contextmanager
def writing(run_dir: Path, what: str):
    """Run the block; a full disk inside it becomes :class:`DiskFullError` ``… while <what> …``, a
    read-only file system or a denied permission a one-line :class:`~jsae.errors.StorageError`."""
    try:
        yield
    except Exception as err:
        if isinstance(err, JsaeError):
            raise
        if is_disk_full(err):
            raise disk_full_error(run_dir, what, err) from err
        converted = not_writable_error(run_dir, what, err)
        if converted is not None:
            raise converted from err
        raise


def diverged(run_dir: Path, model: str, step: int, metric: str = "loss", value: float | None = None,
             ) -> TrainingDivergedError:
    """The one line of a ``metric`` of ``model`` that is NaN / ±Inf at ``step`` (training loss or a
    validation metric), with what the run keeps and how to go on."""
    saved = checkpoint_steps(run_dir)
    if saved:
        fix = (f"lower optim.lr (or rescale the embeddings if their values are huge); {run_dir} keeps this "
               f"config's checkpoints up to step {saved[-1]}, so train the corrected config into a new --out "
               f"(or delete {run_dir})")
    else:
        fix = f"lower optim.lr and re-run: nothing was saved, so {run_dir} starts afresh with the corrected config"
    shown = "" if value is None else f" ({value})"
    return TrainingDivergedError(f"model {model}: {metric} is not finite{shown} at step {step}; {fix}.")


def remove_partial_saves(run_dir: Path, tries: int = 1) -> None:
    """Delete orbax's temporary folders of interrupted saves (killed, disk full): they are
    never checkpoints, and they hold the space a failed save took. Only called with the
    run's lock held. ``tries``: after a failed save, orbax's writer threads may still be
    finishing for a moment; look again a few times."""
    for attempt in range(tries):
        leftovers = list((run_dir / CHECKPOINT_DIR).glob("*.orbax-checkpoint-tmp*"))
        for p in leftovers:
            shutil.rmtree(p, ignore_errors=True)
        if not leftovers and attempt:
            return
        if attempt + 1 < tries:
            time.sleep(0.2)


def cleanup_failed_start(run_dir: Path, created: bool) -> None:
    """After a failure before the first checkpoint: remove what this sweep wrote, so that
    the run directory accepts a corrected command (with any config) as a new run."""
    if checkpoint_steps(run_dir):
        return
    for name in (CONFIG_FILE, SWEEP_FILE):
        with contextlib.suppress(OSError):
            (run_dir / name).unlink()
    ck = run_dir / CHECKPOINT_DIR
    if ck.is_dir() and not any(p.name.isdigit() for p in ck.iterdir()):
        shutil.rmtree(ck, ignore_errors=True)  # empty, or leftovers of an interrupted first save
    if {p.name for p in run_dir.iterdir()} <= {LOCK_NAME}:  # leave the folder as it was: absent or empty
        with contextlib.suppress(OSError):
            (run_dir / LOCK_NAME).unlink()
            if created:
                run_dir.rmdir()
