"""Careless and hostile clients on a real farm: a peer that never reads, a connection flood,
a slowloris, an idle connection. Each costs bounded memory and descriptors, is closed and
counted, and the other devices keep answering."""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from farm.client import FarmClient
from tests.conftest import start_farm
from tests.farmproc import HOST, FarmProcess, free_port, free_port_range, wait_for
from tests.prometheus_server import scrape, value
from tests.rawmodbus import (
    Bystander,
    assert_keeps_its_latency,
    closed_by_peer,
    mbap,
    open_files,
    p90,
    read_frame,
    read_registers,
    rss_bytes,
    usual_latency,
)

pytestmark = pytest.mark.timeout(180)
FC3_125 = struct.pack(">BHH", 3, 0, 125)


@pytest.fixture
def farm4() -> Iterator[FarmProcess]:
    """4 servers on 2 workers: servers 0 and 2 share worker 0."""
    farm = start_farm(4, workers=2)
    try:
        farm.wait_ready()
        yield farm
    finally:
        code, _, stderr = farm.stop()
        assert code == 0, stderr


def closed(farm: FarmProcess, server: str, reason: str, worker: int = 0) -> float:
    labels = {"server": server, "worker": str(worker), "reason": reason}
    return value(scrape(farm), "modbus_farm_connections_closed_total", **labels) or 0


def test_a_client_that_never_reads_costs_bounded_memory(farm4: FarmProcess) -> None:
    """Pipelined FC 3 x 125 for 20 s, no answer ever read: the worker stops reading from it
    (backpressure) and its RSS grows by less than 16 MiB; its neighbour answers as usual."""
    farm = farm4
    worker = farm.worker_pids()[0]
    before = usual_latency(farm.port(2), 3.0)
    rss_before = rss_bytes(worker)
    batch = b"".join(mbap(t, 1, FC3_125) for t in range(100))  # 1,200 bytes in, 25,900 out
    sent = 0
    with socket.create_connection((HOST, farm.port(0)), timeout=5) as hog:
        hog.settimeout(0.2)
        bystander = Bystander(farm.port(2))
        control = Bystander(farm.port(3))  # on the other worker, over the same seconds
        bystander.start()
        control.start()
        peak = rss_before
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):  # its send buffer is full: the farm
                sent += hog.send(batch)  # stopped reading it
            peak = max(peak, rss_bytes(worker))
        bystander.done.set()
        control.done.set()
        bystander.join(10)
        control.join(10)
        stalled_at = value(
            scrape(farm), "modbus_farm_received_bytes_total", server="device-0000", worker="0"
        )
    growth = peak - rss_before
    during = bystander.latencies
    print(
        f"never-reading client: sent {sent / 2**20:.1f} MiB, farm read {stalled_at or 0:.0f} "
        f"bytes; worker RSS +{growth / 2**20:.1f} MiB; neighbour p50/p90 before "
        f"{statistics.median(before) * 1e3:.2f}/{p90(before) * 1e3:.2f} ms, during "
        f"{statistics.median(during) * 1e3:.2f}/{p90(during) * 1e3:.2f} ms ({len(during)} reads); "
        f"other worker's device meanwhile {statistics.median(control.latencies) * 1e3:.2f}/"
        f"{p90(control.latencies) * 1e3:.2f} ms"
    )
    assert growth < 16 * 2**20
    assert not bystander.failures, bystander.failures
    assert len(during) > 100
    # Its usual latency: that of a device on the other worker meanwhile.
    assert not control.failures, control.failures
    assert_keeps_its_latency(during, control.latencies)
    assert read_registers(farm.port(0), 0, 2) == [0, 0]  # and the hog's device still answers


