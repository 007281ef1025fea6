"""Value faults on a running farm, read back by real Modbus masters (pymodbus's client and
mbpoll) with the points' own encodings, against an unfaulted twin on the same worker."""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient

from farm.client import FarmAPIError, FarmClient
from tests.conftest import config_farm
from tests.farmproc import HOST, FarmProcess, wait_for
from tests.test_clients import mbpoll

pytestmark = pytest.mark.timeout(120)
SERVERS = 8


def config(port_base: int) -> str:
    return f"""
templates:
  meter:
    units: [{{unit_id: 1, coils: 8, discrete_inputs: 8, input_registers: 20, holding_registers: 10}}]
    points:
      - {{name: voltage, table: input_registers, address: 0, type: float32,
          behaviour: {{kind: ramp, low: 200, high: 300, period_s: 1000}}}}
      - {{name: temperature, table: input_registers, address: 2, type: int16, scale: 0.1, value: 21.5}}
      - {{name: level, table: input_registers, address: 3, type: uint16,
          behaviour: {{kind: ramp, low: 0, high: 1000, period_s: 100}}}}
      - {{name: setpoint, table: holding_registers, address: 0, type: int16, value: 100}}
      - {{name: contact, table: discrete_inputs, address: 0, value: 1}}
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
    client.clear_faults()
    assert client.faults() == []


def name(index: int) -> str:
    return f"meter-{index:04d}"


def registers(farm: FarmProcess, index: int, address: int, count: int) -> list[int]:
    client = ModbusTcpClient(HOST, port=farm.port(index), timeout=3, retries=0)
    try:
        assert client.connect()
        response = client.read_input_registers(address, count=count)
        assert not response.isError(), response
        return list(response.registers)
    finally:
        client.close()


def voltage(farm: FarmProcess, index: int) -> float:
    high, low = registers(farm, index, 0, 2)
    return float(struct.unpack(">f", struct.pack(">HH", high, low))[0])


def twins(read: Callable[[int], float], faulted: int, twin: int) -> tuple[float, float]:
    """Both read back to back; again if a tick of the live values fell between them."""
    for _ in range(5):
        pair = read(faulted), read(twin)
        if read(faulted) == pair[0]:
            return pair
    return pair


def test_stuck_holds_then_resumes_where_its_twin_is(farm: FarmProcess, api: FarmClient) -> None:
    # meter-0000 and meter-0002 share a worker; the ramp is the same on every server.
    api.fault("stuck", target=name(0), point="voltage", duration="3s")
    held = voltage(farm, 0)
    wait_for(lambda: voltage(farm, 2) > held + 0.15, 10, "the twin to move on")
    assert voltage(farm, 0) == held
    assert api.point(name(0), "voltage").value == pytest.approx(held)  # the API reads it too
    wait_for(lambda: not api.faults(), 10, "the fault to end")
    stuck_was, twin_was = twins(lambda i: voltage(farm, i), 0, 2)
    assert stuck_was == twin_was  # no jump of its own: exactly where it would be


def test_spike_drift_offset_scale_as_a_master_reads_them(
    farm: FarmProcess, api: FarmClient
) -> None:
    api.fault("spike", target=name(1), point="voltage", value=999, duration="30s")
    api.fault("offset", target=name(3), point="voltage", by=10)
    api.fault("scale", target=name(5), point="voltage", factor=2)
    api.fault("drift", target=name(7), point="voltage", rate=5)
    before = voltage(farm, 7)
    faulted, twin = twins(lambda i: voltage(farm, i), 1, 0)
    assert faulted == 999.0 and twin != 999.0
    faulted, twin = twins(lambda i: voltage(farm, i), 3, 0)  # same worker? no: same ramp
    assert faulted == pytest.approx(twin + 10, abs=0.2)
    faulted, twin = twins(lambda i: voltage(farm, i), 5, 0)
    assert faulted == pytest.approx(2 * twin, abs=0.4)
    wait_for(lambda: voltage(farm, 7) > before + 5, 10, "the drift to grow")
    assert api.point(name(1), "voltage").value == 999.0


def test_mbpoll_reads_nan_inf_and_int16_saturation(farm: FarmProcess, api: FarmClient) -> None:
    api.fault("nan", target=name(2), point="voltage")
    api.fault("nan", target=name(4), point="voltage", value="-inf")
    api.fault("out_of_range", target=name(6), point="temperature", beyond="type")
    api.fault("out_of_range", target=name(1), point="temperature", beyond="type", side="low")
    nan = mbpoll(farm.port(2), "-t", "3:float", "-B", "-r", "1", HOST)
    assert nan.returncode == 0 and "nan" in nan.stdout.lower().split("[1]:")[1], nan.stdout
    inf = mbpoll(farm.port(4), "-t", "3:float", "-B", "-r", "1", HOST)
    assert "-inf" in inf.stdout.lower().split("[1]:")[1], inf.stdout
    high = mbpoll(farm.port(6), "-t", "3", "-r", "3", HOST)
    low = mbpoll(farm.port(1), "-t", "3", "-r", "3", HOST)
    assert high.stdout.split("[3]:")[1].split()[0] == "32767", high.stdout
    # mbpoll shows a register unsigned, and signed in brackets when they differ.
    assert low.stdout.split("[3]:")[1].split()[:2] == ["32768", "(-32768)"], low.stdout
    assert math.isnan(float(api.point(name(2), "voltage").value))
    assert api.point(name(6), "temperature").value == pytest.approx(3276.7)
    untouched = mbpoll(farm.port(0), "-t", "3", "-r", "3", HOST)
    assert untouched.stdout.split("[3]:")[1].split()[0] == "215", untouched.stdout


def test_out_of_range_past_the_points_limits(farm: FarmProcess, api: FarmClient) -> None:
    api.fault("out_of_range", target=name(3), point="level")  # ramp 0-1000: 1100
    api.fault("out_of_range", target=name(5), point="level", side="low", margin=5)  # -5: 0
    assert registers(farm, 3, 3, 1) == [1100]
    assert registers(farm, 5, 3, 1) == [0]  # uint16 saturates below 0


def test_flap_toggles_a_contact(farm: FarmProcess, api: FarmClient) -> None:
    api.fault("flap", target=name(4), point="contact", period="300ms")
    client = ModbusTcpClient(HOST, port=farm.port(4), timeout=3, retries=0)
    assert client.connect()
    try:
        seen: set[bool] = set()
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            seen.add(client.read_discrete_inputs(0, count=1).bits[0])
            time.sleep(0.05)
        assert seen == {False, True}
    finally:
        client.close()


def test_a_write_to_a_stuck_point_lands_and_shows_when_it_ends(
    farm: FarmProcess, api: FarmClient
) -> None:
    fault = api.fault("stuck", target=name(6), point="setpoint", value=-5)
    client = ModbusTcpClient(HOST, port=farm.port(6), timeout=3, retries=0)
    assert client.connect()
    try:
        assert not client.write_register(0, 123).isError()
        assert client.read_holding_registers(0, count=1).registers == [0xFFFB]  # -5
        api.clear_fault(fault.id)
        assert client.read_holding_registers(0, count=1).registers == [123]
    finally:
        client.close()


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"kind": "nan", "point": "temperature"}, "nan needs a float32 or float64 point"),
        ({"kind": "flap", "point": "voltage"}, "flap needs a bool point"),
        ({"kind": "drift", "point": "contact", "rate": 1}, "contact is a bool"),
        ({"kind": "stuck", "point": "nope"}, "no point 'nope'"),
        ({"kind": "spike", "point": "voltage"}, "value: give value (jump to) or by"),
        ({"kind": "stuck", "point": "voltage", "ms": 3}, "ms: not a parameter of this kind"),
    ],
)  # fmt: skip
def test_bad_value_faults_are_refused_and_change_nothing(
    api: FarmClient, params: dict[str, Any], words: str
) -> None:
    kind = str(params.pop("kind"))
    with pytest.raises(FarmAPIError) as refused:
        api.fault(kind, target=name(0), **params)
    assert refused.value.status == 422 and words in str(refused.value), str(refused.value)
    assert api.faults() == []
