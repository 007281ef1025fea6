"""A step of the wall clock moves no live value: a farm schedules them on the monotonic clock.

Every process of a real farm (the master, and its workers: the environment reaches the
spawned children) runs with a sitecustomize that turns `time.time` one hour back once the
test touches a file, as an NTP correction or an operator's `date -s` would. Scheduled on
the wall clock, the live values froze for that hour; on the monotonic clock they carry on.
The workers' own log lines (their wall-clock time stamps) show that the step reached them.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from tests.conftest import ready_farm
from tests.farmproc import HOST, wait_for

pytestmark = pytest.mark.timeout(180)
STEP_S = 3600.0

# Latched: once the file exists, this process's wall clock stays STEP_S behind. Looked for
# at most every 50 ms (time.time serves every log line).
SITECUSTOMIZE = f"""
import os
import time

_real_time, _real_time_ns, _monotonic = time.time, time.time_ns, time.monotonic
_flag = os.environ["FARM_TEST_CLOCK_STEP_FILE"]
_seen = {{"stepped": False, "looked_at": -1.0}}


def _offset_s():
    now = _monotonic()
    if not _seen["stepped"] and now - _seen["looked_at"] >= 0.05:
        _seen["looked_at"] = now
        _seen["stepped"] = os.path.exists(_flag)
    return {STEP_S} if _seen["stepped"] else 0.0


time.time = lambda: _real_time() - _offset_s()
time.time_ns = lambda: _real_time_ns() - int(_offset_s() * 1e9)
"""


def uptime_s(port: int) -> int:
    """Input register 0 of the default device: a counter that steps once a second."""
    client = ModbusTcpClient(HOST, port=port, timeout=5, retries=0)
    try:
        assert client.connect(), f"no connection to {HOST}:{port}"
        answer = client.read_input_registers(0, count=1)
        assert not answer.isError(), answer
        return int(answer.registers[0])
    finally:
        client.close()


def workers_stamping_before(log: Path, wall: float) -> set[int]:
    """The workers whose connection lines in `log` are stamped before `wall` (epoch seconds)."""
    found = set()
    for text in log.read_text().splitlines():
        line = json.loads(text)
        stamp = datetime.fromisoformat(line["time"].replace("Z", "+00:00")).timestamp()
        if line["event"] == "connection_opened" and stamp < wall:
            found.add(int(line["worker"]))
    return found


def test_a_backwards_step_of_the_wall_clock_freezes_no_live_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    flag, log = tmp_path / "stepped", tmp_path / "farm.log"
    inherited = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *inherited]))
    monkeypatch.setenv("FARM_TEST_CLOCK_STEP_FILE", str(flag))
    extra = ["--log-level", "debug", "--log-format", "json", "--log-file", str(log)]
    farm = ready_farm(2, workers=2, extra=extra)
    try:
        flag.touch()
        stepped = time.time() - STEP_S / 2  # the test's own clock was not stepped

        def step_reached_the_workers() -> bool:
            for index in (0, 1):  # one server on each worker: a new connection, a new line
                uptime_s(farm.port(index))
            return workers_stamping_before(log, stepped) == {0, 1}

        wait_for(step_reached_the_workers, 30, "the workers' log lines to be an hour early")
        began, start = time.monotonic(), [uptime_s(farm.port(i)) for i in (0, 1)]

        def both_counted_on() -> bool:
            return all(uptime_s(farm.port(i)) >= start[i] + 3 for i in (0, 1))

        wait_for(both_counted_on, 30, "uptime_s to count 3 more seconds after the step", 0.2)
        print(f"after the step, 3 more seconds counted in {time.monotonic() - began:.2f} s")
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
