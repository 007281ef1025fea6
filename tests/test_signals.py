"""Signals a farm meets outside a test bench: a closed terminal (SIGHUP to the whole
foreground process group), and SIGTERM when the farm is PID 1 of a container."""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import termios
import time

import pytest

from tests.conftest import make_farm, start_farm
from tests.farmproc import FarmProcess, descendants, port_free, proc_status, wait_for

pytestmark = pytest.mark.timeout(120)


def assert_released(farm: FarmProcess, workers: list[int]) -> None:
    assert all(port_free(farm.port(i)) for i in range(farm.count))
    assert port_free(farm.api_port)
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_sighup_to_the_process_group_stops_the_farm_gracefully() -> None:
    """A closed terminal sends SIGHUP to every process of its foreground group: the workers
    must not die of it (the master would restart them), and the master stops the farm."""
    farm = start_farm(6, workers=2)
    try:
        farm.wait_ready()
        workers = farm.worker_pids()
        for pid in [*workers, farm.pid]:
            os.kill(pid, signal.SIGHUP)
        assert farm.process is not None
        farm.process.wait(timeout=30)
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    assert "farm stopped" in stderr and "Traceback" not in stderr, stderr
    assert "died" not in stderr, stderr  # no worker was killed by the hangup
    assert_released(farm, workers)


def test_sigterm_to_the_process_group_stops_the_farm_once_with_no_restart() -> None:
    """systemd's default KillMode and `kill -- -PGID` send SIGTERM to every process of the
    group, the workers often first: they must leave the stop to the master (on the old code
    they died of it and the master restarted them), which stops them all at once."""
    farm = start_farm(6, workers=3)
    try:
        farm.wait_ready()
        workers = farm.worker_pids()
        for pid in workers:  # the workers first: the master has not begun its stop yet
            os.kill(pid, signal.SIGTERM)
        watched_until = time.monotonic() + 1.0  # a worker killed by it is a zombie at once
        while time.monotonic() < watched_until:
            assert not any(_zombie(pid) for pid in workers), "a worker died of SIGTERM"
            time.sleep(0.02)
        os.kill(farm.pid, signal.SIGTERM)
        assert farm.process is not None
        farm.process.wait(timeout=30)
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    assert "farm stopped" in stderr and "Traceback" not in stderr, stderr
    assert "died" not in stderr and "restarting" not in stderr, stderr
    assert_released(farm, workers)


def test_sigterm_stops_the_farm_as_pid_1_of_a_pid_namespace() -> None:
    """PID 1 gets only the signals it has a handler for (the kernel drops the rest, even
    from outside the namespace): the farm as a container's init still stops on SIGTERM."""
    unshare = shutil.which("unshare")
    assert unshare is not None, "unshare (util-linux) is needed"
    farm = make_farm(4, workers=2)
    command = [
        unshare, "--user", "--map-root-user", "--pid", "--fork", "--kill-child",
        sys.executable, "-m", "farm", "up", "--count", str(farm.count),
        "--port-base", str(farm.port_base), "--workers", str(farm.workers),
        "--api-port", str(farm.api_port),
    ]  # fmt: skip
    farm.process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        farm.wait_ready()
        # The farm is the only child of unshare, and PID 1 inside its namespace.
        (master,) = wait_for(
            lambda: [p for p in descendants(farm.pid) if _parent(p) == farm.pid],
            10,
            "the farm under unshare",
        )
        nspid = proc_status(master, "NSpid").split()
        assert nspid[-1] == "1", nspid
        workers = [p for p in descendants(master) if not _resource_tracker(p)]
        os.kill(master, signal.SIGTERM)
        farm.process.wait(timeout=30)
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    assert "farm stopped" in stderr and "Traceback" not in stderr, stderr
    assert_released(farm, workers)
    assert wait_for(lambda: not os.path.exists(f"/proc/{master}"), 10, "the master gone")


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def _resource_tracker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"resource_tracker" in cmdline.read()
    except OSError:
        return False


def test_closing_the_terminal_stops_the_farm_cleanly() -> None:
    """The farm runs in a terminal of its own (a pseudo-terminal this test holds); closing
    it hangs up the session: the farm stops, releases everything and exits 0, though it
    can no longer say so."""
    farm = make_farm(4, workers=2)
    terminal, tty = os.openpty()

    def take_the_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    command = [
        sys.executable, "-m", "farm", "up", "--count", str(farm.count),
        "--port-base", str(farm.port_base), "--workers", str(farm.workers),
        "--api-port", str(farm.api_port),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdin=tty, stdout=tty, stderr=tty, preexec_fn=take_the_terminal, text=True
    )
    os.close(tty)
    try:
        farm.process = process
        farm.wait_ready()
        workers = farm.worker_pids()
        while select.select([terminal], [], [], 0)[0]:  # what the farm printed so far
            os.read(terminal, 65536)
        os.close(terminal)
        terminal = -1
        code = process.wait(timeout=30)
    finally:
        if terminal != -1:
            os.close(terminal)
        if process.poll() is None:
            farm.kill()
    assert code == 0
    assert_released(farm, workers)
