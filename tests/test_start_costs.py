"""Two costs of a start that `farm up` avoids, and what it must put back afterwards:

- the kernel's growth of a descriptor table, which waits for an RCU grace period once the
  process has a second thread (farm.openfiles.reserve_descriptors): the master's table is
  grown to EARLY_DESCRIPTORS first thing, before its log writer's thread starts;
- Python's cyclic collector, off while the master and its warm workers load and build
  (farm.collector): each turns it back on once ready, past what the start left (frozen).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import uvloop

from farm.cli.validate import make_plan
from farm.master.supervision.listeners import bind_all
from farm.master.supervision.supervisor import Supervisor, SupervisorOptions
from farm.openfiles import EARLY_DESCRIPTORS, reserve_descriptors
from tests.conftest import ready_farm
from tests.farmproc import free_port, free_port_range, proc_status, wait_for

pytestmark = pytest.mark.timeout(120)


def fd_size(pid: int | str = "self") -> int:
    """The size of a process's descriptor table (FDSize in /proc/PID/status)."""
    return int(proc_status(pid, "FDSize"))


def test_reserving_descriptors_grows_the_table_and_leaves_every_descriptor_as_it_was() -> None:
    """In a fresh process: the table holds the number asked for, no descriptor is left open,
    and one already open at the number asked for is neither closed nor replaced."""
    code = textwrap.dedent(
        """
        import json, os
        from farm.openfiles import reserve_descriptors
        from tests.test_start_costs import fd_size

        before = fd_size()
        os.dup2(1, 1500)  # a descriptor in use where the reserve looks first
        identity = os.fstat(1500).st_ino
        opened = sorted(os.listdir("/proc/self/fd"))
        reserve_descriptors(1501)
        print(json.dumps({
            "before": before,
            "after": fd_size(),
            "same_fds": sorted(os.listdir("/proc/self/fd")) == opened,
            "kept": os.fstat(1500).st_ino == identity,
        }))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    assert found["before"] < 1501 <= found["after"], found
    assert found["same_fds"] and found["kept"], found


def test_reserving_fewer_than_the_table_holds_changes_nothing() -> None:
    before = fd_size()
    opened = sorted(os.listdir("/proc/self/fd"))
    reserve_descriptors(10)
    assert fd_size() == before
    assert sorted(os.listdir("/proc/self/fd")) == opened


def test_the_master_of_a_small_farm_has_its_table_grown_at_the_start() -> None:
    """Four servers need some 40 descriptors: the table is EARLY_DESCRIPTORS all the same
    (256 on the old code), so a farm of up to some thousands binds without growing it."""
    running = ready_farm(4)
    try:
        size = fd_size(running.pid)
    finally:
        code, _, stderr = running.stop()
    assert code == 0, stderr
    assert size >= EARLY_DESCRIPTORS, size


MASTER = """
import asyncio, gc, json, threading, time, urllib.request
import uvloop
from farm import collector
from farm.cli.validate import make_plan
from farm.master.options import MasterOptions
from farm.master.run import serve

collector.pause()  # as `farm up` does first thing (farm.cli.main)
plan = make_plan(None, 4, "127.0.0.1", {base}, 2)
options = MasterOptions(api_port={api}, metrics_port={metrics})
found = {{}}

async def main():
    def on_ready(summary):
        found["at_ready"] = gc.isenabled()

        def probe():
            deadline = time.monotonic() + 30
            while not gc.isenabled() and time.monotonic() < deadline:
                time.sleep(0.01)
            found["after"] = [gc.isenabled(), gc.get_freeze_count()]
            request = urllib.request.Request(
                "http://127.0.0.1:{api}/api/v1/shutdown", method="POST", data=b"{{}}"
            )
            request.add_header("Content-Type", "application/json")
            urllib.request.urlopen(request, timeout=30).close()

        threading.Thread(target=probe, daemon=True).start()

    await serve(plan, options, on_ready=on_ready)

uvloop.run(main())
print(json.dumps(found))
"""


def test_the_master_turns_the_collector_back_on_once_ready() -> None:
    """Off through the start (as `farm up` turns it off), on once every server is up, with
    the start's objects frozen (the old code never turned it back on: "after" [false, 0])."""
    code = MASTER.format(api=free_port(), base=free_port_range(4), metrics=free_port())
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=90, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["at_ready"] is False, found  # still off when the farm says it is ready
    enabled, frozen = found["after"]
    assert enabled is True and frozen > 10_000, found


def test_a_worker_started_with_the_collector_off_turns_it_on_once_ready(tmp_path: Path) -> None:
    """Real workers with the collector off at their start, as warm workers are forked: after
    their Ready it is on, with their boot's objects frozen."""
    plan = make_plan(None, 4, "127.0.0.1", free_port_range(4), 2)
    report = tmp_path / "collector"
    os.environ["FARM_TEST_COLLECTOR"] = str(report)
    sockets = bind_all(plan.servers())

    async def main() -> list[str]:
        supervisor = Supervisor(
            plan, sockets, SupervisorOptions(), entry="tests.stub_workers:collector_paused"
        )
        try:
            await supervisor.start()
            pids = [slot.process.pid for slot in supervisor.slots if slot.process is not None]
            paths = [Path(f"{report}.{pid}") for pid in pids]

            def reported() -> list[str] | None:
                if all(path.exists() for path in paths):
                    return [path.read_text() for path in paths]
                return None

            return await asyncio.to_thread(wait_for, reported, 30, "both workers' reports")
        finally:
            await supervisor.stop()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            reports = runner.run(main())
    finally:
        del os.environ["FARM_TEST_COLLECTOR"]
    assert len(reports) == 2, reports
    for line in reports:
        enabled, frozen = line.split()
        assert enabled == "True" and int(frozen) > 10_000, reports


def test_a_table_that_cannot_grow_now_is_no_error() -> None:
    """Every descriptor up to the soft limit in use: the reserve gives up quietly (the table
    grows on demand, as it always did), and no descriptor is closed or left behind."""
    code = textwrap.dedent(
        """
        import json, os, resource
        from farm.openfiles import reserve_descriptors

        def in_use():
            found = []
            for fd in range(200):
                try:
                    os.fstat(fd)
                    found.append(fd)
                except OSError:
                    pass
            return found

        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))  # its hard limit too
        held = []
        try:
            while True:
                held.append(os.dup(0))
        except OSError:
            pass
        opened = in_use()
        reserve_descriptors(10_000)
        print(json.dumps({"held": len(held), "same": in_use() == opened, "all": len(opened)}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    assert found["held"] > 150 and found["same"], found


def test_a_workers_table_has_room_for_a_connection_to_each_of_its_servers() -> None:
    """100 servers on 2 workers: each worker's table holds its 50 listeners, 50 client
    connections and its own files without growing (128 on the old code: it grew on demand,
    one RCU grace period of its loop at each doubling once its ticker's thread ran)."""
    running = ready_farm(100)
    try:
        sizes = [fd_size(worker["pid"]) for worker in running.status()["workers"]]
    finally:
        code, _, stderr = running.stop()
    assert code == 0, stderr
    assert len(sizes) == 2 and min(sizes) >= 2 * 50 + 64, sizes
