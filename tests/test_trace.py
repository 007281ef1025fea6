"""`farm trace`: every request and answer of one server, decoded; `--pcap` writes a capture
that tshark dissects as Modbus over TCP (mbtcp), UDP (mbudp) and RTU over TCP (mbrtu), with
no malformed packet. Real peers: pymodbus's TCP client, its UDP client, its RTU framer."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient, ModbusUdpClient
from pymodbus.framer import FramerType

from farm.client import FarmClient
from tests.conftest import config_farm
from tests.farmproc import HOST, FarmProcess
from tests.tools import tool

pytestmark = pytest.mark.timeout(240)


def config(port: int) -> str:
    return f"""
templates:
  meter:
    units:
      - {{unit_id: 1, coils: 16, discrete_inputs: 16, holding_registers: 100, input_registers: 10}}
fleets:
  - {{name: plain, template: meter, count: 1, name_pattern: "plain-{{i}}",
     addressing: {{host: 127.0.0.1, port_start: {port}}}}}
  - {{name: serial, template: meter, count: 1, name_pattern: "serial-{{i}}",
     transport: rtu-over-tcp, addressing: {{host: 127.0.0.1, port_start: {port + 1}}}}}
  - {{name: datagram, template: meter, count: 1, name_pattern: "datagram-{{i}}",
     transport: udp, addressing: {{host: 127.0.0.1, port_start: {port + 2}}}}}
"""


@pytest.fixture(scope="module")
def farm() -> Iterator[FarmProcess]:
    with config_farm(config, 3) as running:
        yield running


def polling(make: Callable[[], Any], stop: threading.Event) -> threading.Thread:
    """A client that writes then reads, again and again, until `stop`."""

    def run() -> None:
        client = make()
        client.connect()
        value = 0
        try:
            while not stop.is_set():
                value += 1
                client.write_register(5, value, device_id=1)
                client.read_holding_registers(5, count=2, device_id=1)
                client.read_holding_registers(500, count=2, device_id=1)  # exception 02
                time.sleep(0.05)
        finally:
            client.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


CLIENTS = {
    "plain-0": (
        lambda port: ModbusTcpClient(HOST, port=port, timeout=2, retries=0),
        "mbtcp",
        "tcp",
    ),
    "serial-0": (
        lambda port: ModbusTcpClient(HOST, port=port, framer=FramerType.RTU, timeout=2, retries=0),
        "mbrtu",
        "tcp",
    ),
    "datagram-0": (
        lambda port: ModbusUdpClient(HOST, port=port, timeout=2, retries=0),
        "mbudp",
        "udp",
    ),
}


@pytest.mark.parametrize("server", list(CLIENTS))
def test_trace_prints_requests_and_writes_a_capture_tshark_reads_as_modbus(
    farm: FarmProcess, server: str, tmp_path: Path
) -> None:
    make, dissector, layer = CLIENTS[server]
    port = FarmClient.at(HOST, farm.api_port).server(server).info.host_port[1]
    stop = threading.Event()
    thread = polling(lambda: make(port), stop)
    capture = tmp_path / "trace.pcap"
    try:
        shown = subprocess.run(
            [sys.executable, "-m", "farm", "trace", server, "--for", "2s", "--pcap",
             str(capture), "--api-port", str(farm.api_port)],
            capture_output=True, text=True, timeout=60,
            env={key: value for key, value in os.environ.items() if key != "COLUMNS"},
        )  # fmt: skip
    finally:
        stop.set()
        thread.join(10)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert any("fc 6 write register 5 = " in line for line in lines), shown.stdout
    assert any("fc 3 read holding_registers 5 x2 -> " in line for line in lines)
    assert any("read holding_registers 500 x2 exception 02" in line for line in lines)
    assert f"{HOST}:" in lines[0] and " ms" in lines[0]
    dissected = subprocess.run(
        [tool("tshark"), "-r", str(capture), "-o", f"{dissector}.{layer}.port:{port}",
         "-T", "fields", "-e", "frame.protocols", "-e", "modbus.func_code", "-e", "modbus.exception_code", "-e", "_ws.malformed"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert dissected.returncode == 0, dissected.stderr
    rows = [row.split("\t") for row in dissected.stdout.splitlines()]
    assert len(rows) >= 2 * 3 * 10, dissected.stdout[:2000]  # 20 rounds a second, 3 requests
    assert all(dissector in row[0] and "modbus" in row[0] for row in rows), dissected.stdout[:2000]
    summary = subprocess.run(
        [tool("tshark"), "-r", str(capture), "-o", f"{dissector}.{layer}.port:{port}"],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    if layer == "tcp":  # tshark 4.0 tells Modbus/UDP queries from responses by port 502 only
        assert "Query" in summary and "Response" in summary, summary[:2000]
        assert "Unable to classify" not in summary, summary[:2000]
    assert not any(row[3:] and row[3] for row in rows), dissected.stdout[:2000]  # no malformed
    assert {"3", "6"} <= {row[1] for row in rows}, dissected.stdout[:2000]
    assert "2" in {row[2] for row in rows}, dissected.stdout[:2000]  # the exception 02 answers


def test_tracing_costs_nothing_once_it_ends(farm: FarmProcess) -> None:
    api = FarmClient.at(HOST, farm.api_port)
    assert api.trace("plain-0", seconds=0.2)["records"] == []  # nobody asked meanwhile
    port = api.server("plain-0").info.host_port[1]
    client = ModbusTcpClient(HOST, port=port, timeout=2, retries=0)
    assert client.connect()
    try:
        assert not client.read_holding_registers(0, count=1, device_id=1).isError()
    finally:
        client.close()
    for path in ("/api/v1/servers/nope/trace?seconds=1", "/api/v1/clients?server=nope"):
        code, body = farm.http("GET", path)
        assert code == 404 and "no server named 'nope'" in body["error"], body
