"""RTU over TCP framing in process: every two-byte FC 08/00 echo value, frames of a wrong
byte count, and a fuzz of every supported function code joined and split at random, each
answer checked against the TCP engine (issue 20, items 1 and 2).

The worker's own `RtuConnection` and `ModbusConnection` are driven with bytes through a
stand-in transport inside a running event loop (the RTU connection's silence is a loop
timer); tests/test_conformance.py holds the same rules over real sockets.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farm.config.templates import Identity
from farm.ipc.banks import UnitBank
from farm.modbus import mbap, pdu, rtu
from farm.worker.engine import Device
from farm.worker.limits.guard import unlimited
from farm.worker.transports.connection import ModbusConnection
from farm.worker.transports.rtu_over_tcp import SILENCE_S, RtuConnection

pytestmark = pytest.mark.timeout(600)
ECHO = struct.Struct(">BHH")


class Sink:
    """Stands in for a transport: keeps everything written."""

    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


def device(name: str = "device-0000") -> Device:
    memory = bytearray(4 * 2000)
    view = memoryview(memory)
    for index in range(1000):  # registers 0..999 hold their own address
        struct.pack_into(">H", memory, 4000 + 2 * index, index)
    bank = UnitBank(
        unit_id=1,
        coils=view[0:2000],
        discrete_inputs=view[2000:4000],
        holding_registers=view[4000:6000],
        input_registers=view[6000:8000],
    )
    return Device(
        name, {1: bank}, Identity(vendor_name="ACME"), files={4: memoryview(bytearray(20))}
    )


def connect(kind: type[ModbusConnection]) -> tuple[ModbusConnection, Sink]:
    made = device()
    connection = kind(made, unlimited(made.name, made.counters))
    sink = Sink()
    connection.connection_made(cast(Any, sink))
    return connection, sink


def run(coroutine: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coroutine())


def echo(value: int) -> bytes:
    return rtu.frame(1, ECHO.pack(8, 0, value))


@pytest.mark.clause("rtu-length")
def test_every_two_byte_echo_one_frame_each_split_at_every_byte() -> None:
    async def check() -> None:
        connection, sink = connect(RtuConnection)
        for value in range(65536):
            frame = echo(value)
            for cut in range(len(frame)):  # 0: whole; else two reads split after `cut` bytes
                sink.out.clear()
                if cut:
                    connection.data_received(frame[:cut])
                    connection.data_received(frame[cut:])
                else:
                    connection.data_received(frame)
                assert sink.out == frame, f"echo {value:04x} split at {cut}: {sink.out.hex()}"
        connection.connection_lost(None)

    run(check)


@pytest.mark.clause("rtu-length")
def test_every_two_byte_echo_pipelined() -> None:
    async def check() -> None:
        connection, sink = connect(RtuConnection)
        stream = b"".join(echo(value) for value in range(65536))
        for size in (1, 7, 8, 9, 1000, 1460):  # one stream cut in reads of `size` bytes
            sink.out.clear()
            for start in range(0, len(stream), size):
                connection.data_received(stream[start : start + size])
            assert sink.out == stream, f"reads of {size} bytes"
        connection.connection_lost(None)

    run(check)


def test_the_issues_frame_is_one_frame() -> None:
    """`01 08 00 00 00 1B A0 00`: its first seven bytes end in a matching CRC too."""
    frame = bytes.fromhex("01 08 0000 001B A000")
    assert frame == echo(0x001B) and rtu.crc_ok(frame, 0, 7)

    async def check() -> None:
        connection, sink = connect(RtuConnection)
        read = rtu.frame(1, pdu.read(3, 5, 1))
        connection.data_received(frame + read)
        assert sink.out == frame + rtu.frame(1, bytes.fromhex("03 02 0005"))

    run(check)


@pytest.mark.clause("rtu-resync")
def test_a_wrong_byte_count_is_answered_03_and_the_next_request_kept() -> None:
    wrong = rtu.frame(1, bytes.fromhex("10 0000 0001 04 0000"))  # 4 counted, 2 sent
    read = rtu.frame(1, pdu.read(3, 7, 1))
    refused, answered = rtu.frame(1, b"\x90\x03"), rtu.frame(1, bytes.fromhex("03 02 0007"))

    async def check() -> None:
        connection, sink = connect(RtuConnection)
        connection.data_received(wrong + read)  # pipelined: found when the next frame comes
        assert sink.out == refused + answered
        sink.out.clear()
        connection.data_received(wrong)  # alone: found at the silence after it
        assert sink.out == b""
        await asyncio.sleep(SILENCE_S * 3)
        assert sink.out == refused
        connection.data_received(read)
        assert sink.out == refused + answered

    run(check)


def test_an_odd_echo_is_answered_03_at_the_silence() -> None:
    odd = rtu.frame(1, bytes.fromhex("08 0000 AA"))

    async def check() -> None:
        connection, sink = connect(RtuConnection)
        connection.data_received(odd)
        await asyncio.sleep(SILENCE_S * 3)
        assert sink.out == rtu.frame(1, b"\x88\x03")

    run(check)


# -- the fuzz: every supported function code, RTU against the TCP engine -----------------


def requests() -> st.SearchStrategy[bytes]:
    address = st.integers(0, 990)
    count = st.integers(1, 10)
    registers = st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=10)
    coils = st.lists(st.booleans(), min_size=1, max_size=20)
    return st.one_of(
        st.builds(pdu.read, st.sampled_from((1, 2, 3, 4)), address, count),
        st.builds(pdu.write_coil, address, st.booleans()),
        st.builds(pdu.write_register, address, st.integers(0, 0xFFFF)),
        st.builds(lambda a, c: pdu.write_coils(a, len(c), pdu.pack_bits(c)), address, coils),
        st.builds(pdu.write_registers, address, registers),
        st.just(b"\x07"),  # read exception status
        st.builds(
            lambda data: pdu.diagnostic(0, data),
            st.binary(min_size=1, max_size=20).map(lambda d: d + bytes(len(d) % 2)),
        ),
        st.sampled_from([pdu.diagnostic(sub) for sub in (0x0B, 0x0C, 0x0E, 0x0F)]),
        st.just(b"\x0b"),  # comm event counter
        st.just(b"\x11"),  # report server id
        st.builds(
            lambda a, v: struct.pack(">BHHH", 22, a, 0xFFFF, v), address, st.integers(0, 0xFFFF)
        ),
        st.builds(
            lambda a, values: (
                struct.pack(">BHHHHB", 23, a, 2, a, len(values), 2 * len(values))
                + struct.pack(f">{len(values)}H", *values)
            ),
            address,
            registers,
        ),
        st.builds(
            lambda record: bytes((20, 7, 6)) + struct.pack(">HHH", 4, record, 2),
            st.integers(0, 8),
        ),
        st.builds(
            lambda record, value: bytes((21, 9, 6)) + struct.pack(">HHHH", 4, record, 1, value),
            st.integers(0, 9),
            st.integers(0, 0xFFFF),
        ),
        st.builds(
            lambda code, oid: bytes((43, 14, code, oid)), st.integers(1, 4), st.integers(0, 6)
        ),
    )


def chunks(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        yield data[start:cut]
        start = cut
    yield data[start:]


@pytest.mark.clause("rtu-fuzz")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sequence=st.lists(requests(), min_size=1, max_size=20),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_fuzz_rtu_answers_like_the_tcp_engine(sequence: list[bytes], cuts: list[int]) -> None:
    async def check() -> None:
        serial, serial_out = connect(RtuConnection)
        tcp, tcp_out = connect(ModbusConnection)
        for chunk in chunks(b"".join(rtu.frame(1, request) for request in sequence), cuts):
            serial.data_received(chunk)
        for chunk in chunks(
            b"".join(mbap.frame(n, 1, request) for n, request in enumerate(sequence)), cuts
        ):
            tcp.data_received(chunk)
        expected, position = [], 0
        while position < len(tcp_out.out):
            size = mbap.frame_size(tcp_out.out, position)
            expected.append(rtu.frame(1, bytes(tcp_out.out[position + 7 : position + size])))
            position += size
        assert len(expected) == len(sequence)
        assert serial_out.out == b"".join(expected)

    run(check)
