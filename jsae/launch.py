"""``jsae launch -n N -- jsae sweep …``: start the N processes of a distributed sweep on this machine.

For testing and for small clusters without a scheduler. Each process gets the coordinator's
address, the process count and its id (:data:`jsae.cluster.ENV_COORDINATOR`, …), and on a
CPU ``--devices-per-process D`` host devices (``--xla_force_host_platform_device_count``);
the command's :func:`jsae.cluster.initialize` reads them. Under SLURM, ``srun`` starts the
processes instead and JAX's cluster detection finds them (README, "Several processes").

The launcher

* shows process 0's output (it alone prints progress and results) and keeps the last lines
  of the others', shown when one of them fails;
* forwards SIGINT / SIGTERM to every process once (they run in their own sessions, so a
  terminal's Ctrl-C reaches them only through it): all stop at the same step, save it and
  exit 130 / 143; a second signal is forwarded too (stop at once);
* when a process dies (killed, out of memory, an error on one host), the others cannot go on
  — their collectives would wait for it — so it kills them and prints one line naming the
  process, its exit status and the fix. The run keeps its newest checkpoint, and the same
  command resumes from it (with any number of processes).

Exit status: 0 when every process succeeded, else the first failing process's status
(``128 + signal`` for a process killed by a signal).
"""
from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Sequence, TextIO

from .cluster import ENV_COORDINATOR, ENV_PROCESS_ID, ENV_PROCESSES
from .errors import EXIT_PEER_LOST, BadValueError

__all__ = ["launch", "process_command", "free_port", "TAIL_LINES"]

#: lines of a non-primary process's output kept to show when it fails
TAIL_LINES = 20
#: seconds the other processes get to end by themselves once one has failed
GRACE_SECONDS = 3.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for the coordinator)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_command(command: Sequence[str]) -> list[str]:
    """The command each process runs: ``jsae …`` runs as ``python -m jsae.sweeps …`` with this
    interpreter (the same installation as the launcher, whatever ``PATH`` holds)."""
    command = list(command)
    if not command:
        raise BadValueError("no command after `--`: give the command every process runs, e.g. `jsae launch -n 2 -- "
                            "jsae sweep default --out runs/x`.")
    if os.path.basename(command[0]) == "jsae":
        return [sys.executable, "-m", "jsae.sweeps", *command[1:]]
    return command


def _env(base: dict[str, str], coordinator: str, n: int, pid: int, devices: int | None) -> dict[str, str]:
    env = dict(base)
    env.update({ENV_COORDINATOR: coordinator, ENV_PROCESSES: str(n), ENV_PROCESS_ID: str(pid)})
    if devices:
        flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    return env


def _status(code: int) -> int:
    """A Popen return code as a shell exit status (killed by signal S: 128 + S)."""
    return 128 - code if code < 0 else code


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _cause(codes: Sequence[int | None]) -> int:
    """The process whose failure stopped the job, of those that ended (``None``: running or
    stopped by the launcher) with a failure: one killed by a signal first, then one that exited
    with an error, last one that stopped only because a peer ended
    (:data:`jsae.errors.EXIT_PEER_LOST`); the lowest id among equals."""
    ended = [i for i, c in enumerate(codes) if c not in (None, 0)]
    return min(ended, key=lambda i: (codes[i] >= 0, codes[i] == EXIT_PEER_LOST, i))


def _say_failed(err: TextIO, i: int, n: int, code: int, tail, stopped: list[int]) -> None:
    last = next((line.strip() for line in reversed(tail) if line.strip()), "")
    said = f" (its last line: {last})" if last else ""
    others = (f"; stopped process{'es' if len(stopped) > 1 else ''} {', '.join(map(str, stopped))}, which would wait "
              "for it" if stopped else "")
    print(f"jsae launch: process {i} of {n} {_describe(code)}{said}{others}; the run keeps its newest checkpoint: "
          "run the same command to resume from it", file=err, flush=True)


def launch(n: int, command: Sequence[str], *, devices_per_process: int | None = None, port: int | None = None,
           poll_seconds: float = 0.1, err: TextIO | None = None) -> int:
    """Run ``command`` as ``n`` processes of one distributed job; returns the exit status."""
    err = sys.stderr if err is None else err
    if n < 1:
        raise BadValueError(f"jsae launch -n {n}: give at least one process.")
    if devices_per_process is not None and devices_per_process < 1:
        raise BadValueError(f"--devices-per-process {devices_per_process}: give at least 1.")
    cmd = process_command(command)
    coordinator = f"127.0.0.1:{port or free_port()}"
    tails: list[collections.deque] = [collections.deque(maxlen=TAIL_LINES) for _ in range(n)]
    procs: list[subprocess.Popen] = []
    readers: list[threading.Thread] = []
    forwarded: list[int] = []

    def forward(signum: int, frame) -> None:
        forwarded.append(signum)
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signum)
                except ProcessLookupError:
                    pass

    def keep(stream, tail) -> None:
        for line in stream:
            tail.append(line.rstrip("\n"))

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, forward)
    try:
        for pid in range(n):
            env = _env(dict(os.environ), coordinator, n, pid, devices_per_process)
            quiet = {} if pid == 0 else dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.PIPE, text=True, errors="replace")
            try:
                p = subprocess.Popen(cmd, env=env, start_new_session=True, **quiet)
            except OSError as e:  # no such program, not executable: before any process started
                raise BadValueError(f"cannot run {cmd[0]!r} ({e.strerror or e}); give a command on PATH or a path "
                                    "to a program after `--`.") from None
            if pid:
                t = threading.Thread(target=keep, args=(p.stderr, tails[pid]), daemon=True)
                t.start()
                readers.append(t)
            procs.append(p)
        while True:
            codes = [p.poll() for p in procs]
            if any(c not in (None, 0) for c in codes) and not forwarded:
                failed = _cause(codes)
                if codes[failed] > 0:
                    # it exited on its own: the others either fail alike (the same config error: each says
                    # it) or wait for it in a collective forever; give them a moment, then stop them
                    deadline = time.monotonic() + GRACE_SECONDS
                    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
                        time.sleep(poll_seconds)
                stopped = [i for i, p in enumerate(procs) if p.poll() is None]
                for i in stopped:
                    procs[i].kill()
                codes = [p.wait() for p in procs]
                # a process that ended in the grace (process 0 refusing after a peer saw it go) may be the cause
                failed = _cause([None if i in stopped else c for i, c in enumerate(codes)])
                for t in readers:
                    t.join(timeout=5)
                if failed or codes[0] < 0:  # process 0 says itself why it stopped (one line)
                    _say_failed(err, failed, n, codes[failed], tails[failed], stopped)
                return _status(codes[failed])
            if all(c is not None for c in codes):
                break
            time.sleep(poll_seconds)
        for t in readers:
            t.join(timeout=5)
        if all(c == 0 for c in codes):
            return 0
        if codes[0] == 0:  # process 0 finished, another did not: say which
            i = next(i for i, c in enumerate(codes) if c != 0)
            _say_failed(err, i, n, codes[i], tails[i], [])
            return _status(codes[i])
        return _status(codes[0])  # process 0 said why (a signal: the step it saved)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
