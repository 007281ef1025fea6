"""Real Modbus masters (pymodbus's client, Debian's mbpoll, modbus-tk) against a real farm."""

from __future__ import annotations

import socket
import struct
import subprocess
import time

import modbus_tk.defines as tk
import pytest
from modbus_tk import modbus_tcp
from modbus_tk.exceptions import ModbusError
from pymodbus.client import ModbusTcpClient
from pymodbus.pdu import ExceptionResponse
from pymodbus.pdu.mei_message import ReadDeviceInformationResponse

from tests.farmproc import HOST, FarmProcess
from tests.tools import tool

pytestmark = pytest.mark.timeout(120)


def pymodbus_client(farm: FarmProcess, index: int) -> ModbusTcpClient:
    client = ModbusTcpClient(HOST, port=farm.port(index), timeout=3, retries=0)
    assert client.connect()
    return client


def raw_exchange(port: int, payload: bytes, expect_frames: int) -> list[bytes]:
    """Send raw bytes in one write; read `expect_frames` MBAP frames back."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        frames: list[bytes] = []
        while len(frames) < expect_frames:
            while len(data) < 6 or len(data) < 6 + struct.unpack(">H", data[4:6])[0]:
                chunk = sock.recv(4096)
                assert chunk, f"connection closed after {len(frames)} frames"
                data += chunk
            size = 6 + struct.unpack(">H", data[4:6])[0]
            frames.append(data[:size])
            data = data[size:]
    return frames


def mbap(transaction: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", transaction, 0, len(pdu) + 1, unit) + pdu


def test_pymodbus_client_writes_and_reads_every_table(farm: FarmProcess) -> None:
    client = pymodbus_client(farm, 3)
    try:
        assert not client.write_registers(100, [1, 2, 65535]).isError()
        assert client.read_holding_registers(100, count=3).registers == [1, 2, 65535]
        assert not client.write_register(7, 4242).isError()
        assert client.read_holding_registers(7, count=1).registers == [4242]
        assert not client.write_coils(10, [True, False, True, True]).isError()
        assert client.read_coils(10, count=4).bits[:4] == [True, False, True, True]
        assert not client.write_coil(20, True).isError()
        assert client.read_coils(20, count=1).bits[0] is True
        inputs = client.read_input_registers(0, count=4)
        assert not inputs.isError() and len(inputs.registers) == 4
        discrete = client.read_discrete_inputs(0, count=8)
        assert not discrete.isError() and len(discrete.bits) == 8
    finally:
        client.close()


def test_servers_have_separate_banks(farm: FarmProcess) -> None:
    first, second = pymodbus_client(farm, 4), pymodbus_client(farm, 5)
    try:
        first.write_register(50, 1111)
        second.write_register(50, 2222)
        assert first.read_holding_registers(50, count=1).registers == [1111]
        assert second.read_holding_registers(50, count=1).registers == [2222]
    finally:
        first.close()
        second.close()


def test_live_values_move(farm: FarmProcess) -> None:
    """Input register 0 of the default device counts seconds."""
    client = pymodbus_client(farm, 6)
    try:
        first = client.read_input_registers(0, count=1).registers[0]
        from tests.farmproc import wait_for

        wait_for(
            lambda: client.read_input_registers(0, count=1).registers[0] != first,
            5,
            "the uptime counter to move",
        )
    finally:
        client.close()


def mbpoll(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """Debian's mbpoll (scripts/test installs it): unit 1, one poll, then exit."""
    command = [tool("mbpoll"), "-m", "tcp", "-a", "1", "-p", str(port), "-1", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=20)


def test_mbpoll_writes_and_reads(farm: FarmProcess) -> None:
    port = farm.port(7)
    write = mbpoll(port, "-r", "201", "-t", "4", HOST, "11", "22", "33")
    assert write.returncode == 0, write.stdout + write.stderr
    read = mbpoll(port, "-r", "201", "-c", "3", "-t", "4", HOST)
    assert read.returncode == 0, read.stdout + read.stderr
    # mbpoll numbers registers from 1: reference 201 is address 200.
    assert (
        "[201]: \t11" in read.stdout
        and "[202]: \t22" in read.stdout
        and "[203]: \t33" in read.stdout
    )
    client = pymodbus_client(farm, 7)
    try:
        assert client.read_holding_registers(200, count=3).registers == [11, 22, 33]
    finally:
        client.close()


def test_modbus_tk_master(farm: FarmProcess) -> None:
    master = modbus_tcp.TcpMaster(host=HOST, port=farm.port(8), timeout_in_sec=3)
    try:
        master.execute(1, tk.WRITE_MULTIPLE_REGISTERS, 300, output_value=[7, 8, 9])
        assert master.execute(1, tk.READ_HOLDING_REGISTERS, 300, 3) == (7, 8, 9)
        master.execute(1, tk.WRITE_SINGLE_COIL, 5, output_value=1)
        assert master.execute(1, tk.READ_COILS, 5, 1) == (1,)
        with pytest.raises(ModbusError) as raised:
            master.execute(1, tk.READ_HOLDING_REGISTERS, 999, 10)
        assert raised.value.get_exception_code() == 2
    finally:
        master.close()


def test_three_pipelined_requests_get_three_responses_in_order(farm: FarmProcess) -> None:
    client = pymodbus_client(farm, 9)
    client.write_registers(0, [10, 20, 30])
    client.close()
    requests = b"".join(
        mbap(transaction, 1, struct.pack(">BHH", 3, address, 1))
        for transaction, address in ((101, 0), (102, 1), (103, 2))
    )
    frames = raw_exchange(farm.port(9), requests, 3)
    assert [struct.unpack(">H", f[:2])[0] for f in frames] == [101, 102, 103]
    assert [struct.unpack(">H", f[-2:])[0] for f in frames] == [10, 20, 30]


