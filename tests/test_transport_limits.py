"""Careless and hostile clients of RTU over TCP and TLS, as tests/test_connections.py has them
for plain TCP: clients that pipeline and never read cost bounded memory (with a fault active
or not), a half RTU frame is closed by the frame timeout, and a long pipelined burst read
slowly comes back whole and in order."""

from __future__ import annotations

import contextlib
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.client import FarmClient
from farm.modbus import rtu
from tests.conftest import start_farm
from tests.farmproc import HOST, FarmProcess
from tests.prometheus_server import scrape, value
from tests.rawmodbus import (
    Bystander,
    assert_keeps_its_latency,
    closed_by_peer,
    mbap,
    p90,
    read_frame,
    read_rtu_frame,
    rss_bytes,
    usual_latency,
)

pytestmark = pytest.mark.timeout(180)
RTU = ["--transport", "rtu-over-tcp"]
FC3_125 = rtu.frame(1, struct.pack(">BHH", 3, 0, 125))  # 8 bytes in, 255 out
HOGS = 4  # each one read's worth (~256 KB of requests) was ~8 MB of answers before


@pytest.fixture
def farm4() -> Iterator[FarmProcess]:
    """4 RTU servers on 2 workers: servers 0 and 2 share worker 0."""
    farm = start_farm(4, workers=2, extra=RTU)
    try:
        farm.wait_ready()
        yield farm
    finally:
        code, _, stderr = farm.stop()
        assert code == 0, stderr


def closed(farm: FarmProcess, reason: str) -> float:
    labels = {"server": "device-0000", "worker": "0", "reason": reason}
    return value(scrape(farm), "modbus_farm_connections_closed_total", **labels) or 0


@pytest.mark.parametrize("fault", [None, "delay"], ids=["no-fault", "delay-fault"])
def test_rtu_clients_that_never_read_cost_bounded_memory(
    farm4: FarmProcess, fault: str | None
) -> None:
    """4 connections pipelining FC 3 x 125 with CRC for 12 s, no answer ever read: the worker
    stops reading them a chunk past 64 KiB of answers (before: one read of ~32,000 requests
    was answered whole, ~8 MB a connection, or held by a delay fault), its RSS stays within
    a few MiB, and its neighbour keeps its latency."""
    farm = farm4
    client = FarmClient.at(HOST, farm.api_port)
    worker = farm.worker_pids()[0]
    before = usual_latency(farm.port(2), 3.0, framing="rtu")
    held = client.fault("delay", target="device-0000", ms=30_000) if fault else None
    rss_before = rss_bytes(worker)
    batch = FC3_125 * 150  # 1,200 bytes in, 38,250 out
    sent = 0
    hogs = [socket.create_connection((HOST, farm.port(0)), timeout=5) for _ in range(HOGS)]
    try:
        bystander = Bystander(farm.port(2), framing="rtu")
        control = Bystander(farm.port(3), framing="rtu")  # the other worker, meanwhile
        bystander.start()
        control.start()
        peak = rss_before
        deadline = time.monotonic() + 12.0
        while time.monotonic() < deadline:
            for hog in hogs:
                hog.settimeout(0.05)
                with contextlib.suppress(TimeoutError):  # the farm stopped reading it
                    sent += hog.send(batch)
            peak = max(peak, rss_bytes(worker))
        bystander.done.set()
        control.done.set()
        bystander.join(10)
        control.join(10)
        labels = {"server": "device-0000", "worker": "0"}
        read = value(scrape(farm), "modbus_farm_received_bytes_total", **labels)
    finally:
        for hog in hogs:
            hog.close()
    if held is not None:
        client.clear_fault(held.id)
    growth = peak - rss_before
    during = bystander.latencies
    print(
        f"{HOGS} never-reading RTU clients ({fault}): sent {sent / 2**20:.1f} MiB, farm read "
        f"{(read or 0) / 2**20:.1f} MiB; worker RSS +{growth / 2**20:.1f} MiB; neighbour "
        f"p50/p90 before {statistics.median(before) * 1e3:.2f}/{p90(before) * 1e3:.2f} ms, "
        f"during {statistics.median(during) * 1e3:.2f}/{p90(during) * 1e3:.2f} ms; other "
        f"worker's device meanwhile {statistics.median(control.latencies) * 1e3:.2f}/"
        f"{p90(control.latencies) * 1e3:.2f} ms"
    )
    assert growth < 8 * 2**20, f"worker RSS +{growth / 2**20:.1f} MiB"
    assert not bystander.failures, bystander.failures
    assert len(during) > 50
    assert not control.failures, control.failures
    assert_keeps_its_latency(during, control.latencies)
    assert farm.worker_pids()[0] == worker  # never replaced: its loop kept running
    if held is None:
        assert usual_latency(farm.port(0), 0.5, framing="rtu")  # the hogs' device answers


def read_rtu(sock: socket.socket, count: int) -> list[bytes]:
    return [read_rtu_frame(sock) for _ in range(count)]


