"""Test support: Modbus/TCP (and RTU over TCP) by hand over plain sockets, a bystander that
times a server's answers, and what /proc says about a process.

For tests that need what no real master does on purpose (never reading, half frames,
thousands of connections) or that must touch hundreds of servers quickly.
"""

from __future__ import annotations

import os
import socket
import ssl
import statistics
import struct
import threading
import time

from farm.modbus import mbap as wire
from farm.modbus import pdu, rtu
from tests.farmproc import HOST

_PAGE = os.sysconf("SC_PAGE_SIZE")


mbap = wire.frame  # transaction, unit, PDU -> MBAP frame


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"connection closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def read_frame(sock: socket.socket) -> bytes:
    """One MBAP frame (header included)."""
    header = read_exactly(sock, wire.HEADER_SIZE)
    return header + read_exactly(sock, wire.frame_size(header) - wire.HEADER_SIZE)


def read_rtu_frame(sock: socket.socket) -> bytes:
    """One RTU response frame (unit id to CRC)."""
    data = read_exactly(sock, 3)
    while True:
        length = rtu.response_length(data, 0)
        if length < 0:  # an echo, or a function code whose answer tells no length
            length = rtu.frame_end(data, 0, length)
        if length > 0:
            return data + read_exactly(sock, length - len(data))
        assert len(data) < rtu.MAX_FRAME, f"no RTU response in {data.hex()}"
        data += read_exactly(sock, 1)


def read_registers(port: int, address: int, count: int, unit: int = 1) -> list[int]:
    """FC 3 over a fresh connection; raises on an exception response."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(mbap(1, unit, pdu.read(3, address, count)))
        frame = read_frame(sock)
    assert frame[7] == 3, f"exception {frame[7:9].hex()} from port {port}"
    return pdu.registers(frame[7:])


def write_registers(sock: socket.socket, address: int, values: list[int], unit: int = 1) -> None:
    """FC 16 on an open connection; raises on an exception response."""
    sock.sendall(mbap(7, unit, pdu.write_registers(address, values)))
    frame = read_frame(sock)
    assert frame[7] == 16, f"exception {frame[7:9].hex()}"


def closed_by_peer(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the peer closes the connection (reading and dropping anything it
    sends), or None if it is still open after `timeout`."""
    began = time.monotonic()
    sock.settimeout(0.1)
    while time.monotonic() - began < timeout:
        try:
            if not sock.recv(4096):
                return time.monotonic() - began
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - began
    return None


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def private_bytes(pid: int) -> int:
    """Resident memory less the pages shared with a file or a segment (statm's resident
    minus shared): what a leak grows. The banks' and the write journal's shared memory
    fill as clients write (bounded by their size) and count in RSS, but not here."""
    with open(f"/proc/{pid}/statm") as statm:
        fields = statm.read().split()
    return (int(fields[1]) - int(fields[2])) * _PAGE


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def assert_keeps_its_latency(during: list[float], control: list[float]) -> None:
    """A neighbour's latencies under a flood against a device's on another worker, measured
    over the same seconds: the machine's load (2 cores shared with other work) weighs on
    both alike, so only what the flood does to its worker's loop tells them apart. The
    same bounds as a comparison with the neighbour's own latency before the flood."""
    assert len(control) > 50, len(control)
    assert statistics.median(during) < 3 * statistics.median(control) + 0.005, (
        statistics.median(during),
        statistics.median(control),
    )
    assert p90(during) < 3 * p90(control) + 0.010, (p90(during), p90(control))


class Bystander(threading.Thread):
    """Reads one register of one server, one request at a time, timing each; bounded.
    `framing`: "mbap", or "rtu" for a server of RTU over TCP."""

    def __init__(
        self,
        port: int,
        limit_s: float = 90.0,
        framing: str = "mbap",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.limit_s, self.framing, self.tls = port, limit_s, framing, tls
        self.done = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        sock = socket.create_connection((HOST, self.port), timeout=5)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_hostname=HOST)
        with sock:
            transaction = 0
            while not self.done.is_set() and time.monotonic() < deadline:
                transaction = (transaction + 1) & 0xFFFF
                began = time.perf_counter()
                try:
                    self.ask(sock, transaction)
                    self.latencies.append(time.perf_counter() - began)
                except (OSError, AssertionError) as exc:
                    self.failures.append(repr(exc))
                    return
                time.sleep(0.01)

    def ask(self, sock: socket.socket, transaction: int) -> None:
        if self.framing == "rtu":
            sock.sendall(rtu.frame(1, pdu.read(3, 0, 1)))
            frame = read_rtu_frame(sock)
            assert frame[:3] == b"\x01\x03\x02" and rtu.crc_ok(frame, 0, len(frame)), frame
            return
        sock.sendall(mbap(transaction, 1, pdu.read(3, 0, 1)))
        frame = read_frame(sock)
        assert frame[:2] == struct.pack(">H", transaction) and frame[7] == 3


def usual_latency(port: int, seconds: float, framing: str = "mbap") -> list[float]:
    probe = Bystander(port, limit_s=seconds, framing=framing)
    probe.start()
    probe.join(seconds + 10)
    assert not probe.failures, probe.failures
    return probe.latencies
