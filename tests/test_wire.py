"""What goes over the wire, judged by Wireshark's Modbus/TCP dissector (Debian's tshark).

A live capture on the loopback interface, filtered to one farm server's port, while real
clients read, write, pipeline and provoke exceptions; tshark must decode every frame as
Modbus/TCP and find nothing malformed.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from tests.farmproc import HOST, FarmProcess, wait_for
from tests.tools import tool

pytestmark = pytest.mark.timeout(120)


FIELDS = ["mbtcp.trans_id", "_ws.malformed", "_ws.expert.severity", "_ws.expert.message"]


class Capture:
    """tshark dissecting one port of the loopback interface live, a line per Modbus frame."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.log = directory / "tshark.log"
        self.rows: list[list[str]] = []
        command = [
            tool("tshark"), "-i", "lo", "-f", f"tcp port {port}", "-l", "-a", "duration:60",
            "-o", f"mbtcp.tcp.port:{port}", "-Y", "mbtcp",
            "-T", "fields", *(arg for name in FIELDS for arg in ("-e", name)),
        ]  # fmt: skip
        with self.log.open("w") as stderr:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=stderr, text=True
            )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        # "Capturing on" comes first; packets are seen only once "Capture started".
        wait_for(lambda: "Capture started" in self.log.read_text(), 30, "tshark to start capturing")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:  # ends when tshark exits (60 s at most)
            if line.strip():
                self.rows.append(line.rstrip("\n").split("\t"))

    def transactions(self) -> int:
        return sum(len([t for t in row[0].split(",") if t]) for row in list(self.rows))

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=30)
        self.reader.join(timeout=30)


@pytest.fixture
def capture(farm: FarmProcess, tmp_path: Path) -> Iterator[Capture]:
    running = Capture(farm.port(15), tmp_path)
    try:
        yield running
    finally:
        running.stop()


def traffic(port: int) -> int:
    """Reads, writes, exceptions and a pipelined burst; returns the requests sent."""
    client = ModbusTcpClient(HOST, port=port, timeout=3, retries=0)
    assert client.connect()
    try:
        client.write_registers(0, [1, 2, 3])
        client.read_holding_registers(0, count=10)
        client.read_input_registers(0, count=4)
        client.write_coils(0, [True, False, True])
        client.read_coils(0, count=16)
        client.read_discrete_inputs(0, count=8)
        client.write_coil(3, True)
        client.write_register(9, 99)
        client.read_holding_registers(5000, count=1)  # exception 02
        client.read_device_information(read_code=1)
    finally:
        client.close()
    burst = b"".join(
        struct.pack(">HHHBBHH", 100 + i, 0, 6, 1, 3, i, 2) for i in range(5)
    )  # five pipelined FC 3 requests in one segment
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(burst)
        received = b""
        while len(received) < 5 * 13:
            chunk = sock.recv(4096)
            assert chunk
            received += chunk
    return 10 + 5


def test_tshark_decodes_every_frame_and_finds_nothing_malformed(capture: Capture) -> None:
    sent = traffic(capture.port)
    wait_for(lambda: capture.transactions() >= 2 * sent, 30, "tshark to dissect every frame")
    problems = [row for row in capture.rows if row[1:] != ["", "", ""]]
    assert problems == [], problems[:5]
