"""`farm targets` and GET /api/v1/targets: the device list a SCADA imports, and a SCADA's
reads by that list.

A farm of two templates listening on 0.0.0.0 (as in a container): the list names every
device at the address its API was reached at, with each point's table, address, type,
orders, scale and access; then pymodbus reads every point of every device where the list
says, and the values decode as the config file defines them.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pymodbus.client import ModbusTcpClient

from farm.master.http.targets import TargetList
from tests.conftest import ready_config_farm
from tests.farmproc import HOST, FarmProcess

CONFIG = """\
templates:
  meter:
    units: [{{unit_id: 3, input_registers: 100, holding_registers: 100}}]
    points:
      - {{name: volts, table: input_registers, address: 10, type: float32, word_order: little, value: 230.5}}
      - {{name: setpoint, table: holding_registers, address: 2, type: int16, scale: 0.1, value: -21.5}}
      - {{name: serial, table: holding_registers, address: 20, type: uint32, writable: false, value: 123456789}}
fleets:
  - {{name: meters, template: meter, count: 3, addressing: {{host: 0.0.0.0, port_start: {meters}}}}}
  - {{name: plain, template: default, count: 2, addressing: {{host: 0.0.0.0, port_start: {plain}}}}}
"""


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FarmProcess]:
    directory = str(tmp_path_factory.mktemp("targets"))
    running = ready_config_farm(
        lambda base: CONFIG.format(meters=base, plain=base + 3), 5, directory
    )
    try:
        yield running
    finally:
        code, _, stderr = running.stop()
        assert code == 0, stderr


def targets(farm: FarmProcess, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "farm", "targets", "--api-port", str(farm.api_port), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_json_lists_each_device_with_its_points(farm: FarmProcess) -> None:
    devices = json.loads(targets(farm, "--format", "json"))["devices"]
    assert [d["name"] for d in devices] == [
        "meters-0000", "meters-0001", "meters-0002", "plain-0000", "plain-0001",
    ]  # fmt: skip
    assert {d["ip"] for d in devices} == {HOST}  # 0.0.0.0 is where the API was reached
    meter = devices[1]
    assert meter["port"] == farm.port_base + 1 and meter["unit_ids"] == [3]
    assert meter["template"] == "meter" and meter["transport"] == "tcp"
    assert meter["points"][0] == {
        "name": "volts", "unit_id": 3, "table": "input_registers", "address": 10,
        "count": 2, "type": "float32", "byte_order": "big", "word_order": "little",
        "scale": 1.0, "writable": False,
    }  # fmt: skip
    assert [p["writable"] for p in meter["points"]] == [False, True, False]
    assert [p["name"] for p in devices[3]["points"]][:2] == ["uptime_s", "temperature_dc"]
    elsewhere = json.loads(targets(farm, "--format", "json", "--target-host", "10.1.2.3"))
    assert {d["ip"] for d in elsewhere["devices"]} == {"10.1.2.3"}


def test_a_scada_reads_every_point_where_the_csv_says(farm: FarmProcess) -> None:
    rows = list(csv.DictReader(io.StringIO(targets(farm))))
    assert len(rows) == 3 * 3 + 2 * 5
    values: dict[tuple[str, str], float] = {}
    for row in rows:
        client = ModbusTcpClient(row["ip"], port=int(row["port"]), timeout=5, retries=1)
        try:
            assert client.connect()
            address, count, unit = int(row["address"]), int(row["count"]), int(row["unit_id"])
            if row["table"] == "discrete_inputs":
                reply = client.read_discrete_inputs(address, count=count, device_id=unit)
                assert not reply.isError(), reply
                continue
            read = (
                client.read_input_registers
                if row["table"] == "input_registers"
                else client.read_holding_registers
            )
            reply = read(address, count=count, device_id=unit)
            assert not reply.isError(), (row, reply)
            words = reply.registers
            if row["word_order"] == "little":
                words = words[::-1]
            raw = b"".join(struct.pack(">H", word) for word in words)
            kind = {"float32": ">f", "int16": ">h", "uint32": ">I", "uint16": ">H"}[row["type"]]
            values[(row["device"], row["point"])] = struct.unpack(kind, raw)[0] * float(
                row["scale"]
            )
        finally:
            client.close()
    assert values[("meters-0002", "volts")] == pytest.approx(230.5)
    assert values[("meters-0000", "setpoint")] == pytest.approx(-21.5)
    assert values[("meters-0001", "serial")] == 123456789


def test_the_api_lists_templates_once(farm: FarmProcess) -> None:
    body = farm.api("/api/v1/targets")
    assert sorted(body["templates"]) == ["default", "meter"]
    assert body["shard"] == {"index": 0, "count": 1, "start": 0, "stop": 5, "fleet_total": 5}
    assert {d["ip"] for d in body["devices"]} == {"0.0.0.0"}  # the bound address, as is
    assert farm.api("/api/v1/targets") == body  # built once, served the same
    TargetList.model_validate(body)  # what GET /api/v1/openapi.json documents, no more
