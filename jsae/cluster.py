"""One sweep over several processes: JAX's multi-controller runtime (``jax.distributed``).

Every process runs the same program on the same inputs (SPMD): it reads the same rows and
batches, and the grid's model axis is sharded over the devices of *all* processes, so each
process trains its share of the models. Arrays cross between the host and that global mesh
only through :func:`to_global` (the same host value on every process becomes one global
array) and :func:`to_host` (a global array gathered back to every process), so the
single-process path is the same code with one process.

:func:`initialize` starts the runtime when a sweep is one of several processes:

* launched by ``jsae launch -n N -- jsae sweep …`` (:mod:`jsae.launch`), which sets
  :data:`ENV_COORDINATOR`, :data:`ENV_PROCESSES` and :data:`ENV_PROCESS_ID`;
* inside a SLURM job step of several tasks (``srun``), found by JAX's cluster detection;
* or asked for with ``jsae sweep --distributed`` (any cluster JAX detects; an error when none).

On a CPU the collectives run over gloo (``jax_cpu_collectives_implementation``). Process 0
is the *primary*: it alone takes the run's lock and writes the run's files; every process
writes the model files of the models its devices hold.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np

from .errors import EXIT_PEER_LOST, JsaeError, one_line

__all__ = ["ENV_COORDINATOR", "ENV_PROCESSES", "ENV_PROCESS_ID", "ClusterError", "PeerLostError", "peer_lost",
           "lost_peer_error",
           "launched_by", "slurm_tasks", "initialize", "is_multiprocess", "process_index",
           "is_primary", "to_global", "to_host", "barrier", "any_process", "text_from_primary", "host_id",
           "processes_on_this_host"]

#: set by ``jsae launch``: the coordinator's ``host:port``, the number of processes, this one's id
ENV_COORDINATOR = "JSAE_COORDINATOR_ADDRESS"
ENV_PROCESSES = "JSAE_NUM_PROCESSES"
ENV_PROCESS_ID = "JSAE_PROCESS_ID"

#: seconds a process waits for the others to join, and for a silent peer before it is declared dead
INITIALIZATION_TIMEOUT = 300
HEARTBEAT_TIMEOUT = 60


class PeerLostError(JsaeError):
    """This process stopped because another process of the sweep ended (its collectives and
    barriers cannot complete); exit status :data:`jsae.errors.EXIT_PEER_LOST`, so that the
    launcher names the process that ended first, not its peers."""

    exit_status = EXIT_PEER_LOST


def peer_lost(err: BaseException) -> bool:
    """Whether ``err`` is JAX's report that the distributed job lost a process (its coordination
    service failed a barrier, a heartbeat or a collective), with several processes running."""
    return (is_multiprocess() and isinstance(err, jax.errors.JaxRuntimeError)
            and any(word in str(err).lower() for word in ("coordination", "gloo")))


def lost_peer_error(err: BaseException) -> PeerLostError:
    """:class:`PeerLostError` naming this process and JAX's first line."""
    return PeerLostError(f"process {process_index()} stopped: another process of the sweep ended "
                         f"({one_line(err)[:200]}); run the same command to resume from the newest checkpoint")


class ClusterError(JsaeError):
    """Several processes were asked for but cannot be started, or do not agree."""


def launched_by(environ: Mapping[str, str] | None = None) -> tuple[str, int, int] | None:
    """``(coordinator, processes, process id)`` set by ``jsae launch``, or ``None``."""
    env = os.environ if environ is None else environ
    if ENV_COORDINATOR not in env:
        return None
    try:
        n, pid = int(env[ENV_PROCESSES]), int(env[ENV_PROCESS_ID])
    except (KeyError, ValueError):
        raise ClusterError(f"{ENV_COORDINATOR} is set but {ENV_PROCESSES}={env.get(ENV_PROCESSES)!r} and "
                           f"{ENV_PROCESS_ID}={env.get(ENV_PROCESS_ID)!r} are not both integers; start the "
                           "processes with `jsae launch -n N -- jsae sweep …`.") from None
    if not (n >= 1 and 0 <= pid < n):
        raise ClusterError(f"{ENV_PROCESS_ID}={pid} is not a process of {ENV_PROCESSES}={n}; start the processes "
                           "with `jsae launch -n N -- jsae sweep …`.")
    return env[ENV_COORDINATOR], n, pid


