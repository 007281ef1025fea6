"""An idle server costs its processes only what it must: memory that nobody touches is never
in a process's RSS (issue 24: at most 14 KiB per idle server at 10,000 servers).

Checked on a real farm through /proc/PID/smaps: the pages of a shared-memory segment that a
process has touched are its `Rss` for that mapping.
"""

from __future__ import annotations

import re
import time
import tracemalloc
from types import SimpleNamespace
from typing import cast

import pytest
from pymodbus.client import ModbusTcpClient

from farm.ipc import stats
from farm.ipc.stats import ShardCounters
from farm.master.fleetview.history import INTERVAL_S, SAMPLES, History
from farm.master.supervision.supervisor import Supervisor
from tests.conftest import ready_farm
from tests.farmproc import HOST, FarmProcess, wait_for

pytestmark = pytest.mark.timeout(120)

PAGE = 4096
# A fault maps the pages around it that are in memory already (Linux's fault-around, 64 KiB,
# aligned): the master reads every server's counters, so they are.
FAULT_AROUND = 16 * PAGE
_MAPPING = re.compile(r"([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(\S*)")


def shared_rss(pid: int) -> dict[int, int]:
    """Resident bytes of each /dev/shm mapping of process `pid`, by mapping size."""
    found: dict[int, int] = {}
    size, name = 0, ""
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            mapping = _MAPPING.match(line)
            if mapping:
                size = int(mapping[2], 16) - int(mapping[1], 16)
                name = mapping[3]
            elif line.startswith("Rss:") and name.startswith("/dev/shm/"):
                found[size] = found.get(size, 0) + int(line.split()[1]) * 1024
    return found


def heartbeats(farm: FarmProcess, count: int) -> None:
    """Wait until the worker has sent `count` more heartbeats (the age drops at each one)."""
    seen, last_age = 0, float("inf")
    deadline = time.monotonic() + 20
    while seen < count:
        assert time.monotonic() < deadline, "the worker stopped sending heartbeats"
        age = farm.status()["workers"][0]["heartbeat_age_s"]
        if age is not None and age < last_age:
            seen += 1
        last_age = age if age is not None else last_age
        time.sleep(0.05)


def test_an_idle_servers_counters_stay_out_of_its_workers_memory() -> None:
    servers = 400
    counters_bytes = -(-ShardCounters.size(servers) // PAGE) * PAGE
    farm = ready_farm(servers, workers=1)
    try:
        worker = farm.worker_pids()[0]
        heartbeats(farm, 3)  # what the worker does at start and on every heartbeat
        resident = shared_rss(worker)[counters_bytes]
        # The header (the worker's CPU time) only: 680 bytes a server fill 67 pages.
        assert resident <= FAULT_AROUND, f"{resident // PAGE} of {counters_bytes // PAGE} pages"
        client = ModbusTcpClient(HOST, port=farm.port(200), timeout=3, retries=0)
        assert client.connect()
        for _ in range(5):
            assert not client.read_holding_registers(0, count=2).isError()
        client.close()
        # The master sums what the shard answered from the memory it owns.
        wait_for(lambda: farm.status()["workers"][0]["requests"] == 5, 10, "5 requests")
        heartbeats(farm, 2)
        resident = shared_rss(worker)[counters_bytes]
        assert resident <= 2 * FAULT_AROUND, f"{resident // PAGE} pages for one server used"
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr


def test_the_fleet_views_history_keeps_nothing_for_idle_servers() -> None:
    """Five minutes of samples of 10,000 idle servers hold no row for each (7 MB they took),
    and the few busy ones are kept exactly."""
    counters = ShardCounters.create(10_000)
    try:
        supervisor = cast(Supervisor, SimpleNamespace(slots=[SimpleNamespace(counters=counters)]))
        history = History(supervisor)
        tracemalloc.start()
        try:
            history.sample()
            for step in range(SAMPLES):
                busy = 7 + step % 3  # a few servers answer a request or two each interval
                counters.server(busy)[stats.REQUEST_SLOT[3]] += step % 2 + 1
                history.sample()
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert held < 500_000, f"{held:,} bytes for 10,000 idle servers"
        served = history.of(0, 8)["requests_per_s"]
        expected = [(n % 2 + 1) / INTERVAL_S if 7 + n % 3 == 8 else 0.0 for n in range(SAMPLES)]
        assert served == expected
    finally:
        counters.close()