@pytest.mark.parametrize("delay_ms", [0, 200], ids=["no-fault", "delay-fault"])
def test_a_long_rtu_burst_read_slowly_is_answered_whole_and_in_order(
    farm4: FarmProcess, delay_ms: int
) -> None:
    """3,000 pipelined reads of 1 to 125 registers, by a client with a small receive buffer
    that starts reading after 1 s: the farm pauses and resumes that connection (and its
    outbox, with a delay fault) and every answer arrives, in request order, CRC intact."""
    if delay_ms:
        FarmClient.at(HOST, farm4.api_port).fault("delay", target="device-0001", ms=delay_ms)
    count = 3000
    quantities = [1 + number % 125 for number in range(count)]
    burst = b"".join(rtu.frame(1, struct.pack(">BHH", 3, 0, q)) for q in quantities)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect((HOST, farm4.port(1)))
        sender = threading.Thread(target=sock.sendall, args=(burst,), daemon=True)
        sender.start()
        time.sleep(1.0)  # not a wait for something: the client is slow to read, on purpose
        answers = read_rtu(sock, count)
        sender.join(10)
    assert [answer[2] for answer in answers] == [2 * q for q in quantities]
    assert all(
        answer[:2] == b"\x01\x03" and rtu.crc_ok(answer, 0, len(answer)) for answer in answers
    )


@pytest.mark.parametrize("fault", [False, True], ids=["no-fault", "delay-fault"])
def test_an_rtu_slowloris_is_closed_by_the_frame_timeout(fault: bool) -> None:
    """A TCP stream keeps no silence to end a half RTU frame: the frame timeout closes a
    connection that sends a frame a byte every 500 ms (before: held as long as it sent),
    counted, on the fast path and on a faulted server's."""
    farm = start_farm(2, workers=1, extra=[*RTU, "--frame-timeout", "2"])
    try:
        farm.wait_ready()
        port = farm.port(0)
        if fault:
            FarmClient.at(HOST, farm.api_port).fault("delay", target="device-0000", ms=1)
        with socket.create_connection((HOST, port), timeout=5) as sock:
            sock.sendall(rtu.frame(1, b"\x03\x00\x00\x00\x01"))
            assert read_rtu_frame(sock)[:2] == b"\x01\x03"  # answered (through the fault)
        # FC 16 of 123 registers: 255 bytes, never finished.
        data = bytes(246)
        frame = rtu.frame(1, struct.pack(">BHHB", 16, 0, 123, len(data)) + data)
        began, stuck_for = time.monotonic(), None
        with socket.create_connection((HOST, port), timeout=5) as slow:
            for byte in frame[:20]:  # 10 s of it at most
                with contextlib.suppress(OSError):
                    slow.send(bytes([byte]))
                if closed_by_peer(slow, 0.5) is not None:
                    stuck_for = time.monotonic() - began
                    break
        assert closed(farm, "frame_timeout") == 1
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    assert stuck_for is not None and 2.0 <= stuck_for < 2.0 + 5, stuck_for