def slurm_tasks(environ: Mapping[str, str] | None = None) -> int:
    """The tasks of the SLURM job step this process is one of (``srun``), 1 outside one."""
    env = os.environ if environ is None else environ
    if "SLURM_STEP_ID" not in env:
        return 1
    try:
        return int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1)
    except ValueError:
        return 1


def _use_gloo_on_cpu() -> None:
    """CPU collectives between processes go over gloo (JAX's CPU default has none)."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if not platforms or "cpu" in platforms.split(","):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def initialize(distributed: bool | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Start the multi-process runtime when this process is one of several; ``True`` when it is.

    ``distributed``: ``True`` (``--distributed``) — start it with JAX's cluster detection when
    ``jsae launch`` did not set the variables, and refuse when no cluster is found; ``None`` —
    start it only when launched by ``jsae launch`` or in a SLURM job step of several tasks;
    ``False`` — never. Call it before anything touches a JAX device.
    """
    if distributed is False:
        return False
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    launched = launched_by(environ)
    if launched is None and not distributed and slurm_tasks(environ) <= 1:
        return False
    _use_gloo_on_cpu()
    try:
        if launched is not None:
            coordinator, n, pid = launched
            jax.distributed.initialize(coordinator_address=coordinator, num_processes=n, process_id=pid,
                                       initialization_timeout=INITIALIZATION_TIMEOUT,
                                       heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT)
        else:
            jax.distributed.initialize(initialization_timeout=INITIALIZATION_TIMEOUT,
                                       heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT)
    except (ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ClusterError(f"cannot start the processes of a distributed sweep ({first}); launch them with "
                           "`jsae launch -n N -- jsae sweep …`, or run `jsae sweep` under `srun` in a SLURM job "
                           "of several tasks.") from None
    return jax.process_count() > 1


def is_multiprocess() -> bool:
    """Whether this process is one of several (after :func:`initialize`)."""
    return jax.distributed.is_initialized() and jax.process_count() > 1


def process_index() -> int:
    return jax.process_index() if jax.distributed.is_initialized() else 0


def is_primary() -> bool:
    """Process 0: the one that locks and writes the run's files."""
    return process_index() == 0


def to_global(x: Any, sharding: jax.sharding.Sharding | None) -> jax.Array:
    """The host value ``x`` (the same on every process) as one array laid out by ``sharding``
    over every process's devices. ``sharding=None`` (one process, no mesh): ``jnp.asarray(x)``
    on the default device, left uncommitted so a jitted call may place it."""
    if sharding is None:
        return jax.numpy.asarray(x)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(tree: Any) -> Any:
    """Every array of ``tree`` as a numpy array on this host, the whole of it (gathered from
    the other processes when its shards live there; the same value on every process)."""
    def one(a: Any) -> Any:
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(jax.device_get(a))
    # whatever computes the tree finishes first: one cross-process program in flight at a time
    jax.block_until_ready(tree)
    return jax.tree.map(one, tree)


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (nothing with one process)."""
    if is_multiprocess():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (every process gets the same answer): what lets
    every process stop at the same step when a signal reached only some of them."""
    if not is_multiprocess():
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray([bool(flag)]))))


def host_id() -> str:
    """What names this machine among the processes of a sweep: the kernel's boot id (one per
    running machine, shared by the containers on it), else the host name."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        if boot:
            return boot
    except OSError:
        pass
    import socket

    return socket.gethostname()


def processes_on_this_host() -> int:
    """How many processes of the sweep run on this machine, this one included (1 with one
    process): they share its RAM, so a memory check counts them all. Every process must call it."""
    if not is_multiprocess():
        return 1
    from jax.experimental import multihost_utils
    import hashlib

    mine = np.frombuffer(hashlib.sha256(host_id().encode()).digest()[:16], np.uint8)
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, mine.size)  # one row per process
    return int(np.sum(np.all(every == mine, axis=1)))


def text_from_primary(text: str, size: int = 200) -> str:
    """Process 0's ``text`` on every process (at most ``size`` UTF-8 bytes): a value one process
    draws (a run id) that all must share."""
    if not is_multiprocess():
        return text
    from jax.experimental import multihost_utils

    raw = text.encode()
    if len(raw) > size:
        raise ValueError(f"text_from_primary: {len(raw)} bytes is more than {size}")
    buf = np.zeros(size + 1, np.uint8)
    buf[0], buf[1:len(raw) + 1] = len(raw), np.frombuffer(raw, np.uint8)
    got = np.asarray(multihost_utils.broadcast_one_to_all(buf))
    return bytes(got[1:int(got[0]) + 1].astype(np.uint8)).decode()
