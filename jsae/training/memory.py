"""How much memory a sweep needs, and whether the machine has it — checked before anything
is read or compiled.

:func:`estimate_memory` adds up, in bytes (float32 = 4 B; ``n`` models of a latent-size
group, dimension ``M``, latent size ``L``, batch ``B``, ``S`` = ``train.steps_per_call``):

* **parameters** ``P = n·4·(2·M·L + L + M)`` (``W_enc``, ``W_dec``, ``b_enc``, ``b_pre``);
* **Adam state** ``2·P`` (first and second moments);
* **gradients and updates** ``2·P``: what one optimisation step holds besides the state;
* **dead-latent counters** ``n·4·L`` (int32);
* **activations** ``n·B·L·4·c``: the encoder's pre-activations, the TopK codes and their
  gradients for every model of the batch (``c`` = :data:`ACTIVATION_COPIES` on the dense
  path, :data:`SPARSE_ACTIVATION_COPIES` on the sparse CPU path);
* **training rows**: in memory the normalised training rows on the device ``N_train·M·4``,
  the validation rows on the host and the chunks one read of the store decodes
  (:data:`~jsae.training.data.READ_SPAN_ROWS` rows) — the training rows are read from the
  store block by block into the device copy, never held on the host; rows given as an array
  (``train_sweep(data=…)``, ``from_array``) add their host copy ``N·M·4``; streamed
  (``data.stream=true``) only the rows that fit the normaliser, the validation rows, ``S``
  batches and the store's reads.

Checkpoints copy the state to the host while it is saved: :data:`CHECKPOINT_COPIES` of the
state is added for that, and :data:`RUNTIME_BYTES` for what compiling the step, checkpointing
and plotting take whatever the grid (about 200 MiB on a CPU). The sum is compared with what
:func:`available_memory` finds (on a CPU, the host's available RAM — ``MemAvailable`` of
``/proc/meminfo``, within a cgroup's limit; on an accelerator, each device's
``bytes_limit − bytes_in_use``, and the host's RAM for the host rows); :func:`check_memory`
refuses a sweep that does not fit with one line naming the estimate, what is available and
the fix (a smaller grid, ``train.batch_size``, more devices with ``train.shard_models``,
``data.stream=true``). On small grids the estimate is within a factor of two of the peak
resident memory a sweep adds (tests/test_refuse_before_spending.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..config import SweepConfig
from ..errors import JsaeError
from .data import READ_SPAN_ROWS
from .grid import GroupSpec, make_groups, prefers_sparse

__all__ = ["MemoryEstimate", "Available", "NotEnoughMemoryError", "estimate_memory", "available_memory",
           "host_available", "check_memory", "memory_line", "format_bytes", "ACTIVATION_COPIES",
           "SPARSE_ACTIVATION_COPIES", "CHECKPOINT_COPIES", "RUNTIME_BYTES"]

#: float32 / int32 bytes
_F32 = 4
#: ``[B, L]`` float32 arrays per model alive in a dense TopK step (pre-activations, codes, their
#: gradients, the AuxK masked copy and its top-k)
ACTIVATION_COPIES = 6
#: the same on the sparse CPU path (pre-activations and the AuxK masked copy; codes are ``[B, k]``)
SPARSE_ACTIVATION_COPIES = 3
#: host copies of the training state while a checkpoint and the model files are written
CHECKPOINT_COPIES = 1
#: memory a sweep takes whatever its grid: the compiler, orbax's and matplotlib's working memory
RUNTIME_BYTES = 200 * 2**20


class NotEnoughMemoryError(JsaeError, MemoryError):
    """The sweep's estimated memory exceeds what the machine has; refused before anything is compiled."""


