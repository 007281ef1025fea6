"""What `farm up` shows while its servers start: a progress bar on a terminal (erased once
they are up), and nothing but the log's lines anywhere else (a pipe, a file, a service's
log), where Rich drew no bar, only blank lines around the log's."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.farmproc import STOP_DEADLINE_S, free_port, free_port_range

pytestmark = pytest.mark.timeout(120)
COUNT = 300


def command(port_base: int, api_port: int) -> list[str]:
    return [
        sys.executable, "-m", "farm", "up", "--count", str(COUNT),
        "--port-base", str(port_base), "--api-port", str(api_port),
    ]  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(STOP_DEADLINE_S)


def test_a_terminal_shows_the_bar_while_the_servers_start() -> None:
    """stderr a pseudo-terminal (as a user's shell gives it): the bar's words are drawn on
    it before the ready summary is printed (on stdout)."""
    main, terminal = os.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    process = subprocess.Popen(
        command(free_port_range(COUNT), free_port()),
        stdout=subprocess.PIPE,
        stderr=terminal,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    os.close(terminal)
    drawn, ready = b"", b""
    try:
        assert process.stdout is not None
        out = process.stdout.fileno()
        deadline = time.monotonic() + 60
        while b"farm ready" not in ready and time.monotonic() < deadline:
            readable, _, _ = select.select([main, out], [], [], 1.0)
            if main in readable:
                try:
                    drawn += os.read(main, 65536)
                except OSError:  # the terminal's other end closed: the farm exited
                    break
            if out in readable:
                ready += os.read(out, 65536)
    finally:
        code = stop(process)
        os.close(main)
    assert b"farm ready" in ready, (ready, drawn[-500:])
    assert b"starting servers" in drawn, drawn[-500:]
    assert code == 0


def test_a_pipe_gets_the_log_lines_and_no_blank_ones() -> None:
    process = subprocess.Popen(
        command(free_port_range(COUNT), free_port()),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
    finally:
        code = stop(process)
    _, stderr = process.communicate(timeout=STOP_DEADLINE_S)
    assert ready.startswith(b"farm ready"), (ready, stderr[-500:])
    assert code == 0, stderr[-500:]
    lines = stderr.decode().splitlines()
    assert any("open files" in line for line in lines), lines
    assert "starting servers" not in stderr.decode(), lines
    assert all(line.strip() for line in lines), lines
