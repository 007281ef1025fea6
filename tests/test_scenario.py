"""Scenarios played on a running farm, seen by pymodbus's client at the right times, and
driven through the API and the CLI (run, status, stop and what stop undoes)."""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from pymodbus.client import ModbusTcpClient

from farm.client import FarmAPIError, FarmClient
from farm.config.faults.selection import pick_fraction
from tests.conftest import config_farm
from tests.farmproc import HOST, FarmProcess, wait_for

pytestmark = pytest.mark.timeout(120)
SERVERS = 20
# The machine is shared and loaded: a step counts as on time within this of its time.
TOLERANCE_S = 0.9


def config(port_base: int) -> str:
    return f"""
templates:
  meter:
    units: [{{unit_id: 1, input_registers: 20, holding_registers: 10}}]
    points:
      - {{name: voltage, table: input_registers, address: 0, type: float32,
          behaviour: {{kind: ramp, low: 0, high: 1000, period_s: 100, interval_s: 0.1}}}}
      - {{name: setpoint, table: holding_registers, address: 2, type: int16, scale: 0.1, value: 21.5}}
fleets:
  - name: meters
    template: meter
    count: {SERVERS}
    name_pattern: "meter-{{i:04d}}"
    addressing: {{host: 127.0.0.1, port_start: {port_base}, port_end: {port_base + SERVERS - 1}}}
"""


@pytest.fixture(scope="module")
def farm() -> Iterator[FarmProcess]:
    with config_farm(config, SERVERS) as running:
        yield running


@pytest.fixture
def api(farm: FarmProcess) -> Iterator[FarmClient]:
    client = FarmClient.at(HOST, farm.api_port)
    yield client
    if client.status()["scenario"] is not None:
        client.stop_scenario()
    assert client.faults() == []
    assert client.servers(state="offline") == []


def name(index: int) -> str:
    return f"meter-{index:04d}"


