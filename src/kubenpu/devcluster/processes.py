"""Detached child processes that outlive the command that started them.

Each process is recorded by pid *and* its start time from ``/proc``, so that a pid reused
by an unrelated process after ours exited is never mistaken for ours, nor signalled.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """One started process: enough to find it again, check it and stop it."""

    name: str
    pid: int
    #: Start time in clock ticks since boot (field 22 of ``/proc/<pid>/stat``).
    start_ticks: int
    argv: tuple[str, ...]
    log: str

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["argv"] = list(self.argv)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ProcessRecord:
        """The inverse of :meth:`to_json`."""
        argv = data["argv"]
        assert isinstance(argv, list)
        return cls(
            name=str(data["name"]),
            pid=int(str(data["pid"])),
            start_ticks=int(str(data["start_ticks"])),
            argv=tuple(str(a) for a in argv),
            log=str(data["log"]),
        )


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start ticks) of ``pid``, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def alive(record: ProcessRecord) -> bool:
    """Whether the recorded process is still running or exiting (not yet a zombie whose
    threads are all gone)."""
    _reap(record.pid)
    stat = _stat(record.pid)
    if stat is None or stat[1] != record.start_ticks:
        return False
    if stat[0] not in "ZX":
        return True
    # A killed multi-threaded process (every Go server) shows its first thread as a zombie
    # while the others still exit, holding its files: a listening port is not free yet.
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{record.pid}/task")) > 1
    return False


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcessRecord:
    """Start ``argv`` in its own session, detached from our terminal, logging to a file.

    Its own session means a Ctrl-C in the terminal that ran ``dev-cluster up`` does not
    reach it, and it keeps running after that command returns.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    stat = _stat(process.pid)
    # The child cannot have been reaped yet (we are its parent), so its stat is there.
    assert stat is not None
    # Popen would reap the child on garbage collection and warn that it is still running;
    # the process is meant to outlive this object, so tell Popen it is not to be waited for.
    process.returncode = 0
    return ProcessRecord(name, process.pid, stat[1], tuple(argv), str(log_path))


def stop(records: Iterable[ProcessRecord], *, timeout: float = 10.0) -> list[str]:
    """SIGTERM every live record, wait up to ``timeout`` s, then SIGKILL what is left.

    Returns the names of the processes that had to be killed.
    """
    live = [r for r in records if alive(r)]
    for record in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while live and time.monotonic() < deadline:
        live = [r for r in live if alive(r)]
        if live:
            time.sleep(0.05)
    for record in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    remaining = list(live)
    while remaining and time.monotonic() < deadline:
        remaining = [r for r in remaining if alive(r)]
        if remaining:
            time.sleep(0.05)
    return [r.name for r in live]


#: Where servers' ports are picked: below the kernel's ephemeral range (32768-60999 by
#: default), so that when a server is restarted no outgoing connection of another process
#: can have taken its port as a source port meanwhile ("address already in use").
_SERVER_PORTS = range(20000, 32000)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses right now, outside the ephemeral range."""
    low, high = _ephemeral_range()
    candidates = [p for p in _SERVER_PORTS if not low <= p <= high]
    for port in random.sample(candidates, min(200, len(candidates))):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    # Every candidate taken, or the ephemeral range covers them all: any free port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def port_in_use(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