def test_a_client_pipelining_into_a_delay_fault_costs_bounded_memory(farm4: FarmProcess) -> None:
    """Answers a delay fault holds back are backpressure too: a client that pipelines FC 3 x
    125 into a 30 s delay stops being read (without it the worker queued ~80 MiB a second of
    answers, stopped heartbeating and was killed), its neighbour keeps answering, and a client
    that pipelines into a short delay and reads gets every answer, in order."""
    farm = farm4
    client = FarmClient.at(HOST, farm.api_port)
    worker = farm.worker_pids()[0]
    farm.wait_settled()  # the baseline once the worker's RSS holds still
    rss_before = rss_bytes(worker)
    held = client.fault("delay", target="device-0000", ms=30_000)
    batch = b"".join(mbap(t, 1, FC3_125) for t in range(100))
    with socket.create_connection((HOST, farm.port(0)), timeout=5) as hog:
        hog.settimeout(0.2)
        bystander = Bystander(farm.port(2))
        bystander.start()
        peak = rss_before
        deadline = time.monotonic() + 8.0
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                hog.send(batch)
            peak = max(peak, rss_bytes(worker))
        bystander.done.set()
        bystander.join(10)
    client.clear_fault(held.id)
    growth = peak - rss_before
    assert growth < 16 * 2**20, f"worker RSS +{growth / 2**20:.1f} MiB"
    assert not bystander.failures and len(bystander.latencies) > 50, bystander.failures
    assert farm.worker_pids()[0] == worker  # never replaced: its loop kept running
    # Held and let go, again and again: 3,000 answers (777 KB) through a 200 ms delay.
    client.fault("delay", target="device-0001", ms=200)
    count = 3000
    with socket.create_connection((HOST, farm.port(1)), timeout=10) as sock:
        sender = threading.Thread(
            target=sock.sendall, args=(b"".join(mbap(t, 1, FC3_125) for t in range(count)),)
        )
        sender.start()
        transactions = [struct.unpack_from(">H", read_frame(sock))[0] for _ in range(count)]
        sender.join(10)
    assert transactions == list(range(count))
    print(f"pipelining into a delay: worker RSS +{growth / 2**20:.1f} MiB")


def test_a_udp_flood_into_a_delay_fault_costs_bounded_memory() -> None:
    """Datagrams cannot be pushed back on: past 1,024 answers held back by a 30 s delay the
    server drops new ones, counted as unanswered (200,000 held cost ~60 MiB before; a long
    flood, gigabytes), and its neighbour on the same worker answers."""
    farm = start_farm(4, workers=2, extra=["--transport", "udp"])
    try:
        farm.wait_ready()
        worker = farm.worker_pids()[0]
        FarmClient.at(HOST, farm.api_port).fault("delay", target="device-0000", ms=30_000)
        farm.wait_settled("device-0002")  # same worker; the baseline once its RSS holds still
        rss_before = rss_bytes(worker)
        frame = mbap(1, 1, FC3_125)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
            for sent in range(200_000):
                flood.sendto(frame, (HOST, farm.port(0)))
                if sent % 500 == 0:
                    time.sleep(0.001)  # paced, so that the kernel drops few of them
        seen: list[float] = []

        def settled() -> bool:
            labels = {"server": "device-0000", "worker": "0"}
            seen.append(value(scrape(farm), "modbus_farm_unanswered_total", **labels) or 0)
            return len(seen) > 3 and seen[-1] == seen[-3] > 0

        wait_for(settled, 30, "the flood to be read", interval=0.2)
        growth = rss_bytes(worker) - rss_before
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.sendto(mbap(7, 1, b"\x03\x00\x00\x00\x01"), (HOST, farm.port(2)))
            answer = client.recv(300)
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    print(f"UDP flood into a delay: {seen[-1]:.0f} dropped, RSS +{growth / 2**20:.1f} MiB")
    assert seen[-1] > 50_000  # read past the 1,024 held, and dropped
    assert growth < 16 * 2**20, f"worker RSS +{growth / 2**20:.1f} MiB"
    assert answer[:2] == b"\x00\x07" and answer[7] == 3