def reachable(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Reader:
    """A pymodbus client on one server that reconnects when its connection drops. Each value
    seen comes with the times its read began and ended (seconds since `began`)."""

    port: int
    began: float
    client: ModbusTcpClient | None = None
    seen: list[tuple[float, float, float]] = field(default_factory=list)

    def read(self) -> None:
        t0 = time.monotonic() - self.began
        if self.client is None:
            self.client = ModbusTcpClient(HOST, port=self.port, timeout=1, retries=0)
            if not self.client.connect():
                self.client = None
                return
        response = self.client.read_input_registers(0, count=2)
        if response.isError():
            self.client.close()
            self.client = None
            return
        value = struct.unpack(">f", struct.pack(">HH", *response.registers))[0]
        self.seen.append((t0, time.monotonic() - self.began, value))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def test_three_steps_seen_by_pymodbus_at_their_times(farm: FarmProcess, api: FarmClient) -> None:
    names = [name(i) for i in range(SERVERS)]
    offline = pick_fraction(names, 0.1, 7)
    stuck, spiked = [n for n in names if n not in offline][1:3]  # two others
    began = time.monotonic()
    api.play_scenario(
        {
            "seed": 7,
            "steps": [
                {"at": "1s", "for": "2s", "fault": {"kind": "offline", "fleet": "meters", "fraction": 0.1}},
                {"at": "2s", "for": "5s", "fault": {"kind": "stuck", "target": stuck, "point": "voltage"}},
                {"at": "3s", "for": "1s", "fault": {"kind": "spike", "target": spiked, "point": "voltage", "value": 999}},
            ],
        }
    )  # fmt: skip
    readers = {each: Reader(farm.port(names.index(each)), began) for each in (stuck, spiked)}
    # Each sample keeps when its probe began and ended, so a slow probe on a loaded machine
    # cannot look early or late: what was seen held at some time between the two.
    down: dict[str, list[tuple[float, float, bool]]] = {each: [] for each in offline}
    try:
        while time.monotonic() - began < 6.0:
            for each in offline:
                t0 = time.monotonic() - began
                is_down = not reachable(farm.port(names.index(each)))
                down[each].append((t0, time.monotonic() - began, is_down))
            for reader in readers.values():
                reader.read()
            time.sleep(0.03)
    finally:
        for reader in readers.values():
            reader.close()
    for each, samples in down.items():
        refused = [(t0, t1) for t0, t1, is_down in samples if is_down]
        up = [(t0, t1) for t0, t1, is_down in samples if not is_down]
        assert refused, f"{each} was never refused"
        assert all(t1 >= 1.0 for _, t1 in refused), (each, refused[0])  # not before its step
        assert all(t0 <= 3.0 + TOLERANCE_S for t0, _ in refused), (each, refused[-1])  # back
        # Down from 1 s (within the tolerance) until 2.9 s: no probe wholly inside saw it up.
        inside = [(t0, t1) for t0, t1 in up if t0 >= 1.0 + TOLERANCE_S and t1 <= 2.9]
        assert not inside, (each, inside)
        assert any(t0 > refused[-1][1] for t0, _ in up), each
    values = readers[stuck].seen
    frozen = [v for t0, _, v in values if t0 >= 2.0 + TOLERANCE_S]
    assert len(set(frozen)) == 1, frozen  # stuck from 2 s on (its for runs to 7 s)
    assert len({v for _, t1, v in values if t1 < 2.0}) > 3  # it moved before
    seen = readers[spiked].seen
    spikes = [(t0, t1) for t0, t1, v in seen if v == 999.0]
    assert spikes, "no spike seen"
    assert all(t1 >= 3.0 for _, t1 in spikes), spikes[:1]  # not before its step
    assert all(t0 <= 4.0 + TOLERANCE_S for t0, _ in spikes), spikes[-1:]  # over after its 1 s
    late = [(t0, t1) for t0, t1, v in seen if v != 999.0 and t0 >= 3.0 + TOLERANCE_S and t1 <= 4.0]
    assert not late, late  # in effect from 3 s (within the tolerance) until 4 s
    assert [v for t0, _, v in seen if t0 > spikes[-1][1]][-1] != 999.0  # resumed
    view = api.scenario()
    assert view["state"] in ("playing", "done") and view["current"]["step"] == 3


def cli(farm: FarmProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm", *args, "--api-port", str(farm.api_port)],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )  # fmt: skip


def test_cli_runs_shows_and_stops_a_scenario_and_stop_undoes_it(
    farm: FarmProcess, api: FarmClient, tmp_path: os.PathLike[str]
) -> None:
    story = os.path.join(tmp_path, "story.yaml")
    with open(story, "w") as file:
        file.write(
            "scenario:\n  steps:\n"
            f"    - {{name: trip, at: 0s, stop: {{target: {name(5)}}}}}\n"
            f"    - {{at: 0s, set: {{target: {name(6)}, point: setpoint, value: 42}}}}\n"
            f"    - {{at: 0s, fault: {{kind: offset, target: {name(7)}, point: voltage, by: 5}}}}\n"
            f"    - {{at: 30s, start: {{target: {name(5)}}}}}\n"
        )
    played = cli(farm, "scenario", "run", story)
    assert played.returncode == 0, played.stderr
    assert "playing" in played.stdout and "trip" in played.stdout
    wait_for(lambda: api.point(name(6), "setpoint").value == 42, 10, "the set step")
    wait_for(lambda: not reachable(farm.port(5)), 10, "the stop step")
    assert [f.kind for f in api.faults()] == ["offset"]
    shown = cli(farm, "scenario", "status")
    assert shown.returncode == 0 and "scenario playing" in shown.stdout, shown
    assert "pending" in shown.stdout and "done" in shown.stdout
    # Steps are numbered from 1, as the log ("scenario step 1/4") and the page number them.
    assert re.search(r"│\s*1\s*│\s*0 s\s*│.*│\s*trip\s*│", shown.stdout), shown.stdout
    assert re.search(r"│\s*4\s*│\s*30 s\s*│", shown.stdout), shown.stdout
    again = cli(farm, "scenario", "run", story)  # one at a time
    assert again.returncode != 0 and "a scenario is playing" in again.stderr, again
    stopped = cli(farm, "scenario", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert api.point(name(6), "setpoint").value == 21.5  # the value it had before
    assert api.faults() == [] and reachable(farm.port(5))
    assert api.scenario()["state"] == "stopped"


def test_a_scenario_the_farm_cannot_play_is_refused_whole(
    farm: FarmProcess, api: FarmClient, tmp_path: os.PathLike[str]
) -> None:
    bad = {
        "steps": [
            {"at": "0s", "fault": {"kind": "drop", "target": name(1)}},
            {"at": "1s", "fault": {"kind": "stuck", "target": name(2), "point": "current"}},
        ]
    }
    with pytest.raises(FarmAPIError) as refused:
        api.play_scenario(bad)
    assert refused.value.status == 422
    assert "scenario.steps[1].fault.point: meter has no point 'current'" in str(refused.value)
    assert api.faults() == []  # not even the good first step
    story = os.path.join(tmp_path, "bad.yaml")
    with open(story, "w") as file:
        file.write("scenario:\n  steps:\n    - {at: 0s, scale: {fleet: meters, count: 500}}\n")
    refused_cli = cli(farm, "scenario", "run", story)
    assert refused_cli.returncode == 2, refused_cli
    assert refused_cli.stderr.startswith(f"farm: error: {story}: scenario.steps[0].scale.count")


def test_steps_are_metrics_and_status_and_repeat(farm: FarmProcess, api: FarmClient) -> None:
    api.play_scenario(
        {
            "repeat": 2,
            "steps": [
                {"name": "hold", "at": "0s", "for": "300ms", "fault": {"kind": "drop", "target": name(9)}},
                {"name": "nudge", "at": "500ms", "for": "300ms", "fault": {"kind": "drop", "target": name(9)}},
            ],
        }
    )  # fmt: skip

    def metrics() -> str:
        with socket.create_connection((HOST, farm.api_port), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            return b"".join(iter(lambda: sock.recv(65536), b"")).decode()

    wait_for(
        lambda: 'modbus_farm_scenario_step{name="nudge",step="2"} 1' in metrics(), 10, "step 2"
    )
    wait_for(lambda: api.status()["scenario"]["play"] == 2, 10, "the second play")
    wait_for(lambda: api.scenario()["state"] == "done", 10, "the end of both plays")
    assert api.status()["scenario"]["current"] == {"step": 2, "name": "nudge"}
    assert 'modbus_farm_scenario_step{name="hold",step="1"} 0' in metrics()


def test_two_scenarios_posted_at_once_one_plays_and_the_other_gets_409(
    farm: FarmProcess, api: FarmClient
) -> None:
    """The first POST undoes the last play (its stopped servers start again) before it
    begins: a second POST meanwhile must not begin too (on the old code both did)."""
    stop_all = {"steps": [{"at": "0s", "stop": {"fleet": "meters"}}]}
    api.play_scenario(stop_all)
    wait_for(lambda: api.status()["scenario"]["state"] == "done", 10, "the play to end")
    assert api.servers(state="offline")  # its stopped servers wait for the next play
    outcomes: list[int] = []
    at_once = threading.Barrier(8)

    def play() -> None:
        at_once.wait(10)
        try:
            api.play_scenario({"steps": [{"at": "30s", "stop": {"target": name(1)}}]})
            outcomes.append(200)
        except FarmAPIError as error:
            outcomes.append(error.status)

    threads = [threading.Thread(target=play) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == [200] + [409] * 7, outcomes
