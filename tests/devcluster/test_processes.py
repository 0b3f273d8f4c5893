"""Detached processes: recorded, found alive, stopped; a reused pid is never ours."""

import dataclasses
import socket
import sys
import time

from kubenpu.devcluster import processes


def _wait_for_line(log, text: str) -> None:
    deadline = time.monotonic() + 10
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text!r} never appeared in {log}"
        time.sleep(0.01)


def test_spawn_alive_stop(tmp_path) -> None:
    log = tmp_path / "logs" / "sleeper.log"
    record = processes.spawn(
        "sleeper",
        [sys.executable, "-c", "print('hello', flush=True); import time; time.sleep(60)"],
        log,
    )
    assert processes.alive(record)
    _wait_for_line(log, "hello")
    assert processes.stop([record], timeout=5.0) == []
    assert not processes.alive(record)


def test_stop_kills_what_ignores_sigterm(tmp_path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    log = tmp_path / "stubborn.log"
    record = processes.spawn("stubborn", [sys.executable, "-c", code], log)
    _wait_for_line(log, "ready")  # the handler is installed once it prints
    assert processes.stop([record], timeout=0.5) == ["stubborn"]
    assert not processes.alive(record)


def test_a_reused_pid_is_not_ours(tmp_path) -> None:
    record = processes.spawn(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "l"
    )
    impostor = dataclasses.replace(record, start_ticks=record.start_ticks - 1)
    assert not processes.alive(impostor)
    assert processes.stop([impostor]) == []  # not signalled
    assert processes.alive(record)
    processes.stop([record])


def test_record_round_trips_through_json(tmp_path) -> None:
    record = processes.ProcessRecord("x", 1, 2, ("a", "b"), "/l")
    assert processes.ProcessRecord.from_json(record.to_json()) == record


def test_free_port_and_port_in_use() -> None:
    port = processes.free_port()
    # Outside the ephemeral range: no client's source port can take it while a server
    # that had it restarts.
    low, high = processes._ephemeral_range()
    assert not low <= port <= high
    assert not processes.port_in_use(port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert processes.port_in_use(port)
