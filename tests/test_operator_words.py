"""What an operator reads in the first hour: the ready banner, values, writability, counts,
refusals and hints say what is so, in words that fit (issue 23's CLI items).

One farm of three fleets (a TCP meter fleet with a float32 input-register point, a TCP
gateway fleet with input registers only, a UDP fleet) serves most tests; `farm bench`, `farm
get`, `farm targets`, `farm servers` and `farm validate` run as a user runs them.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import ready_config_farm, ready_farm
from tests.farmproc import FarmProcess, free_port, started_at_wall

pytestmark = pytest.mark.timeout(180)

CONFIG = """\
templates:
  meter:
    units: [{{unit_id: 3, input_registers: 100, holding_registers: 100}}]
    points:
      - {{name: volts, table: input_registers, address: 10, type: float32, value: 230.46475}}
      - {{name: limit, table: holding_registers, address: 2, type: int16, scale: 0.1, value: 23.1}}
  gateway:
    units: [{{unit_id: 1, input_registers: 10}}]
    points:
      - {{name: flow, table: input_registers, address: 4, type: uint16, value: 7}}
fleets:
  - {{name: meters, template: meter, count: 2, name_pattern: "meter-{{i}}",
      addressing: {{port_start: {base}}}}}
  - {{name: gateways, template: gateway, count: 1, name_pattern: "gw-{{i}}",
      addressing: {{port_start: {gateways}}}}}
  - {{name: datagram, template: meter, count: 1, name_pattern: "dgram-{{i}}", transport: udp,
      addressing: {{port_start: {udp}}}}}
