"""Every example in examples/ served by a real farm and read by real Modbus masters.

The examples name fixed ports; each test copies its example with the addresses moved to
ports that are free now, and keeps everything else (templates, points, behaviours).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import modbus_tk.defines as tk
import pytest
import yaml
from modbus_tk import modbus_tcp
from modbus_tk.exceptions import ModbusError
from pymodbus import FramerType
from pymodbus.client import ModbusTcpClient, ModbusUdpClient
from pymodbus.pdu import ExceptionResponse
from pymodbus.pdu.file_message import FileRecord

from tests.farmproc import HOST, FarmProcess, free_port, free_port_range, port_free
from tests.tools import tool

pytestmark = pytest.mark.timeout(180)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DT = ModbusTcpClient.DATATYPE


def free_port_on(hosts: list[str]) -> int:
    for _ in range(100):
        port = free_port()
        if all(port_free(port, host) for host in hosts):
            return port
    raise RuntimeError("no port free on every address")


def relocated(name: str, tmp_path: Path, count: int | None = None) -> tuple[Path, dict[str, Any]]:
    """The example with every fleet moved to free ports (scaled to `count` servers)."""
    data = yaml.safe_load((EXAMPLES / name).read_text())
    shutil.copytree(EXAMPLES / "data", tmp_path / "data")
    if count is not None:
        total = sum(f["count"] for f in data["fleets"])
        for fleet in data["fleets"]:
            fleet["count"] = max(1, fleet["count"] * count // total)
    for fleet in data["fleets"]:
        addressing = fleet["addressing"]
        if "port_start" in addressing:
            addressing["port_start"] = free_port_range(fleet["count"])
            addressing["port_end"] = addressing["port_start"] + fleet["count"] - 1
        else:
            first = [int(x) for x in addressing["ip_start"].split(".")]
            hosts = [
                f"127.{first[1]}.{(first[3] + i) // 256}.{(first[3] + i) % 256}" for i in range(3)
            ]
            addressing["port"] = free_port_on(hosts)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path, data


@contextlib.contextmanager
def serve(path: Path, data: dict[str, Any]) -> Iterator[FarmProcess]:
    """The farm for `path`, stopped on exit: a stop that fails fails the test, too."""
    expected = sum(f["count"] for f in data["fleets"])
    farm = FarmProcess(count=expected, workers=2, port_base=0, api_port=free_port(), file=str(path))
    farm.start()
    try:
        farm.wait_ready(timeout=90)
        yield farm
    finally:
        code, _, stderr = farm.stop()
        assert code == 0, stderr


def first_address(data: dict[str, Any], fleet: int = 0, index: int = 0) -> tuple[str, int]:
    addressing = data["fleets"][fleet]["addressing"]
    if "port_start" in addressing:
        return addressing.get("host", HOST), addressing["port_start"] + index
    a, b, c, d = (int(x) for x in addressing["ip_start"].split("."))
    d += index
    return f"{a}.{b}.{c + d // 256}.{d % 256}", addressing["port"]


def client(host: str, port: int) -> ModbusTcpClient:
    connected = ModbusTcpClient(host, port=port, timeout=3, retries=0)
    assert connected.connect()
    return connected


def mbpoll(host: str, port: int, *args: str) -> str:
    command = [tool("mbpoll"), "-m", "tcp", "-a", "1", "-p", str(port), "-1", *args, host]
    result = subprocess.run(command, capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def meter(tmp_path: Path) -> Iterator[tuple[FarmProcess, dict[str, Any]]]:
    path, data = relocated("energy-meter.yaml", tmp_path, count=3)
    with serve(path, data) as farm:
        yield farm, data


def test_energy_meter_floats_through_pymodbus_and_mbpoll(
    meter: tuple[FarmProcess, dict[str, Any]],
) -> None:
    _, data = meter
    host, port = first_address(data)
    c = client(host, port)
    try:
        raw = c.read_input_registers(0, count=6).registers
        volts = [c.convert_from_registers(raw[i : i + 2], DT.FLOAT32) for i in (0, 2, 4)]
        assert all(isinstance(v, float) and 226 <= v <= 234 for v in volts), volts
        hz = c.convert_from_registers(c.read_input_registers(70, count=2).registers, DT.FLOAT32)
        assert isinstance(hz, float) and 49.9 <= hz <= 50.1
        serial = c.convert_from_registers(
            c.read_holding_registers(90, count=2).registers, DT.UINT32
        )
        assert serial == 21004711
        identity = c.read_device_information(read_code=2)
        assert identity.information[1] == b"MF-EM3" and identity.information[6] == b"meter-0000"  # type: ignore[attr-defined]
    finally:
        c.close()
    # mbpoll's 32-bit float, big-endian word order (-B), reference 71 = address 70.
    shown = mbpoll(host, port, "-t", "3:float", "-B", "-r", "71")
    value = float(shown.split("[71]:")[1].split()[0])
    assert 49.9 <= value <= 50.1
    shown = mbpoll(host, port, "-t", "4:int", "-B", "-r", "91")
    assert "[91]: \t21004711" in shown


def test_energy_meter_read_only_point_answers_02(meter: tuple[FarmProcess, dict[str, Any]]) -> None:
    _, data = meter
    host, port = first_address(data, index=1)
    master = modbus_tcp.TcpMaster(host=host, port=port, timeout_in_sec=3)
    try:
        with pytest.raises(ModbusError) as raised:
            master.execute(1, tk.WRITE_MULTIPLE_REGISTERS, 90, output_value=[1, 2])
        assert raised.value.get_exception_code() == 2
        with pytest.raises(ModbusError):
            master.execute(1, tk.WRITE_SINGLE_REGISTER, 91, output_value=5)
        assert master.execute(1, tk.READ_HOLDING_REGISTERS, 90, 2) == divmod(
            21004711, 65536
        )  # unchanged
        master.execute(1, tk.WRITE_SINGLE_REGISTER, 2, output_value=30)  # writable setting
        assert master.execute(1, tk.READ_HOLDING_REGISTERS, 2, 1) == (30,)
        # A 16-bit write into half of a 32-bit writable point changes just that register.
        master.execute(1, tk.WRITE_SINGLE_REGISTER, 5, output_value=0)
        assert master.execute(1, tk.READ_HOLDING_REGISTERS, 4, 2) == (0x42C8, 0)
    finally:
        master.close()
    serial = list(divmod(21004711, 65536))
    c = client(host, port)
    try:  # FC 22 (mask write) and FC 23 (read/write) refuse the read-only serial too
        for refused in (
            c.mask_write_register(address=90, and_mask=0, or_mask=0xFFFF),
            c.mask_write_register(address=91, and_mask=0xFFFF, or_mask=1),
            c.readwrite_registers(read_address=0, read_count=2, write_address=90, values=[1, 2]),
            c.readwrite_registers(read_address=0, read_count=1, write_address=91, values=[3]),
            c.readwrite_registers(read_address=2, read_count=1, write_address=89, values=[4, 5]),
        ):
            assert isinstance(refused, ExceptionResponse), refused
            assert refused.exception_code == 2, refused
        assert c.read_holding_registers(89, count=3).registers == [0, *serial]  # unchanged
        # ...while both work on the writable setting: the refusal is the point's, not the FC's.
        assert not c.mask_write_register(address=2, and_mask=0, or_mask=25).isError()
        both = c.readwrite_registers(read_address=90, read_count=2, write_address=3, values=[26])
        assert not both.isError() and both.registers == serial
        assert c.read_holding_registers(2, count=2).registers == [25, 26]
    finally:
        c.close()


def test_plc_bits_and_strings(tmp_path: Path) -> None:
    path, data = relocated("plc.yaml", tmp_path, count=2)
    with serve(path, data):
        host, port = first_address(data)
        coils = mbpoll(host, port, "-t", "0", "-r", "1", "-c", "2")
        assert "[1]: \t1" in coils and "[2]: \t0" in coils
        inputs = mbpoll(host, port, "-t", "1", "-r", "3")
        assert "[3]: \t0" in inputs or "[3]: \t1" in inputs
        c = client(host, port)
        try:
            refused = c.write_coil(8, True)
            assert isinstance(refused, ExceptionResponse) and refused.exception_code == 2
            assert not c.write_coil(1, True).isError()
            assert c.read_coils(0, count=2).bits[:2] == [True, True]
            firmware = c.convert_from_registers(
                c.read_holding_registers(60, count=4).registers, DT.STRING
            )
            assert isinstance(firmware, str) and firmware.rstrip("\0") == "4.2.7"
            level = c.convert_from_registers(c.read_input_registers(0, count=1).registers, DT.INT16)
            assert isinstance(level, int) and 190 <= level <= 810  # 19.0-81.0 % in tenths
        finally:
            c.close()


def test_gateway_serves_eight_units(tmp_path: Path) -> None:
    path, data = relocated("gateway.yaml", tmp_path, count=1)
    with serve(path, data):
        host, port = first_address(data)
        master = modbus_tcp.TcpMaster(host=host, port=port, timeout_in_sec=3)
        try:
            for unit in range(1, 9):
                (raw,) = master.execute(unit, tk.READ_INPUT_REGISTERS, 0, 1)
                celsius = struct.unpack(">h", struct.pack(">H", raw))[0] / 10
                assert 14 <= celsius <= 29, (unit, celsius)
            assert master.execute(8, tk.READ_HOLDING_REGISTERS, 0, 1) == (8,)
            with pytest.raises(ModbusError) as raised:
                master.execute(9, tk.READ_INPUT_REGISTERS, 0, 1)
            assert raised.value.get_exception_code() == 0x0B
        finally:
            master.close()


def test_solar_inverter_sunspec_map(tmp_path: Path) -> None:
    path, data = relocated("solar-inverter.yaml", tmp_path, count=2)
    with serve(path, data):
        c = client(*first_address(data))
        try:
            marker = c.convert_from_registers(
                c.read_holding_registers(40000, count=2).registers, DT.STRING
            )
            assert marker == "SunS"
            header = c.read_holding_registers(40002, count=2).registers
            assert header == [1, 66]
            assert c.read_holding_registers(40070, count=2).registers == [103, 50]
            assert c.read_holding_registers(40122, count=2).registers == [0xFFFF, 0]
            power = c.convert_from_registers(
                c.read_holding_registers(40084, count=1).registers, DT.INT16
            )
            csv_values = [
                float(line.split(",")[2])
                for line in (EXAMPLES / "data" / "solar-day.csv").read_text().splitlines()[1:]
            ]
            assert isinstance(power, int) and any(abs(power - v) <= 21 for v in csv_values)
        finally:
            c.close()


def test_plant_scaled_serves_every_fleet(tmp_path: Path) -> None:
    path, data = relocated("plant.yaml", tmp_path, count=400)
    with serve(path, data) as farm:
        servers = farm.api("/api/v1/servers")["servers"]
        assert {s["name"].split("-")[0] for s in servers} == {"meter", "inverter", "plc", "gw"}
        assert all(s["up"] for s in servers)
        for fleet in range(4):
            host, port = first_address(data, fleet)
            c = client(host, port)
            try:
                reply = c.read_device_information(read_code=1)
                assert not reply.isError()
            finally:
                c.close()
        meter_host, meter_port = first_address(data, 0, 5)
        c = client(meter_host, meter_port)
        try:
            volts = c.convert_from_registers(
                c.read_input_registers(0, count=2).registers, DT.FLOAT32
            )
            assert isinstance(volts, float) and 226 <= volts <= 234
        finally:
            c.close()


def test_serial_line_over_rtu_and_udp(tmp_path: Path) -> None:
    path, data = relocated("serial-line.yaml", tmp_path, count=2)
    with serve(path, data):
        # Any: pymodbus types every response as its base class ModbusPDU.
        (rtu_host, rtu_port), (udp_host, udp_port) = first_address(data, 0), first_address(data, 1)
        rtu: Any = ModbusTcpClient(
            rtu_host, port=rtu_port, framer=FramerType.RTU, timeout=3, retries=0
        )
        udp: Any = ModbusUdpClient(udp_host, port=udp_port, timeout=3, retries=1)
        try:
            assert rtu.connect() and udp.connect()
            assert rtu.diag_query_data(b"\x12\x34").message == b"\x12\x34"
            assert rtu.read_exception_status().status & 1 == 1  # the alarm relay, coil 10
            records = [FileRecord(file_number=1, record_number=0, record_length=8)]  # bytes
            loads = rtu.read_file_record(records).records[0].record_data
            assert struct.unpack(">4H", loads) == (120, 118, 121, 130)
            assert udp.read_fifo_queue(address=100).values == [0x0101, 0x0203]
            assert udp.report_device_id().identifier.startswith(b"\x4d\xffudp-")
        finally:
            rtu.close()
            udp.close()


def test_the_readmes_typical_test_runs_as_written() -> None:
    """examples/typical-test.sh, README's one-screen test: up, a fault on a quarter of the
    devices, watch, clear, down; with its ports moved to free ones."""
    port_base, api_port = free_port_range(20), free_port()
    done = subprocess.run(
        ["bash", str(EXAMPLES / "typical-test.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PORT_BASE": str(port_base), "API_PORT": str(api_port)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "on 5 servers" in out and "\n5 servers\n" in out, out  # a quarter of 20
    assert "cleared 1 fault" in out and "farm stopped" in out, out
    assert all(port_free(port_base + i) for i in range(20)) and port_free(api_port)
