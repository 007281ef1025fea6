"""Ports a farm should not serve on without knowing it: `farm up` warns once when server
ports fall in the kernel's ephemeral range (another program's connection can take the port
of a stopped server)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from farm.config.plan import Plan, build_plan, default_servers
from farm.config.templates import default_template
from farm.master.supervision.listeners import EPHEMERAL_RANGE_FILE, ephemeral_overlap
from tests.farmproc import HOST, FarmProcess, free_port, port_free

pytestmark = pytest.mark.timeout(120)


def plan_at(port_base: int, count: int = 3) -> Plan:
    template = default_template()
    requests = default_servers(count, HOST, port_base, template.name)
    return build_plan(requests, {template.name: template}, workers=1)


def test_the_overlap_is_said_with_the_range_and_its_file(tmp_path: Path) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("32768\t60999\n")
    said = ephemeral_overlap(plan_at(32766, count=4), str(ranges))
    assert said is not None
    assert "2 server ports (32768-32769)" in said and "range 32768-60999" in said
    assert str(ranges) in said
    assert ephemeral_overlap(plan_at(20000), str(ranges)) is None
    assert ephemeral_overlap(plan_at(20000), str(tmp_path / "missing")) is None


def test_farm_up_warns_once_naming_the_kernel_file() -> None:
    with open(EPHEMERAL_RANGE_FILE) as file:
        low, high = (int(each) for each in file.read().split())
    bases = list(range(low + 100, high - 100, 50))
    random.shuffle(bases)
    base = next(b for b in bases if all(port_free(port) for port in range(b, b + 3)))
    farm = FarmProcess(count=3, workers=1, port_base=base, api_port=free_port()).start()
    try:
        farm.wait_ready()
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    assert stderr.count(EPHEMERAL_RANGE_FILE) == 1, stderr
    assert "WARNING" in stderr.split(EPHEMERAL_RANGE_FILE)[0].splitlines()[-1], stderr
