"""An offline fault on a whole fleet of 2,000 servers (issue 9): the API answers, the ports
close on every worker, the farm stays responsive, and clearing it brings every server back
with its values. The servers sit at their own loopback addresses (127.61.0.1 ...) on one
port, so no range of 2,000 ports is needed; the switch stops and starts them in batches
(farm.master.fleet.switch), one message per worker and one log line per batch."""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.client import FarmClient, Fleet
from tests.farmproc import HOST, FarmProcess, free_port, refused, wait_for

pytestmark = pytest.mark.timeout(300)
COUNT = 2_000
FIRST = (127, 61, 0, 1)
SAMPLE = (0, 1, 999, 1000, 1001, 1998, 1999)  # both workers' ends and middles


def address(index: int) -> str:
    number = int.from_bytes(bytes(FIRST), "big") + index
    return socket.inet_ntoa(number.to_bytes(4, "big"))


def name(index: int) -> str:
    return f"device-{index:05d}"


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[FarmProcess]:
    for attempt in range(3):
        port = free_port()
        api_port = free_port()
        config = tmp_path / "fleet.yaml"
        config.write_text(
            "fleets:\n"
            f"  - {{name: default, template: default, count: {COUNT}, "
            f'name_pattern: "device-{{i:05d}}", '
            f"addressing: {{ip_start: {address(0)}, port: {port}}}}}\n"
        )
        running = FarmProcess(
            count=COUNT, workers=2, port_base=port, api_port=api_port, file=str(config)
        )
        running.start()
        try:
            running.wait_ready(timeout=180)
            break
        except AssertionError as error:
            running.kill()
            if "already in use" not in str(error) or attempt == 2:
                raise
    try:
        yield running
    finally:
        code, _, stderr = running.stop()
        assert code == 0, stderr
    # The batch is logged once, not once per server.
    assert stderr.count("stopped: port closed") <= 4, stderr[-2000:]
    assert "2000 servers stopped: port closed" in stderr, stderr[-2000:]
    assert "2000 servers started" in stderr, stderr[-2000:]


def holding(farm: FarmProcess, index: int) -> list[int] | None:
    """Holding registers 10-11 read by a Modbus client (None while the port is closed)."""
    request = bytes([0, 1, 0, 0, 0, 6, 1, 3, 0, 10, 0, 2])
    try:
        with socket.create_connection((address(index), farm.port_base), timeout=3) as sock:
            sock.sendall(request)
            data = b""
            while len(data) < 13:
                chunk = sock.recv(64)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    assert data[7:9] == bytes([3, 4]), data
    return [int.from_bytes(data[9:11], "big"), int.from_bytes(data[11:13], "big")]


def test_an_offline_fault_on_the_whole_fleet_and_back(farm: FarmProcess) -> None:
    api = FarmClient.at(HOST, farm.api_port)
    for index in SAMPLE:
        api.write(name(index), "holding_registers", 10, [index, 4321])
        assert holding(farm, index) == [index, 4321]

    began = time.monotonic()
    fault = api.fault("offline", target=Fleet("default"))
    print(f"offline on {len(fault.servers)} servers: API call {time.monotonic() - began:.2f} s")
    assert len(fault.servers) == COUNT
    for index in SAMPLE:
        wait_for(
            functools.partial(refused, farm.port_base, address(index)), 10, f"{name(index)} refused"
        )
    # The master answers while the fleet is down, and knows it is down.
    status = farm.status()
    assert status["servers_ready"] == 0, status
    assert api.server(name(1500)).faults, "the fault shows on its servers"

    began = time.monotonic()
    api.clear_fault(fault.id)
    print(f"cleared: API call {time.monotonic() - began:.2f} s")
    for index in SAMPLE:
        values = wait_for(functools.partial(holding, farm, index), 30, f"{name(index)} back")
        assert values == [index, 4321], (name(index), values)
    wait_for(lambda: farm.status()["servers_ready"] == COUNT, 30, "every server serving again")