def test_each_server_reports_its_own_identity(farm: FarmProcess) -> None:
    names = []
    for index in (0, 1, 2):
        client = pymodbus_client(farm, index)
        try:
            response = client.read_device_information(read_code=2)
            assert isinstance(response, ReadDeviceInformationResponse)
            assert response.information[0] == b"modbus-farm"
            names.append(response.information[6])
        finally:
            client.close()
    assert names == [b"device-0000", b"device-0001", b"device-0002"]


@pytest.mark.parametrize(
    ("pdu", "unit", "expected"),
    [
        (bytes([0x41, 0, 0]), 1, bytes([0xC1, 0x01])),  # unknown function code
        (struct.pack(">BHH", 3, 995, 10), 1, bytes([0x83, 0x02])),  # past the table
        (struct.pack(">BHH", 3, 0, 126), 1, bytes([0x83, 0x03])),  # quantity over 125
        (struct.pack(">BHH", 3, 0, 1), 7, bytes([0x83, 0x0B])),  # unit id the device lacks
        (struct.pack(">BHH", 5, 1, 0x1234), 1, bytes([0x85, 0x03])),  # coil value not 0/FF00
    ],
    ids=["unknown-fc-01", "address-02", "quantity-03", "unit-0B", "coil-value-03"],
)
def test_exception_responses(farm: FarmProcess, pdu: bytes, unit: int, expected: bytes) -> None:
    (frame,) = raw_exchange(farm.port(10), mbap(5, unit, pdu), 1)
    assert frame[6] == unit and frame[7:] == expected


def test_pymodbus_client_sees_exception(farm: FarmProcess) -> None:
    client = pymodbus_client(farm, 11)
    try:
        response = client.read_holding_registers(2000, count=1)
        assert isinstance(response, ExceptionResponse) and response.exception_code == 2
    finally:
        client.close()


@pytest.mark.parametrize(
    "garbage",
    [
        struct.pack(">HHHB", 1, 7, 6, 1) + bytes(5),  # protocol id 7
        struct.pack(">HHHB", 1, 0, 1, 1),  # length 1 (< 2)
        struct.pack(">HHHB", 1, 0, 300, 1) + bytes(299),  # length 300 (> 254)
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["protocol-id", "short-length", "long-length", "http"],
)
def test_malformed_frame_closes_only_that_connection(farm: FarmProcess, garbage: bytes) -> None:
    bystander = pymodbus_client(farm, 12)
    try:
        assert not bystander.write_registers(0, [12, 34]).isError()
        with socket.create_connection((HOST, farm.port(12)), timeout=5) as sock:
            sock.sendall(garbage)
            assert sock.recv(100) == b""  # closed by the server, nothing answered
        assert bystander.read_holding_registers(0, count=2).registers == [12, 34]
    finally:
        bystander.close()
    assert farm.status()["servers_ready"] == farm.count


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_valid_and_malformed_frame_in_one_read(farm: FarmProcess) -> None:
    """The valid request ahead of the bad frame is answered, then the connection closes."""
    client = pymodbus_client(farm, 14)
    try:
        assert not client.write_registers(30, [3, 4]).isError()
    finally:
        client.close()
    good = mbap(21, 1, struct.pack(">BHH", 3, 30, 2))
    bad = struct.pack(">HHHB", 22, 7, 6, 1) + struct.pack(">BHH", 3, 30, 2)  # protocol id 7
    with socket.create_connection((HOST, farm.port(14)), timeout=5) as sock:
        sock.sendall(good + bad)  # one write: the server reads both at once
        assert read_until_closed(sock) == mbap(21, 1, bytes([3, 4, 0, 3, 0, 4]))
    with socket.create_connection((HOST, farm.port(14)), timeout=5) as sock:
        sock.sendall(bad + good)  # the bad frame first: nothing after it is answered
        assert read_until_closed(sock) == b""
    assert raw_exchange(farm.port(14), good, 1) == [mbap(21, 1, bytes([3, 4, 0, 3, 0, 4]))]


def test_requests_delivered_a_byte_at_a_time(farm: FarmProcess) -> None:
    """Each byte in its own segment: the server waits for a whole frame, then answers it."""
    exchanges = [
        (
            mbap(31, 1, struct.pack(">BHHB3H", 16, 40, 3, 6, 7, 8, 9)),
            mbap(31, 1, struct.pack(">BHH", 16, 40, 3)),
        ),
        (
            mbap(32, 1, struct.pack(">BHH", 3, 40, 3)),
            mbap(32, 1, struct.pack(">BB3H", 3, 6, 7, 8, 9)),
        ),
    ]
    with socket.create_connection((HOST, farm.port(15)), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for request, expected in exchanges:
            for byte in request[:-1]:
                sock.sendall(bytes([byte]))
                # Pacing, not waiting for anything: each byte reaches the server on its own.
                time.sleep(0.005)
            sock.settimeout(0.2)
            with pytest.raises(TimeoutError):
                sock.recv(100)  # a frame short of one byte is not answered
            sock.settimeout(5)
            sock.sendall(request[-1:])
            answer = b""
            while len(answer) < len(expected):
                chunk = sock.recv(100)
                assert chunk, f"closed after {answer.hex()}"
                answer += chunk
            assert answer == expected