"""


def config(base: int) -> str:
    return CONFIG.format(base=base, gateways=base + 2, udp=base + 3)


def farm_command(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FarmProcess]:
    running = ready_config_farm(config, 4, str(tmp_path_factory.mktemp("words")))
    try:
        yield running
    finally:
        code, _, stderr = running.stop()
        assert code == 0, stderr


def api(farm: FarmProcess) -> list[str]:
    return ["--api-port", str(farm.api_port)]


def test_float32_values_print_at_their_precision(farm: FarmProcess) -> None:
    done = farm_command("get", "meter-0", "volts", *api(farm))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "volts = 230.46475", done.stdout
    point = farm.api("/api/v1/servers/meter-0/points/volts")
    assert point["value"] == 230.46475
    assert point["registers"] == list(struct.unpack(">2H", struct.pack(">f", 230.46475)))
    # An integer with a scale of 0.1 has one decimal, not 23.1000000001.
    assert farm.api("/api/v1/servers/meter-0/points/limit")["value"] == 23.1


def test_writability_is_the_same_in_targets_and_the_api(farm: FarmProcess) -> None:
    done = farm_command("targets", *api(farm), "--format", "json")
    assert done.returncode == 0, done.stderr
    (meter,) = [d for d in json.loads(done.stdout)["devices"] if d["name"] == "meter-0"]
    listed = meter["points"]
    by_name = {point["name"]: point["writable"] for point in listed}
    assert by_name == {"volts": False, "limit": True}  # an input register: no client writes it
    for name, writable in by_name.items():
        assert farm.api(f"/api/v1/servers/meter-0/points/{name}")["writable"] is writable
    detail = farm.api("/api/v1/servers/meter-0")
    assert {p["name"]: p["writable"] for p in detail["points"]} == by_name


def test_a_bad_table_name_lists_the_table_names(farm: FarmProcess) -> None:
    done = farm_command("get", "meter-0", "holding_register:10", *api(farm))
    assert done.returncode != 0
    line = done.stderr.strip()
    assert "holding_register" in line and "did you mean holding_registers" in line, line
    for name in ("coils", "discrete_inputs", "holding_registers", "input_registers"):
        assert name in line, line
    assert "Traceback" not in done.stderr


def test_one_is_singular(farm: FarmProcess, tmp_path: Path) -> None:
    done = farm_command("servers", *api(farm), "--fleet", "gateways")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "1 server", done.stdout
    path = tmp_path / "one.yaml"
    path.write_text(
        "fleets: [{name: a, template: default, count: 1, addressing: {port_start: 31502}}]\n"
    )
    checked = farm_command("validate", str(path))
    assert checked.returncode == 0, checked.stderr
    assert "1 server in 1 template" in checked.stdout, checked.stdout
    assert "1 servers" not in checked.stdout and "1 templates" not in checked.stdout


def test_bench_on_a_farm_reads_each_templates_first_point(farm: FarmProcess) -> None:
    """The gateways have no holding registers: FC 3 at 0 would be 100% exception 02."""
    done = farm_command(
        "bench", *api(farm), "-c", "3", "--duration", "1", "--timeout", "3", "--json"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["targets"] == 3  # meters and gateways (tcp); the udp fleet is not tcp
    assert report["responses"] > 0 and report["exceptions_total"] == 0, report
    # It says what it reads, and how to choose otherwise.
    assert "meter: volts" in done.stderr and "gateway: flow" in done.stderr, done.stderr
    assert "--mix" in done.stderr
    # Told otherwise, it does as told: FC 3 at 0 on the gateways is exception 02.
    told = farm_command(
        "bench", *api(farm), "-c", "3", "--duration", "1", "--mix", "3:100", "--json"
    )
    assert told.returncode == 0, told.stderr
    assert json.loads(told.stdout)["exceptions"].get("02", 0) > 0


def test_the_banner_lists_each_fleet_and_a_busy_port_hints_at_status_and_down(
    farm: FarmProcess, tmp_path: Path
) -> None:
    assert farm.file is not None
    second = farm_command(
        "up", farm.file, "--api-port", str(free_port()), "--workers", "1", timeout=60
    )
    assert second.returncode != 0
    line = second.stderr.strip().splitlines()[-1]
    assert "already in use" in line and "farm status" in line and "farm down" in line, line


def test_the_ready_banner_names_each_fleets_transport_and_range(tmp_path: Path) -> None:
    running = ready_config_farm(config, 4, str(tmp_path))
    code, stdout, stderr = running.stop()
    assert code == 0, stderr
    base = running.port_base
    lines = [re.sub(r"\s+", " ", line.strip()) for line in stdout.splitlines()]
    assert f"servers meters tcp 127.0.0.1:{base}-{base + 1}" in lines, stdout
    assert f"gateways tcp 127.0.0.1:{base + 2}" in lines, stdout
    assert f"datagram udp 127.0.0.1:{base + 3}" in lines, stdout


def test_the_ready_banner_counts_from_the_moment_the_command_started() -> None:
    """Not from the moment the farm began binding: the interpreter and the CLI's imports are
    part of what the user waited. So the figure is at least the time from the process's
    start to its last worker's "started" line in the log (sent just before the worker reports
    ready), and at most the time to the stop."""
    running = ready_farm(100, extra=["--log-format", "json"])
    try:
        began = started_at_wall(running.pid)
    finally:
        code, stdout, stderr = running.stop()
    stopped = time.time()
    assert code == 0, stderr
    shown = re.search(r"farm ready in ([0-9.]+) s: 100 of 100 servers up", stdout)
    assert shown is not None, stdout
    seconds = float(shown.group(1))
    logged = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    started = [line for line in logged if line.get("event") == "worker_started"]
    assert len(started) == 2, stderr
    last_started = max(datetime.fromisoformat(line["time"]).timestamp() for line in started)
    tick = 0.02  # the start is known to a clock tick, the banner's figure to 10 ms
    assert last_started - began - tick <= seconds <= stopped - began + tick, (
        seconds,
        last_started - began,
        stopped - began,
    )


def test_a_typo_in_a_config_key_comes_first_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(
        "fleets: [{name: a, template: default, cuont: 500, addressing: {port_start: 31502}}]\n"
    )
    done = farm_command("validate", str(path))
    assert done.returncode != 0
    line = done.stderr.strip()
    assert "fleets[0].cuont" in line and "did you mean 'count'" in line, line
    assert line.index("cuont") < line.index("count")


def test_a_shard_says_it_cannot_scale(tmp_path: Path) -> None:
    running = ready_config_farm(
        lambda base: (
            f"fleets: [{{name: meters, template: default, count: 4, "
            f"addressing: {{port_start: {base}}}}}]\n"
        ),
        4,
        str(tmp_path),
        extra=["--shard-index", "0", "--shard-count", "2"],
        ready=2,
    )
    try:
        done = farm_command("scale", "meters", "3", *api(running))
    finally:
        code, _, stderr = running.stop()
    assert code == 0, stderr
    assert done.returncode != 0
    assert "a shard cannot scale" in done.stderr and "no fleet" not in done.stderr, done.stderr
