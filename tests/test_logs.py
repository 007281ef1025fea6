"""One log for the whole farm: workers' events in the master's log, as JSON lines or text,
rate-limited per server, kept when a worker is killed, every connection at debug level."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_farm
from tests.farmproc import HOST, wait_for
from tests.rawmodbus import closed_by_peer, mbap, read_frame

pytestmark = pytest.mark.timeout(120)
KEYS = {"time", "level", "worker", "server", "event", "message", "fields"}


def lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON log, each parsed (a line that does not parse fails the test)."""
    parsed = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        assert set(record) == KEYS, record
        parsed.append(record)
    return parsed


def events(path: Path, name: str) -> list[dict[str, Any]]:
    return [record for record in lines(path) if record["event"] == name]


def malformed(port: int) -> None:
    """One connection, one frame with protocol id 1: the farm hangs up."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(struct.pack(">HHHB", 1, 1, 6, 1) + b"\x03\x00\x00\x00\x01")
        assert closed_by_peer(sock, 5) is not None


def test_json_lines_carry_every_worker_event(tmp_path: Path) -> None:
    log = tmp_path / "farm.jsonl"
    farm = make_farm(4, extra=["--log-format", "json", "--log-file", str(log)])
    farm.start()
    try:
        farm.wait_ready()
        wait_for(lambda: len(events(log, "worker_started")) == 2, 10, "both workers to say so")
        for _ in range(30):  # 30 malformed frames to one server: one line now ...
            malformed(farm.port(0))
        wait_for(lambda: events(log, "malformed_frame"), 10, "the malformed frame line")
        # ... and one for server 1 (worker 1), whose worker is then killed 50 ms later: the
        # line it sent before must be in the log all the same.
        malformed(farm.port(1))
        time.sleep(0.05)
        victim = farm.worker_pids()[1]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: events(log, "worker_restart"), 10, "the restart to be logged")
        wait_for(lambda: len(events(log, "worker_started")) == 3, 10, "the new worker 1")
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    assert stderr.strip() in ("", "farm stopped"), stderr  # the log went to the file
    found = events(log, "malformed_frame")
    first, rest = [r for r in found if r["server"] == "device-0000"], []
    rest = [r for r in first if "repeated" in r["fields"]]
    assert len(first) == 2, found  # one line at once, one count at the end of the window
    assert rest and rest[0]["fields"]["repeated"] == 29 and rest[0]["worker"] == 0
    assert first[0]["level"] == "warning" and first[0]["fields"]["detail"] == "protocol id 1"
    assert [r["worker"] for r in found if r["server"] == "device-0001"] == [1]
    restart = events(log, "worker_restart")[0]
    assert restart["worker"] == 1 and restart["fields"]["pid"] == victim
    assert restart["time"].endswith("Z") and restart["server"] is None
    assert events(log, "capacity")[0]["worker"] is None  # the master's own line


def test_debug_level_names_every_connection_and_its_peer(tmp_path: Path) -> None:
    log = tmp_path / "farm.jsonl"
    farm = make_farm(
        2, extra=["--log-level", "debug", "--log-format", "json", "--log-file", str(log)]
    )
    farm.start()
    try:
        farm.wait_ready()
        with socket.create_connection((HOST, farm.port(1)), timeout=5) as sock:
            host, port = sock.getsockname()[:2]
            peer = f"{host}:{port}"
            sock.sendall(mbap(1, 1, b"\x03\x00\x00\x00\x01"))
            read_frame(sock)

        def both() -> list[dict[str, Any]] | None:
            found = [
                r
                for r in lines(log)
                if r["event"] in ("connection_opened", "connection_closed") and peer in r["message"]
            ]
            return found if len(found) == 2 else None

        opened, closed = wait_for(both, 10, "the connection's two lines")
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    assert opened["event"] == "connection_opened" and closed["event"] == "connection_closed"
    assert opened["server"] == "device-0001" and opened["worker"] == 1
    assert opened["level"] == "debug"


def test_text_log_names_worker_and_server() -> None:
    farm = make_farm(2)
    farm.start()
    try:
        farm.wait_ready()
        malformed(farm.port(1))
    finally:  # a graceful stop sends what the workers have to say before they exit
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    # stderr is a pipe here: one record per line, whole, with its time and level (Rich would
    # have wrapped the long lines at 80 columns and split them for whatever reads the pipe)
    malformed_lines = [line for line in stderr.splitlines() if "malformed frame" in line]
    assert len(malformed_lines) == 1, stderr
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} WARNING +worker 1: device-0001: "
        r"malformed frame from 127\.0\.0\.1:\d+.*",
        malformed_lines[0],
    ), malformed_lines[0]
    capacity = [line for line in stderr.splitlines() if "open files:" in line]
    assert len(capacity) == 1 and capacity[0].endswith("(up to 64 per device)"), stderr


def test_a_stderr_nobody_reads_never_stalls_the_farm_and_loses_no_line() -> None:
    """A pipe's 64 KiB fill after a few hundred lines; the farm goes on answering (the API
    within a second, every device), and once somebody reads, every line is there."""
    farm = make_farm(2, workers=1, extra=["--log-level", "debug"])
    farm.start()  # stderr is a pipe this test does not read until the farm stops
    connections = 1500  # two lines each (opened, closed): about 250 KB of log
    try:
        farm.wait_ready()
        for _ in range(connections):
            with socket.create_connection((HOST, farm.port(0)), timeout=5) as sock:
                sock.sendall(mbap(1, 1, b"\x03\x00\x00\x00\x01"))
                read_frame(sock)
        started = time.monotonic()
        status = farm.status()  # on the blocked design the master's loop sat in write()
        assert time.monotonic() - started < 1.0 + 4.0, "the API waited on the log"
        assert status["servers_ready"] == 2
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr[-2000:]
    # a graceful stop writes what the workers said before they exited
    closed = [
        line for line in stderr.splitlines() if re.search(r"connection from \S+ closed", line)
    ]
    assert "log lines dropped" not in stderr
    assert len(closed) == connections, (len(closed), stderr[-2000:])
