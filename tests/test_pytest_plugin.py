"""The `modbus_farm` fixture (farm.pytest_plugin), used exactly as README.md shows it, and
run inside a pytest of its own to see that no process outlives a test, passed or failed."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient, ModbusTlsClient

from tests.farmproc import descendants

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


# -- from README.md, "Test against it: the pytest fixture" (test_readme_shows_this_code) --
def poll(host, port):  # type: ignore[no-untyped-def]
    """What your SCADA's driver does: read, or report the device offline."""
    client = ModbusTcpClient(host, port=port, timeout=1, retries=0)
    try:
        if not client.connect():
            return None
        return client.read_input_registers(0, count=4).registers
    finally:
        client.close()


def test_scada_survives_offline_meter(modbus_farm):  # type: ignore[no-untyped-def]
    farm = modbus_farm(count=20)  # or modbus_farm("plant.yaml")
    host, port = farm.address("device-0003")
    farm.client.fault("offline", target="device-0003", duration="2s")
    assert poll(host, port) is None  # the meter is gone...
    assert poll(*farm.address("device-0004")) is not None  # ...its neighbour is not...
    deadline = time.monotonic() + 10
    while poll(host, port) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert poll(host, port) is not None  # ...and it comes back


# -- end of the README's code --


def test_readme_shows_this_code() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    shown = next(block for block in blocks if "def test_scada_survives_offline_meter" in block)
    source = Path(__file__).read_text()
    ours = source.split("# -- from README.md")[1].split("# -- end of the README's code --")[0]
    ours = re.sub(r"  # type: ignore\[no-untyped-def\]", "", ours.split("\n", 1)[1])
    body = shown[shown.index("def poll") :]  # after the imports
    assert body.strip() == ours.strip()


def test_a_config_file_on_free_ports_plays_its_scenario(modbus_farm: Any, tmp_path: Path) -> None:
    plant = tmp_path / "plant.yaml"
    plant.write_text(
        textwrap.dedent(
            """\
            templates:
              meter:
                units: [{unit_id: 1, input_registers: 10}]
                points:
                  - {name: voltage, table: input_registers, address: 0, type: float32, value: 230}
            fleets:
              - {name: meters, template: meter, count: 3, name_pattern: "meter-{i:04d}",
                 addressing: {port_start: 502, port_end: 510}}
            scenario:
              steps:
                - {at: 0s, fault: {kind: stuck, target: meter-0001, point: voltage, value: 1}}
            """
        )
    )
    farm = modbus_farm(str(plant), args=("--log-format", "json"))
    _, port = farm.address("meter-0001")
    assert farm.addresses() == {f"meter-000{i}": (HOST, port - 1 + i) for i in range(3)}
    assert port != 502 + 1  # moved to free ports (502 needs root anyway)
    deadline = time.monotonic() + 10
    while farm.client.point("meter-0001", "voltage").value != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert farm.client.point("meter-0001", "voltage").value == 1  # `farm up FILE` played it
    assert farm.client.status()["scenario"]["state"] in ("playing", "done")
    lines = [json.loads(line) for line in farm.log().splitlines() if line.startswith("{")]
    steps = [line["message"] for line in lines if line["message"].startswith("scenario step")]
    assert steps == ["scenario step 1/1 at 0 s: stuck voltage on meter-0001"], steps


def test_a_config_files_relative_paths_still_lead_to_its_files(
    modbus_farm: Any, tmp_path: Path
) -> None:
    """The fixture serves a copy of the file from elsewhere: its TLS certificates (and
    replay CSVs) named relative to the original must still be found."""
    made = subprocess.run(
        [sys.executable, "-m", "farm", "certs", str(tmp_path / "certs")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    plant = tmp_path / "secure.yaml"
    plant.write_text(
        textwrap.dedent(
            """\
            templates:
              meter:
                units: [{unit_id: 1, holding_registers: 10}]
                points: [{name: setpoint, table: holding_registers, address: 2, value: 42}]
            fleets:
              - name: secure
                template: meter
                count: 2
                transport: tls
                tls: {certificate: certs/server.pem, key: certs/server.key, client_ca: certs/ca.pem}
                addressing: {port_start: 802, port_end: 803}
            """
        )
    )
    farm = modbus_farm(str(plant))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # pymodbus's sync client passes no server name
    context.load_verify_locations(tmp_path / "certs" / "ca.pem")
    context.load_cert_chain(tmp_path / "certs" / "client.pem", tmp_path / "certs" / "client.key")
    host, port = farm.address("secure-0001")
    client = ModbusTlsClient(host, port=port, sslctx=context, timeout=3, retries=0)
    try:
        assert client.connect()
        assert client.read_holding_registers(2, count=1, device_id=1).registers == [42]
    finally:
        client.close()


INNER = """
import os

def test_passes(modbus_farm):
    farm = modbus_farm(count=3)
    print("FARM", farm.pid, *sorted(farm_pids(farm.pid)))

def test_fails(modbus_farm):
    farm = modbus_farm(count=3)
    print("FARM", farm.pid, *sorted(farm_pids(farm.pid)))
    assert False, "this test fails on purpose"

def farm_pids(pid):
    children = {int(p) for p in os.listdir("/proc") if p.isdigit() and parent(p) == pid}
    return children | {pid}

def parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None
"""


def test_no_process_outlives_a_test_passed_or_failed(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER)
    before = descendants(os.getpid())
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert "1 failed, 1 passed" in run.stdout, run.stdout + run.stderr
    farms = re.findall(r"FARM ([\d ]+)", run.stdout)
    pids = [int(pid) for each in farms for pid in each.split()]
    assert len(farms) == 2 and len(pids) >= 8, run.stdout  # a master, its workers, twice
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
    assert alive == [], f"left behind: {alive}"
    assert descendants(os.getpid()) - before == set()


SESSION = """
import os

def test_first(modbus_farm_session):
    farm = modbus_farm_session(count=2)
    print("FARM", farm.pid)

def test_second(modbus_farm_session):
    (farm,) = modbus_farm_session.farms  # the first test's farm, still serving
    assert farm.process.poll() is None and farm.client.ready()
    print("FARM", farm.pid, *sorted(farm_pids(farm.pid)))
""" + INNER[INNER.index("def farm_pids") :]


def test_a_session_farm_serves_every_test_and_ends_with_the_session(tmp_path: Path) -> None:
    (tmp_path / "test_session.py").write_text(SESSION)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_session.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert "2 passed" in run.stdout, run.stdout + run.stderr
    first, second = (each.split() for each in re.findall(r"FARM ([\d ]+)", run.stdout))
    assert first[0] == second[0] and len(second) >= 3, run.stdout  # one master, its workers
    alive = [pid for pid in map(int, second) if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
    assert alive == [], f"left behind: {alive}"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
