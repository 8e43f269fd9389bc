"""Orbax checkpoints of a grid: the stacked state plus JSON metadata.

``RUN_DIR/checkpoints/<step>/`` holds ``state`` (the unpadded :class:`GridState`:
stacked parameters, Adam states and dead-latent counters, one entry per
latent-size group) and ``meta`` (JSON: grid, resolved config, normalisation,
loss history, package version). Saves are atomic (orbax writes to a temporary
folder and renames it), so a run killed mid-save resumes from the previous step.

Restoring builds an abstract target with shardings for the devices present now,
so a checkpoint written with the model axis over 8 devices loads on 1 CPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

__all__ = ["CHECKPOINT_DIR", "open_manager", "save_checkpoint", "restore_checkpoint"]

CHECKPOINT_DIR = "checkpoints"


def open_manager(run_dir: str | Path, keep: int = 2) -> ocp.CheckpointManager:
    """A synchronous checkpoint manager for ``RUN_DIR/checkpoints``."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=True)
    return ocp.CheckpointManager(Path(run_dir).absolute() / CHECKPOINT_DIR, options=options,
                                 item_names=("state", "meta"))


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Save ``state`` (a pytree of arrays) and ``meta`` (JSON) at ``step``."""
    manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()


def restore_checkpoint(run_dir: str | Path, abstract_state: Any, step: int | None = None, *,
                       manager: ocp.CheckpointManager | None = None) -> tuple[Any, dict, int]:
    """Restore ``(state, meta, step)``; ``abstract_state`` fixes shapes and shardings.

    ``manager``: an open manager of ``run_dir`` to use (one is opened and closed otherwise).
    """
    if manager is None:
        with open_manager(run_dir) as own:
            return restore_checkpoint(run_dir, abstract_state, step, manager=own)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint found under {CHECKPOINT_DIR}/.")
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"], int(step)
