"""Crash under load: 500 servers, steady `farm bench` load plus a writer that remembers every
acknowledged write, and kill -9 of a worker half-way. Zero lost writes; errors only on the
killed worker's servers and only within its restart; counters monotonic; the surviving
processes' memory flat.

The load is two `farm bench` runs, one on each worker's servers, so that the errors of each
are told apart: the survivor's run must have none at all. `--soak-seconds` sets the length
(60 s in the suite, the kill at 30 s; `scripts/soak SECONDS` runs longer).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import start_farm
from tests.farmproc import HOST, FarmProcess, wait_for
from tests.prometheus_server import parse, scrape_text
from tests.rawmodbus import private_bytes, read_registers, write_registers

SERVERS = 500
REGISTER = 100  # the writer's; the bench only reads
pytestmark = pytest.mark.timeout(300)


@dataclass(eq=False)
class Writer(threading.Thread):
    """Writes an increasing number to every server in turn; remembers what was acknowledged."""

    farm: FarmProcess
    limit_s: float
    acked: dict[int, int] = field(default_factory=dict)
    attempted: dict[int, int] = field(default_factory=dict)
    writes: int = 0
    errors: list[tuple[int, float, str]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        sockets: dict[int, socket.socket] = {}
        deadline = time.monotonic() + self.limit_s
        number = 0
        while not self.done.is_set() and time.monotonic() < deadline:
            number += 1
            for index in range(SERVERS):
                value = number & 0xFFFF
                self.attempted[index] = value
                try:
                    sock = sockets.get(index) or socket.create_connection(
                        (HOST, self.farm.port(index)), timeout=2
                    )
                    sockets[index] = sock
                    write_registers(sock, REGISTER, [value])
                    self.acked[index] = value
                    self.writes += 1
                except (OSError, AssertionError) as exc:
                    self.errors.append((index, time.monotonic(), repr(exc)))
                    dead = sockets.pop(index, None)
                    if dead is not None:
                        dead.close()
        for sock in sockets.values():
            sock.close()


@dataclass(eq=False)
class Scraper(threading.Thread):
    """Scrapes /metrics every second; notes any counter that went backwards."""

    farm: FarmProcess
    limit_s: float
    backwards: list[str] = field(default_factory=list)
    scrapes: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        last: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        deadline = time.monotonic() + self.limit_s
        while not self.done.wait(1.0) and time.monotonic() < deadline:
            samples = parse(scrape_text(self.farm.api_port))
            self.scrapes += 1
            for key, value in samples.items():
                name = key[0]
                counter = name.endswith(("_total", "_count", "_sum", "_bucket"))
                if counter and value < last.get(key, 0):
                    self.backwards.append(f"{name}{dict(key[1])}: {last[key]} -> {value}")
                last[key] = value


def bench_worker(farm: FarmProcess, worker: int, seconds: float) -> subprocess.Popen[str]:
    """`farm bench` on the servers of one worker (of 2): 50 connections, 1,000 requests/s."""
    targets = [f"{HOST}:{farm.port(index)}" for index in range(worker, SERVERS, 2)]
    return subprocess.Popen(
        [
            sys.executable, "-m", "farm", "bench", *(f"--target={t}" for t in targets),
            "-c", "50", "--rate", "1000", "--depth", "4", "--timeout", "2",
            "--duration", str(seconds), "--json",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def errors(report: dict[str, Any]) -> dict[str, int]:
    keys = ("timeouts", "connection_errors", "lost", "unexpected", "exceptions_total")
    return {key: report[key] for key in keys}


def test_kill_9_of_a_worker_under_load(request: pytest.FixtureRequest) -> None:
    seconds = float(request.config.getoption("--soak-seconds"))
    farm = start_farm(SERVERS, workers=2)
    benches: list[subprocess.Popen[str]] = []
    try:
        farm.wait_ready()
        pids = farm.worker_pids()
        survivors = [farm.pid, pids[1]]
        # Server i is on worker i mod 2: one bench per worker, 1,000 requests/s each.
        benches = [bench_worker(farm, worker, seconds) for worker in (0, 1)]
        writer = Writer(farm, limit_s=seconds + 30)
        scraper = Scraper(farm, limit_s=seconds + 30)
        began = time.monotonic()
        writer.start()
        scraper.start()
        wait_for(lambda: time.monotonic() - began > seconds / 4, seconds, "the load to settle")
        rss_settled = [private_bytes(pid) for pid in survivors]
        wait_for(lambda: time.monotonic() - began > seconds / 2, seconds, "half-time")
        os.kill(pids[0], signal.SIGKILL)
        killed = time.monotonic()

        def back() -> bool:
            worker = farm.status()["workers"][0]
            return bool(worker["state"] == "ready" and worker["pid"] != pids[0])

        wait_for(back, 30, "worker 0 to be back")
        restarted = time.monotonic()
        outputs = [bench.communicate(timeout=seconds + 60)[0] for bench in benches]
        rss_end = [private_bytes(pid) for pid in survivors]
        writer.done.set()
        scraper.done.set()
        writer.join(30)
        scraper.join(30)
        lost = {
            index: (writer.acked[index], found)
            for index in range(SERVERS)
            if index in writer.acked
            and (found := read_registers(farm.port(index), REGISTER, 1)[0])
            not in (writer.acked[index], writer.attempted[index])
        }
    finally:
        for bench in benches:
            if bench.poll() is None:
                bench.kill()
                bench.communicate()
        code, _, farm_stderr = farm.stop()
    killed_report, survivor_report = (json.loads(output) for output in outputs)
    killed_errors, survivor_errors = (errors(r) for r in (killed_report, survivor_report))
    responses = killed_report["responses"] + survivor_report["responses"]
    outside = [
        (index, round(at - killed, 2), error)
        for index, at, error in writer.errors
        if index % 2 != 0 or not killed <= at <= restarted + 3.0
    ]
    growth = [end / start - 1 for start, end in zip(rss_settled, rss_end, strict=True)]
    print(
        f"soak {seconds:.0f} s: bench {responses} answers, errors on the killed worker's "
        f"servers {killed_errors}, on the other's {survivor_errors}; writer "
        f"{writer.writes} writes acknowledged, {len(writer.errors)} errors, all within "
        f"{max((at - killed for _, at, _ in writer.errors), default=0):.2f} s of the kill "
        f"(worker back after {restarted - killed:.2f} s); {scraper.scrapes} scrapes; private RSS "
        f"of master and surviving worker {[f'{g * 100:+.1f}%' for g in growth]}"
    )
    assert code == 0, farm_stderr
    assert lost == {}, f"writes lost (acknowledged, found): {lost}"
    assert outside == [], outside[:5]
    assert len(writer.acked) == SERVERS
    assert scraper.backwards == [], scraper.backwards[:5]
    assert scraper.scrapes >= seconds / 2
    assert responses > 0.8 * 2000 * seconds
    # The bench's errors too: none on the surviving worker's servers, and on the killed
    # worker's only what a dead connection gives (no exception answers, no stray frames).
    assert survivor_errors == dict.fromkeys(survivor_errors, 0), survivor_errors
    assert killed_errors["exceptions_total"] == killed_errors["unexpected"] == 0, killed_errors
    assert all(abs(g) <= 0.05 for g in growth), growth
    assert "worker 0" in farm_stderr and "restarting it" in " ".join(farm_stderr.split())