def format_bytes(n: float) -> str:
    """``1536 → '1.5 KiB'``, ``3.2e9 → '3.0 GiB'``, ``1.5e13 → '14 TiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" or abs(n) >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.0f} PiB"  # not reached


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a sweep needs, by part: ``device`` (per device: the grid, the device rows) and
    ``host`` (the host's copies of the rows), for one process. On a CPU both are the same RAM,
    and this process's ``local_devices`` devices each hold their ``device`` parts in it;
    ``processes_on_host`` processes of one sweep (``jsae launch -n N`` on one machine) each
    need as much of the same RAM."""

    device: dict[str, int]
    host: dict[str, int]
    models: int
    platform: str = "cpu"
    devices: int = 1
    local_devices: int = 1
    processes_on_host: int = 1

    @property
    def device_total(self) -> int:
        return sum(self.device.values())

    @property
    def host_total(self) -> int:
        return sum(self.host.values())

    @property
    def _device_copies(self) -> int:
        """How many devices' parts one process keeps in the host's RAM: its devices on a CPU, else one (shown)."""
        return self.local_devices if self.platform == "cpu" else 1

    @property
    def total(self) -> int:
        """All of one process's parts: on a CPU, the host RAM it needs (``local_devices ×
        device_total + host_total``); on an accelerator, one device's parts and the host's."""
        return self._device_copies * self.device_total + self.host_total

    @property
    def host_need(self) -> int:
        """The host RAM all of this machine's processes of the sweep need together: on a CPU
        ``processes_on_host × total``, on an accelerator ``processes_on_host × host_total``."""
        own = self.total if self.platform == "cpu" else self.host_total
        return self.processes_on_host * own

    def parts(self) -> dict[str, int]:
        """Every part of one process, device and host together (on a CPU, its devices' parts
        times ``local_devices``), largest first; they add up to :attr:`total`."""
        merged: dict[str, int] = {}
        for d, times in ((self.device, self._device_copies), (self.host, 1)):
            for k, v in d.items():
                merged[k] = merged.get(k, 0) + times * v
        return dict(sorted(merged.items(), key=lambda kv: -kv[1]))

    def summary(self, share: float = 0.05) -> str:
        """``about 1.2 GiB for 8 models (parameters 300 MiB, …)``: the parts of at least ``share``
        of the total; with several processes on this machine, what they need together."""
        parts = self.parts()
        big = [f"{k} {format_bytes(v)}" for k, v in parts.items() if v and v >= share * self.total]
        rest = sum(1 for v in parts.values() if v and v < share * self.total)
        shown = ", ".join(big) + (f", {rest} smaller part(s)" if rest else "")
        text = f"about {format_bytes(self.total)} for {self.models} model(s) ({shown})"
        if self.processes_on_host > 1:
            text += (f" per process; {self.processes_on_host} processes on this machine: "
                     f"{format_bytes(self.host_need)} of host RAM together")
        return text


@dataclass(frozen=True)
class Available:
    """Free memory: ``device`` bytes per device (None on a CPU: the device is the host),
    ``host`` bytes of RAM (None when unknown), and where they were read."""

    host: int | None
    device: int | None = None
    where: str = "host RAM"


def _group_parts(g: GroupSpec, n_pad: int, dim: int, batch: int, sparse: bool) -> dict[str, int]:
    L, M = g.latent_size, dim
    params = n_pad * _F32 * (2 * M * L + L + M)
    copies = SPARSE_ACTIVATION_COPIES if sparse else ACTIVATION_COPIES
    return {"parameters": params, "Adam state": 2 * params, "gradients and updates": 2 * params,
            "checkpoint copies": CHECKPOINT_COPIES * (3 * params + n_pad * _F32 * L),
            "dead-latent counters": n_pad * _F32 * L, "activations": n_pad * batch * L * _F32 * copies}


