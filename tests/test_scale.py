"""Fleets that change while the farm runs: scaled up and down under `farm bench` load with no
error on the servers that stay, seen by pymodbus, mbpoll, /metrics and the API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient

from farm.client import FarmAPIError, FarmClient, Servers
from tests.farmproc import (
    HOST,
    FarmProcess,
    free_port,
    free_port_range,
    port_free,
    refused,
    scalable_farm,
    squatter,
    wait_for,
)

pytestmark = pytest.mark.timeout(150)
START, ROOM = 20, 60  # servers at start; ports kept free for the fleet to grow into


@pytest.fixture
def farm() -> Iterator[FarmProcess]:
    running = scalable_farm(START, ROOM)
    try:
        yield running
    finally:
        code, _, stderr = running.stop()
        assert code == 0, stderr


def name(index: int) -> str:
    return f"device-{index:04d}"


def reads(farm: FarmProcess, index: int) -> bool:
    client = ModbusTcpClient(HOST, port=farm.port(index), timeout=3, retries=0)
    try:
        return client.connect() and not client.read_input_registers(0, count=4).isError()
    finally:
        client.close()


def metrics(farm: FarmProcess) -> str:
    with socket.create_connection((HOST, farm.api_port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        return b"".join(iter(lambda: sock.recv(1 << 16), b"")).decode()


def test_scale_up_and_down_under_load_without_an_error(farm: FarmProcess) -> None:
    api = FarmClient.at(HOST, farm.api_port)
    stays = f"{HOST}:{farm.port(0)}-{farm.port(9)}"  # never removed
    report: dict[str, Any] = {}

    def load() -> None:
        done = subprocess.run(
            [sys.executable, "-m", "farm", "bench", "-t", stays, "-c", "10", "--duration", "8",
             "--timeout", "10", "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        report.update(json.loads(done.stdout))

    bench = threading.Thread(target=load)
    bench.start()
    try:
        wait_for(lambda: api.status()["workers"][0]["requests"] > 100, 20, "the load to start")
        grown = api.scale("default", 50)
        assert grown["added"] == [name(i) for i in range(START, 50)] and grown["removed"] == []
        assert reads(farm, 49) and reads(farm, 20)  # the new ones answer at once
        status = api.status()
        assert status["servers_total"] == 50 and status["servers_ready"] == 50
        assert sorted(w["servers"] for w in status["workers"]) == [25, 25]  # least loaded
        assert api.server(name(42)).info.up
        assert f'server="{name(42)}"' in metrics(farm)
        listed = [device.name for device in api.device_list().devices]  # GET /api/v1/targets
        assert listed == [name(i) for i in range(50)]
        shrunk = api.scale("default", 12)
        assert shrunk["removed"] == [name(i) for i in range(12, 50)]
        assert refused(farm.port(30)) and refused(farm.port(12))
        assert port_free(farm.port(45))  # its port is released, not just closed to us
        assert reads(farm, 11)
        assert f'server="{name(30)}"' not in metrics(farm)
        assert [s.name for s in api.servers()] == [name(i) for i in range(12)]
        assert [device.name for device in api.device_list().devices] == [name(i) for i in range(12)]
    finally:
        bench.join(timeout=90)
    assert [w["restarts"] for w in api.status()["workers"]] == [0, 0]  # no worker restarted
    errors = ("timeouts", "connection_errors", "lost", "unexpected")
    assert {key: report[key] for key in errors} == dict.fromkeys(errors, 0), report
    assert report["exceptions_total"] == 0 and report["responses"] == report["sent"] > 0


def test_a_replaced_worker_serves_the_fleet_as_scaled(farm: FarmProcess) -> None:
    api = FarmClient.at(HOST, farm.api_port)
    api.scale("default", 30)
    fault = api.fault("stuck", target=Servers(name(25), name(3)), point="load_pct", value=77)
    api.scale("default", 24)  # device-0025 leaves: the fault keeps only device-0003
    assert api.get_fault(fault.id).servers == (name(3),)
    victim = api.status()["workers"][1]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: api.status()["servers_ready"] == 24 and api.ready(), 30, "the worker back")
    assert all(reads(farm, i) for i in (0, 1, 22, 23)) and refused(farm.port(25))
    assert api.point(name(3), "load_pct").value == 77


def test_a_scenario_scales_and_its_stop_scales_back(farm: FarmProcess) -> None:
    api = FarmClient.at(HOST, farm.api_port)
    api.play_scenario({"steps": [{"at": "0s", "scale": {"fleet": "default", "count": 26}},
                                 {"at": "200ms", "stop": {"target": name(25)}}]})  # fmt: skip
    wait_for(lambda: api.scenario()["state"] == "done", 20, "the scenario to play")
    assert len(api.servers()) == 26 and refused(farm.port(25)) and reads(farm, 24)
    api.stop_scenario()
    assert len(api.servers()) == START and refused(farm.port(24))


@pytest.mark.parametrize(
    ("fleet", "count", "status", "words"),
    [("meters", 3, 404, "no fleet 'meters'; fleets: default"),
     ("default", -1, 422, "count: -1 is outside 0-"),
     ("default", 70000, 422, "(the fleet's address range holds")],
)  # fmt: skip
def test_bad_scales_are_refused_and_change_nothing(
    farm: FarmProcess, fleet: str, count: int, status: int, words: str
) -> None:
    api = FarmClient.at(HOST, farm.api_port)
    with pytest.raises(FarmAPIError) as refused_call:
        api.scale(fleet, count)
    assert refused_call.value.status == status and words in str(refused_call.value)
    assert len(api.servers()) == START
    cli = subprocess.run(
        [sys.executable, "-m", "farm", "scale", fleet, str(count), "--api-port", str(farm.api_port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 1 and cli.stdout == "", cli  # -1 is a count, not an option
    assert cli.stderr.count("\n") == 1 and words in cli.stderr, cli.stderr
    assert len(api.servers()) == START


def test_a_taken_address_refuses_the_whole_scale(farm: FarmProcess) -> None:
    api = FarmClient.at(HOST, farm.api_port)
    with squatter(farm.port(START + 3)), pytest.raises(FarmAPIError) as refused_call:
        api.scale("default", START + 5)
    assert refused_call.value.status == 409 and "cannot listen on" in str(refused_call.value)
    assert len(api.servers()) == START and refused(farm.port(START))
    cli = subprocess.run(
        [sys.executable, "-m", "farm", "scale", "default", str(START + 2),
         "--api-port", str(farm.api_port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 0 and f"default: {START} -> {START + 2} servers" in cli.stdout, cli


def test_a_scale_onto_the_names_of_another_fleet_is_refused(tmp_path: Path) -> None:
    """Two fleets with one name pattern: growing the empty one would give its newcomers the
    other's names (the API finds a server by its name), so the scale is refused whole."""
    base = free_port_range(10)
    api_port = free_port()
    config = tmp_path / "farm.yaml"
    config.write_text(
        "fleets:\n"
        f"  - {{name: spare, template: default, count: 0, name_pattern: 'dev-{{i:04d}}',"
        f" addressing: {{port_start: {base}, port_end: {base + 4}}}}}\n"
        f"  - {{name: line, template: default, count: 2, name_pattern: 'dev-{{i:04d}}',"
        f" addressing: {{port_start: {base + 5}, port_end: {base + 9}}}}}\n"
    )
    farm = FarmProcess(
        count=2, workers=1, port_base=base + 5, api_port=api_port, extra=[], file=str(config)
    ).start()
    try:
        farm.wait_ready()
        api = FarmClient.at(HOST, api_port)
        with pytest.raises(FarmAPIError) as refused_call:
            api.scale("spare", 1)
        assert refused_call.value.status == 409, refused_call.value
        assert "dev-0000 is already the name of a server" in str(refused_call.value)
        assert [(s.name, s.fleet) for s in api.servers()] == [
            ("dev-0000", "line"),
            ("dev-0001", "line"),
        ]
        assert refused(base)  # nothing was bound for the refused newcomer
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