def test_tls_clients_that_never_read_cost_bounded_memory(tmp_path: Path) -> None:
    """TLS's decrypted stream goes through the engine's connection, and its backpressure:
    4 clients pipelining FC 3 x 125 for 10 s without reading cost the worker a few MiB (TLS
    reads at most 64 KiB of records ahead of a paused connection; uvloop's TLS layer keeps a
    256 KiB read buffer per connection besides), and the worker's other device answers."""
    made = subprocess.run(
        [sys.executable, "-m", "farm", "certs", str(tmp_path)], capture_output=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    context.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
    farm = start_farm(2, workers=1, extra=["--transport", "tls", "--certs", str(tmp_path)])
    try:
        farm.wait_ready()
        worker = farm.worker_pids()[0]

        def connect(port: int) -> ssl.SSLSocket:
            sock = socket.create_connection((HOST, port), timeout=5)
            return context.wrap_socket(sock, server_hostname=HOST)

        hogs = [connect(farm.port(0)) for _ in range(HOGS)]
        farm.wait_settled()  # the baseline once the worker's RSS holds still
        rss_before = rss_bytes(worker)
        peak, sent = rss_before, 0
        batch = b"".join(mbap(t, 1, struct.pack(">BHH", 3, 0, 125)) for t in range(100))
        deadline = time.monotonic() + 10.0
        try:
            while time.monotonic() < deadline:
                for hog in hogs:
                    hog.settimeout(0.05)
                    with contextlib.suppress(TimeoutError, ssl.SSLWantWriteError):
                        sent += hog.send(batch)
                peak = max(peak, rss_bytes(worker))
            with connect(farm.port(1)) as other:
                other.sendall(mbap(9, 1, b"\x03\x00\x00\x00\x01"))
                answer = read_frame(other)
        finally:
            for hog in hogs:
                hog.close()
        assert farm.worker_pids()[0] == worker
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    growth = peak - rss_before
    print(
        f"{HOGS} never-reading TLS clients: sent {sent / 2**20:.1f} MiB, RSS +{growth / 2**20:.1f} MiB"
    )
    assert sent > 2 * 2**20  # enough that unread answers would have shown
    assert growth < 8 * 2**20, f"worker RSS +{growth / 2**20:.1f} MiB"
    assert answer[:2] == b"\x00\x09" and answer[7] == 3


def test_tls_connections_count_against_the_limits_during_their_handshake(tmp_path: Path) -> None:
    """A TLS connection is admitted at TCP accept, not after its handshake (before: up to
    10 s of handshaking connections counted against neither `max` nor the worker's cap).
    3 raw TCP connections that never start a handshake fill a device whose `max` is 3: the
    next one is refused at once, counted, and the stalled three are closed by the frame
    timeout (2 s), counted; then a real TLS client gets in and is answered."""
    made = subprocess.run(
        [sys.executable, "-m", "farm", "certs", str(tmp_path)], capture_output=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    context.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
    extra = ["--transport", "tls", "--certs", str(tmp_path), "--max-connections", "3"]
    farm = start_farm(2, workers=1, extra=[*extra, "--frame-timeout", "2"])
    try:
        farm.wait_ready()
        port = farm.port(0)
        stalled = [socket.create_connection((HOST, port), timeout=5) for _ in range(3)]
        try:
            began = time.monotonic()
            with socket.create_connection((HOST, port), timeout=5) as late:
                refused_after = closed_by_peer(late, 5.0)
            assert refused_after is not None, "a 4th connection was let in past max 3"
            assert time.monotonic() - began < 5.0
            assert closed(farm, "max_connections") == 1
            # The stalled handshakes end at the frame timeout (2 s; 15 s of margin).
            ends = [closed_by_peer(sock, 15.0) for sock in stalled]
        finally:
            for sock in stalled:
                sock.close()
        assert all(end is not None for end in ends), ends
        assert closed(farm, "frame_timeout") == 3
        with context.wrap_socket(
            socket.create_connection((HOST, port), timeout=5), server_hostname=HOST
        ) as client:
            client.sendall(mbap(9, 1, b"\x03\x00\x00\x00\x01"))
            answer = read_frame(client)
        assert answer[:2] == b"\x00\x09" and answer[7] == 3
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr


@pytest.mark.parametrize("transport", ["rtu-over-tcp", "tls"])
def test_a_flood_of_never_reading_clients_leaves_the_worker_and_its_neighbour_answering(
    tmp_path: Path, transport: str
) -> None:
    """50 clients pipelining FC 3 x 125 for 10 s at one device, never reading (issue 18, 4):
    the kernel takes only a bounded send buffer of answers from each (before: megabytes,
    all answered before backpressure saw anything, seconds of the loop; the master found no
    heartbeat and replaced the worker with its devices). The worker is never replaced, and
    a device beside the flood answers every read, each within the 3 s heartbeat deadline
    (measured: 0.2-0.8 s)."""
    extra = ["--transport", transport]
    context = None
    if transport == "tls":
        made = subprocess.run(
            [sys.executable, "-m", "farm", "certs", str(tmp_path)], capture_output=True, timeout=60
        )
        assert made.returncode == 0, made.stderr
        extra += ["--certs", str(tmp_path)]
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        context.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
    framing = "rtu" if transport == "rtu-over-tcp" else "mbap"
    read_125 = struct.pack(">BHH", 3, 0, 125)
    one = rtu.frame(1, read_125) if framing == "rtu" else mbap(1, 1, read_125)
    batch = one * 150
    farm = start_farm(2, workers=1, extra=extra)
    try:
        farm.wait_ready()
        worker = farm.worker_pids()[0]
        bystander = Bystander(farm.port(1), framing=framing, tls=context)
        hogs = []
        try:
            for _ in range(50):
                sock = socket.create_connection((HOST, farm.port(0)), timeout=5)
                hogs.append(context.wrap_socket(sock, server_hostname=HOST) if context else sock)
            bystander.start()
            for hog in hogs:
                hog.setblocking(False)
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and not bystander.failures:
                for hog in hogs:
                    with contextlib.suppress(BlockingIOError, ssl.SSLError, ConnectionError):
                        hog.send(batch)
                time.sleep(0.001)
        finally:
            bystander.done.set()
            bystander.join(10)
            for hog in hogs:
                hog.close()
        latencies = bystander.latencies
        print(
            f"50 never-reading {transport} clients: neighbour {len(latencies)} reads, "
            f"p99 {statistics.quantiles(latencies, n=100)[-1] * 1e3:.1f} ms, "
            f"max {max(latencies, default=0) * 1e3:.0f} ms"
        )
        assert not bystander.failures, bystander.failures
        assert farm.worker_pids()[0] == worker  # never replaced: its heartbeat kept coming
        assert len(latencies) > 50
        assert max(latencies) < 3.0, max(latencies)
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
