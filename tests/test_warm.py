"""`farm up` starts its workers first thing (farm.master.supervision.warm): they boot while the
master loads its API and the command and plans; each gets its listening sockets over its
pipe after its Assign. Those the plan does not need end at once, and a `farm up` that fails
leaves none behind (issue 24, start-up)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from farm.master.supervision import warm
from tests.conftest import ready_farm
from tests.farmproc import HOST, descendants, proc_status, started_at_wall, wait_for
from tests.rawmodbus import read_registers

pytestmark = pytest.mark.timeout(120)


def workers_below(pid: int) -> set[int]:
    """The worker processes below `pid`, forked (warm) or spawned: every live process below
    it but multiprocess's resource tracker."""
    found = set()
    for child in descendants(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in command:
            found.add(child)
    return found


def test_the_workers_start_before_the_master_binds_its_ports_and_serve() -> None:
    """Their processes are older than the master's first log line, which it writes once its
    ports are bound (on the old code the workers were spawned after it); every server
    answers a Modbus read through a socket that came over the pipe."""
    running = ready_farm(100, extra=["--log-format", "json"])
    try:
        pids = [worker["pid"] for worker in running.status()["workers"]]
        workers = {pid: started_at_wall(pid) for pid in pids}
        master = started_at_wall(running.pid)
        # Forked, a worker's command line is the master's: its name tells it apart in `top`.
        names = [Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids]
        assert names == ["farm-worker-0", "farm-worker-1"], names
        for index in (0, 1, 50, 99):
            assert len(read_registers(running.port(index), 0, 2)) == 2
    finally:
        code, _, stderr = running.stop()
    assert code == 0, stderr
    logged = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    bound = next(line for line in logged if line.get("event") == "capacity")
    bound_at = datetime.fromisoformat(bound["time"]).timestamp()
    tick = 0.02
    assert len(workers) == 2
    for pid, at in workers.items():
        assert master - tick <= at < bound_at - tick, (pid, at - master, bound_at - master)


BOOT_ASIDE = """
import json, os, time, multiprocess.resource_tracker as tracker
from farm.master.supervision import warm

cpus = os.sched_getaffinity(0)
warm.start(["--workers", "1"])
mine = os.sched_getaffinity(0)
pid = warm._waiting[0].process.pid
deadline = time.monotonic() + 20
while os.sched_getaffinity(pid) != cpus and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps({
    "cpus": sorted(cpus),
    "mine": sorted(mine),
    "tracker": sorted(os.sched_getaffinity(tracker._resource_tracker._pid)),
    "worker": sorted(os.sched_getaffinity(pid)),
}))
warm.discard_now()
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: nothing is set aside")
def test_warm_workers_boot_beside_the_master_then_move_to_all_its_cpus() -> None:
    """The resource tracker and a warm worker start on every CPU but the master's lowest
    (farm.master.supervision.warm.aside); the master keeps all of its own, and the worker,
    once booted, has all of them too."""
    done = subprocess.run(
        [sys.executable, "-c", BOOT_ASIDE], capture_output=True, text=True, timeout=90, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    assert found["mine"] == found["cpus"] == found["worker"], found
    assert found["tracker"] == found["cpus"][1:], found


def test_aside_leaves_one_cpu_or_too_many_workers_where_they_are() -> None:
    assert warm.aside({0, 1}, 2) == {1}
    assert warm.aside({2, 5, 7}, 4) == {5, 7}
    assert warm.aside({0}, 1) is None
    assert warm.aside({0, 1}, 3) is None  # three workers would queue on the one CPU left


def test_a_ready_farms_workers_run_on_every_cpu_of_their_master() -> None:
    running = ready_farm(8)
    try:
        pids = [worker["pid"] for worker in running.status()["workers"]]
        master = proc_status(running.pid, "Cpus_allowed_list")
        workers = [proc_status(pid, "Cpus_allowed_list") for pid in pids]
    finally:
        code, _, stderr = running.stop()
    assert code == 0, stderr
    assert master == proc_status(os.getpid(), "Cpus_allowed_list"), master
    assert workers == [master, master], (master, workers)


def test_workers_the_plan_does_not_need_end_at_once() -> None:
    """`--workers 3` for one server: one shard, so two of the three started early end."""
    running = ready_farm(1, workers=3)
    try:
        status = running.status()
        assert [worker["servers"] for worker in status["workers"]] == [1]
        serving = {worker["pid"] for worker in status["workers"]}
        wait_for(lambda: workers_below(running.pid) == serving, 20, "the unused workers to end")
        assert len(read_registers(running.port(0), 0, 2)) == 2
    finally:
        code, _, stderr = running.stop()
    assert code == 0, stderr


def session_members(session: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != b"Z":
            members.append(int(entry))
    return members


def test_a_farm_up_that_fails_leaves_no_worker_behind() -> None:
    """It started its workers before it learned that a port is taken; run in a session of its
    own, so that whatever it started can be found by session, nothing of it is left soon
    after it exited (multiprocess's resource tracker goes at the end of its pipe)."""
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "farm", "up", "--count", "1", "--port-base", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    assert process.returncode != 0 and "already in use" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    try:
        wait_for(lambda: not session_members(process.pid), 10, "the session to be empty")
    except AssertionError:
        left = session_members(process.pid)
        raise AssertionError([Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left]) from None