def estimate_memory(cfg: SweepConfig, n_train: int, n_val: int, dim: int, *, devices: int = 1,
                    platform: str = "cpu", groups: Sequence[GroupSpec] | None = None,
                    sparse: Sequence[bool] | None = None, from_array: bool = False,
                    local_devices: int | None = None, processes_on_host: int = 1,
                    sharded: bool | None = None) -> MemoryEstimate:
    """The :class:`MemoryEstimate` of ``cfg``'s grid on ``n_train`` + ``n_val`` rows of dimension ``dim``.

    ``devices``: the devices the model axis is sharded over (``train.shard_models``); each
    holds ``ceil(n / devices)`` models of a group and a copy of the device rows.
    ``groups`` (default: ``make_groups(cfg.grid)``) and ``sparse`` (per group, whether it trains
    on the sparse CPU path; default: :func:`~jsae.training.grid.prefers_sparse` with
    ``train.topk_path``) are those of the :class:`~jsae.training.grid.GridTrainer` that will train.
    ``from_array``: the rows come as a host array (``train_sweep(data=…)``), not from a store.
    ``sharded``: whether the model axis is sharded over the ``devices`` (default
    ``train.shard_models``; several processes always shard). ``local_devices``: how many of
    them are this process's (default: all of them when sharded, else one);
    ``processes_on_host``: the sweep's processes on this machine, this one included.
    """
    groups = tuple(groups if groups is not None else make_groups(cfg.grid))
    sparse = tuple(sparse) if sparse is not None else tuple(prefers_sparse(g, cfg.train.topk_path) for g in groups)
    shard = max(1, devices if (cfg.train.shard_models if sharded is None else sharded) else 1)
    local = shard if local_devices is None else max(1, min(shard, local_devices))
    device: dict[str, int] = {}
    for g, sp in zip(groups, sparse):
        n_pad = -(-g.size // shard)  # models per device
        for k, v in _group_parts(g, n_pad, dim, cfg.train.batch_size, sp).items():
            device[k] = device.get(k, 0) + v
    row = dim * _F32
    host: dict[str, int] = {"compiler and libraries": RUNTIME_BYTES}
    batches = 2 * cfg.train.steps_per_call * cfg.train.batch_size * row  # the host's and the device's
    if from_array:
        host["training rows"] = (n_train + n_val) * row  # the array's training and validation copies
        device["training rows on the device"] = n_train * row
    elif cfg.data.stream:
        host["rows fitting the normaliser"] = min(cfg.data.fit_rows, n_train) * row
        host["validation rows"] = n_val * row
        host["streamed batches"] = batches
        host["store reads"] = min(READ_SPAN_ROWS, n_train + n_val) * row
    else:  # the training rows go from the store to the device block by block
        host["validation rows"] = n_val * row
        host["store reads"] = min(READ_SPAN_ROWS, n_train + n_val) * row
        device["training rows on the device"] = n_train * row
    if platform != "cpu":  # the checkpoint's copies of the state are host memory
        host["checkpoint copies"] = device.pop("checkpoint copies", 0) * shard
    return MemoryEstimate(device=device, host=host, models=sum(g.size for g in groups), platform=platform,
                          devices=shard, local_devices=local, processes_on_host=max(1, int(processes_on_host)))


# ------------------------------------------------------------------------------------ availability


def _meminfo(path: str = "/proc/meminfo") -> int | None:
    """``MemAvailable`` in bytes (Linux), else None."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat(path: Path, key: str) -> int:
    """The value of ``key`` in a cgroup ``memory.stat`` file (0 when absent)."""
    try:
        for line in path.read_text(encoding="ascii").splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _cgroup_room(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """What this process's cgroup may still allocate, or None without a limit: its limit minus its
    working set (usage without the inactive file cache, which the kernel reclaims first)."""
    for folder, limit_name, usage_name, inactive in (
            (root, "memory.max", "memory.current", "inactive_file"),  # cgroup v2
            (root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")):  # v1
        limit, usage = _read_int(folder / limit_name), _read_int(folder / usage_name)
        if limit is not None and usage is not None and limit < 2**60:  # v1 writes "no limit" as a huge number
            return max(0, limit - max(0, usage - _stat(folder / "memory.stat", inactive)))
    return None


def host_available() -> int | None:
    """Bytes of RAM this process may still use: ``MemAvailable`` within the cgroup's limit (psutil's
    ``available`` where ``/proc/meminfo`` is missing); None when neither can be read."""
    free = _meminfo()
    if free is None:
        try:
            import psutil  # optional: only where /proc/meminfo is missing
        except ImportError:
            return None
        free = int(psutil.virtual_memory().available)
    room = _cgroup_room()
    return free if room is None else min(free, room)


def available_memory(devices: Sequence[Any] | None = None) -> Available:
    """Free memory for a sweep on ``devices`` (default ``jax.devices()``): see :class:`Available`."""
    if devices is None:
        import jax

        devices = jax.devices()
    host = host_available()
    dev = devices[0]
    if dev.platform == "cpu":
        return Available(host=host, device=None, where="host RAM")
    free = []
    for d in devices:
        try:
            stats = d.memory_stats() or {}
        except Exception:  # noqa: BLE001 - a backend without memory statistics
            stats = {}
        if "bytes_limit" in stats:
            free.append(int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)))
    where = f"{dev.platform.upper()} memory of {getattr(dev, 'device_kind', dev.platform)}"
    return Available(host=host, device=min(free) if free else None, where=where)


def _fix(cfg: SweepConfig, est: MemoryEstimate, n_devices: int) -> str:
    """The ways out, the likeliest first: the grid, the batch, more devices, streaming the rows."""
    parts = est.parts()
    fixes = ["a smaller grid (fewer or smaller grid.latent_size, fewer grid.k)"]
    if parts.get("activations", 0) >= 0.2 * est.total:
        fixes.append(f"a smaller train.batch_size (now {cfg.train.batch_size}: activations grow with it)")
    if n_devices > 1 and est.devices == 1:
        fixes.append(f"train.shard_models=true (spreads the models over the {n_devices} devices here)")
    elif n_devices == 1:
        fixes.append("a machine with more devices (train.shard_models=true spreads the models over them)")
    rows = parts.get("training rows", 0) + parts.get("training rows on the device", 0)
    if not cfg.data.stream and rows >= 0.1 * est.total:
        fixes.append(f"data.stream=true (reads the batches from the store instead of holding its rows, "
                     f"{format_bytes(rows)})")
    if est.processes_on_host > 1:
        fixes.append(f"fewer processes on this machine (now {est.processes_on_host}; each holds its own copy of "
                     "the rows and the runtime)")
    return ", or ".join([", ".join(fixes[:-1]), fixes[-1]] if len(fixes) > 1 else fixes)


def check_memory(cfg: SweepConfig, est: MemoryEstimate, avail: Available, n_devices: int = 1) -> None:
    """Refuse (:class:`NotEnoughMemoryError`, one line) a sweep whose estimate exceeds what is
    available; the host's RAM is checked against what all of its processes of the sweep need."""
    problems = []
    together = (f" together ({est.processes_on_host} processes of the sweep on this machine, "
                f"{format_bytes(est.host_need // est.processes_on_host)} each)") if est.processes_on_host > 1 else ""
    if avail.device is None:  # a CPU: everything lives in the host's RAM
        if avail.host is not None and est.host_need > avail.host:
            problems.append((est.host_need, avail.host, avail.where + together))
    else:
        if est.device_total > avail.device:
            problems.append((est.device_total, avail.device, avail.where + " (per device)"))
        if avail.host is not None and est.host_need > avail.host:
            problems.append((est.host_need, avail.host, "host RAM" + together))
    if not problems:
        return
    need, have, where = problems[0]
    biggest = ", ".join(f"{k} {format_bytes(v)}" for k, v in list(est.parts().items())[:2])
    raise NotEnoughMemoryError(
        f"the sweep needs about {format_bytes(need)} of {where} for {est.models} model(s) (mostly {biggest}), but "
        f"only {format_bytes(have)} is available; nothing was read or compiled. Fix: {_fix(cfg, est, n_devices)}.")


def memory_line(est: MemoryEstimate, avail: Available) -> str:
    """The line a sweep prints when it starts: the estimate and what is available."""
    if avail.device is not None:
        have = f"{format_bytes(avail.device)} {avail.where} per device"
        if avail.host is not None:
            have += f", {format_bytes(avail.host)} host RAM"
    else:
        have = f"{format_bytes(avail.host)} {avail.where}" if avail.host is not None else f"unknown {avail.where}"
    return f"memory: {est.summary()}; available: {have}"