@pytest.mark.parametrize(
    ("extra", "reason"),
    [([], "max_connections"), (["--max-connections", "100000"], "worker_limit")],
    ids=["device-max", "worker-cap"],
)
def test_a_flood_to_one_device_leaves_the_others_accepting(extra: list[str], reason: str) -> None:
    """Two processes open 15,000 connections each to one device.

    30,000 connections against a worker whose open-files limit is 20,000 (the hard limit on
    this machine, which each flood process needs too: 15,000 each keeps them under it, and
    each connects from an address of its own, 127.0.0.2 and .3, so that neither runs out of
    ephemeral ports). Without limits the worker would run out of descriptors, and an accept
    that fails with EMFILE stops every listener of the worker. With the default limit the
    device keeps its 64 and refuses the rest; with no device limit (100,000) the worker's
    cap stops it short of the open-files limit, and a newcomer to another device still gets
    in. Either way every other device, on the same worker and on the other, accepts and
    answers throughout.
    """
    farm = start_farm(4, workers=2, extra=extra)
    floods: list[subprocess.Popen[str]] = []
    try:
        farm.wait_ready()
        worker = farm.worker_pids()[0]
        floods = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.flood", HOST, str(farm.port(0)), "15000", src, "90"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for src in ("127.0.0.2", "127.0.0.3")
        ]
        answered, most_files, reports = 0, 0, []
        for flood in floods:  # each says when it is done connecting; until then, and after
            assert flood.stdout is not None
            waiting = threading.Thread(target=lambda f=flood: reports.append(f.stdout.readline()))
            waiting.start()
            while waiting.is_alive():
                for index in (1, 2, 3):  # a new connection each time: they must still accept
                    assert read_registers(farm.port(index), 0, 1) == [0]
                    answered += 1
                most_files = max(most_files, open_files(worker))
                time.sleep(0.01)
        connected = sum(json.loads(report)["connected"] for report in reports)
        server = {"server": "device-0000", "worker": "0"}
        # Handshakes the kernel finished while the accept queue was full wait for a SYN-ACK
        # retransmission to be accepted: count what the farm accepted once it settles.
        seen: list[float | None] = []

        def settled() -> bool:
            samples = scrape(farm)
            seen.append(value(samples, "modbus_farm_connections_accepted_total", **server))
            return len(seen) > 10 and seen[-1] == seen[-10]

        wait_for(settled, 60, "the flood's connections to be counted", interval=0.2)
        accepted = seen[-1] or 0
        refused = closed(farm, "device-0000", reason)
        open_now = value(scrape(farm), "modbus_farm_connections_open", **server) or 0
        for index in (1, 2, 3):
            assert read_registers(farm.port(index), 0, 1) == [0]
        ends = [json.loads(flood.communicate(timeout=30)[0]) for flood in floods]
    finally:
        for flood in floods:
            if flood.poll() is None:
                flood.kill()
                flood.communicate()
        code, _, stderr = farm.stop()
    print(
        f"flood: {connected} connections made, {accepted:.0f} accepted, {refused:.0f} refused "
        f"({reason}), {open_now:.0f} kept; worker 0 held at most {most_files} files; "
        f"{answered} reads of the other devices answered meanwhile"
    )
    assert code == 0, stderr
    assert accepted > 20_000  # more than the worker's open-files limit
    assert refused == accepted - open_now  # everything it did not keep was refused, counted
    assert sum(end["closed"] for end in ends) >= refused  # as the floods saw it
    assert answered >= 30
    if reason == "max_connections":
        assert open_now == 64  # it kept its first 64
        assert most_files < 1_000
    else:
        assert most_files < 20_000  # the cap kept the worker inside its limit
    assert "refused a connection" in stderr  # said in the log, once per window


def test_slowloris_and_idle_connections_are_closed_and_counted() -> None:
    extra = ["--frame-timeout", "2", "--idle-timeout", "3", "--log-format", "json"]
    farm = start_farm(2, workers=1, extra=extra)
    try:
        farm.wait_ready()
        port = farm.port(0)
        slow = socket.create_connection((HOST, port), timeout=5)
        idle = socket.create_connection((HOST, port), timeout=5)
        busy = Bystander(port, limit_s=30)
        busy.start()
        # A frame whose length field promises 254 bytes, sent a byte every 500 ms: not idle,
        # never finished.
        frame = mbap(1, 1, bytes([3]) + bytes(252))
        began = time.monotonic()
        slow_closed_after: float | None = None
        for byte in frame:
            try:
                slow.send(bytes([byte]))
            except OSError:
                slow_closed_after = time.monotonic() - began
                break
            if closed_by_peer(slow, 0.5) is not None:
                slow_closed_after = time.monotonic() - began
                break
        idle_closed_after = None  # counted from the same start as the slowloris
        if closed_by_peer(idle, 10) is not None:
            idle_closed_after = time.monotonic() - began
        busy.done.set()
        busy.join(10)
        samples = scrape(farm)
        server = {"server": "device-0000", "worker": "0"}
        counts = {
            reason: value(samples, "modbus_farm_connections_closed_total", **server, reason=reason)
            for reason in ("frame_timeout", "idle_timeout")
        }
        slow.close()
        idle.close()
    finally:
        code, _, stderr = farm.stop()
    print(f"slowloris closed after {slow_closed_after} s, idle after {idle_closed_after} s")
    assert code == 0, stderr
    # Not before the timeout; after it within a tick (250 ms), with room for a busy machine.
    assert slow_closed_after is not None and 2.0 <= slow_closed_after < 2.0 + 5
    assert idle_closed_after is not None and 3.0 <= idle_closed_after < 3.0 + 5
    assert counts == {"frame_timeout": 1, "idle_timeout": 1}
    assert not busy.failures and len(busy.latencies) > 20  # a talking client is left alone
    said = logged(stderr, "device-0000")  # and each close is a line of the farm's log
    assert said["frame_timeout"]["worker"] == said["idle_timeout"]["worker"] == 0, said


def test_a_faulted_server_closes_a_slowloris_and_a_malformed_frame_as_any_other() -> None:
    """A server with a fault active answers through farm.worker.faults.hooks, not the fast path:
    the frame timeout and the malformed-frame close (counted, said) hold there too."""
    farm = start_farm(2, workers=1, extra=["--frame-timeout", "2", "--log-format", "json"])
    try:
        farm.wait_ready()
        FarmClient.at(HOST, farm.api_port).fault("delay", target="device-0000", ms=1)
        port = farm.port(0)
        with socket.create_connection((HOST, port), timeout=5) as sock:
            sock.sendall(mbap(1, 1, b"\x03\x00\x00\x00\x01"))
            assert read_frame(sock)[7] == 3  # answered, through the fault
        began, stuck_for = time.monotonic(), None
        with socket.create_connection((HOST, port), timeout=5) as slow:
            for byte in mbap(1, 1, bytes([3]) + bytes(252)):  # never finished
                with contextlib.suppress(OSError):
                    slow.send(bytes([byte]))
                if closed_by_peer(slow, 0.5) is not None:
                    stuck_for = time.monotonic() - began
                    break
        with socket.create_connection((HOST, port), timeout=5) as bad:
            bad.sendall(struct.pack(">HHHB", 1, 1, 6, 1) + b"\x03\x00\x00\x00\x01")
            assert closed_by_peer(bad, 5) is not None
        wait_for(lambda: closed(farm, "device-0000", "malformed_frame") == 1, 10, "the count")
        assert closed(farm, "device-0000", "frame_timeout") == 1
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    assert stuck_for is not None and 2.0 <= stuck_for < 2.0 + 5, stuck_for
    said = logged(stderr, "device-0000")
    assert said["malformed_frame"]["fields"]["detail"] == "protocol id 1", said
    assert "frame_timeout" in said, said


CONFIG = """
templates:
  meter:
    units: [{unit_id: 1, holding_registers: 10}]
    connections: {max: 2, policy: close_oldest, idle_timeout_s: 120, frame_timeout_s: 5}
  plc:
    units: [{unit_id: 1, holding_registers: 10}]
    connections: {max: 2, policy: refuse}
fleets:
  - {name: meters, template: meter, count: 1, addressing: {port_start: PORT}}
  - {name: plcs, template: plc, count: 1, addressing: {port_start: NEXT}}
"""


def test_policies_close_the_oldest_or_refuse_the_newcomer(tmp_path: Path) -> None:
    port = free_port_range(2)
    config = tmp_path / "farm.yaml"
    config.write_text(CONFIG.replace("PORT", str(port)).replace("NEXT", str(port + 1)))
    farm = FarmProcess(
        count=2, workers=1, port_base=port, api_port=free_port(), file=str(config),
        extra=["--log-format", "json"],
    )  # fmt: skip
    farm.start()
    held: dict[int, list[socket.socket]] = {}
    try:
        farm.wait_ready()
        for target in (port, port + 1):
            held[target] = []
            for _ in range(3):
                sock = socket.create_connection((HOST, target), timeout=5)
                held[target].append(sock)
                sock.sendall(mbap(1, 1, b"\x03\x00\x00\x00\x01"))  # accepted in order
                with contextlib.suppress(OSError, AssertionError):
                    read_frame(sock)
        first, second, third = held[port]
        assert closed_by_peer(first, 5) is not None  # close_oldest: the oldest went
        assert closed_by_peer(second, 0.5) is None and closed_by_peer(third, 0.5) is None
        first, second, third = held[port + 1]
        assert closed_by_peer(third, 5) is not None  # refuse: the newcomer went
        assert closed_by_peer(first, 0.5) is None and closed_by_peer(second, 0.5) is None
        samples = scrape(farm)
        meter = {"server": "meters-0000", "worker": "0"}
        plc = {"server": "plcs-0000", "worker": "0"}
        name = "modbus_farm_connections_closed_total"
        assert value(samples, name, **meter, reason="close_oldest") == 1
        assert value(samples, name, **plc, reason="max_connections") == 1
    finally:
        for socks in held.values():
            for sock in socks:
                sock.close()
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    assert "close_oldest" in logged(stderr, "meters-0000")
    refused = logged(stderr, "plcs-0000")["connection_limit"]
    assert refused["fields"]["reason"] == "max_connections" and refused["level"] == "warning"


def logged(stderr: str, server: str) -> dict[str, dict[str, Any]]:
    """The JSON log lines (`--log-format json`) about one server, by event (the last one)."""
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return {r["event"]: r for r in records if r["server"] == server}


class _Loop:
    """Just enough of a loop for the timer wheel, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any, *args: Any) -> None:
        pass

    call_at = call_later


class _Transport:
    def __init__(self) -> None:
        self.closed = False
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def close(self) -> None:
        self.closed = True

    abort = close

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_the_wheel_closes_stuck_and_silent_connections_and_no_others() -> None:
    """In process, on a clock the test moves: frame timeout 1 s, idle timeout 3 s."""
    from farm.config.templates import ConnectionLimits
    from farm.ipc.stats import CLOSED_FRAME_TIMEOUT, CLOSED_IDLE, local_counters
    from farm.worker.engine import Device
    from farm.worker.events import EventLog
    from farm.worker.limits.guard import ServerConnections, WorkerConnections
    from farm.worker.transports.connection import ModbusConnection
    from tests.fuzzer import Shadow  # a device over banks in this process

    said: list[Any] = []
    worker = WorkerConnections(cap=100, events=EventLog(0, send=said.append))
    loop = _Loop()
    worker.wheel.start(cast(Any, loop))
    counters = local_counters()
    device: Device = Shadow.default_device(counters)
    limits = ConnectionLimits(max=10, idle_timeout_s=3, frame_timeout_s=1)
    guard = ServerConnections("d", limits, counters, worker)
    names = ("streaming", "slowloris", "silent", "paused")
    connections = {name: ModbusConnection(device, guard) for name in names}
    transports = {name: _Transport() for name in names}
    for name in names:
        connections[name].connection_made(cast(Any, transports[name]))
    frame = mbap(1, 1, b"\x03\x00\x00\x00\x01")
    connections["paused"].pause_writing()
    closed_at: dict[str, float] = {}
    for step in range(1, 41):  # 10 s
        loop.now = step * 0.25
        # Whole frames and the start of the next one, every read: never stuck.
        head = frame[5:] if step > 1 else b""  # the rest of the last read's unfinished frame
        connections["streaming"].data_received(head + frame * 3 + frame[:5])
        if step % 2:
            connections["slowloris"].data_received(b"\x00")  # a byte every 500 ms
        worker.wheel._sweep(cast(Any, loop))
        for name in names:
            if transports[name].closed and name not in closed_at:
                closed_at[name] = loop.now
                connections[name].connection_lost(None)
    assert set(closed_at) == {"slowloris", "silent"}, closed_at
    assert 1.0 <= closed_at["slowloris"] <= 1.5
    assert 3.0 <= closed_at["silent"] <= 3.5
    assert counters[CLOSED_FRAME_TIMEOUT] == 1 and counters[CLOSED_IDLE] == 1
    assert transports["streaming"].written > 0
    assert len(worker.wheel) <= 2 * len(names)  # no timer per request
