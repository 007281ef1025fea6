"""RTU framing arithmetic (farm.modbus.rtu) against pymodbus's own CRC and the spec's frame sizes."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer.rtu import FramerRTU

from farm.modbus import rtu


def test_crc_of_the_serial_line_specs_example() -> None:
    """Modbus over serial line v1.02, 6.2.2: read 10 holding registers of slave 1 ends C5 CD."""
    assert rtu.frame(1, bytes.fromhex("03 0000 000A")).hex() == "01030000000ac5cd"


@given(st.binary(min_size=1, max_size=256))
def test_crc_agrees_with_pymodbus(data: bytes) -> None:
    expected = FramerRTU.compute_CRC(data)  # pymodbus gives it high byte first
    assert rtu.crc(data) == ((expected & 0xFF) << 8) | (expected >> 8)


REQUESTS = {
    "read holding registers": bytes.fromhex("03 0000 000A"),
    "write single coil": bytes.fromhex("05 00AC FF00"),
    "read exception status": bytes([7]),
    "diagnostics, restart": bytes.fromhex("08 0001 0000"),
    "get comm event counter": bytes([11]),
    "get comm event log": bytes([12]),
    "write multiple coils": bytes.fromhex("0F 0013 000A 02 CD01"),
    "write multiple registers": bytes.fromhex("10 0001 0002 04 000A 0102"),
    "report server id": bytes([17]),
    "read file record": bytes.fromhex("14 0E 06 0004 0001 0002 06 0003 0009 0002"),
    "write file record": bytes.fromhex("15 0D 06 0004 0007 0003 06AF 04BE 100D"),
    "mask write register": bytes.fromhex("16 0004 00F2 0025"),
    "read/write registers": bytes.fromhex("17 0003 0006 000E 0003 06 00FF 00FF 00FF"),
    "read fifo queue": bytes.fromhex("18 04DE"),
    "read device identification": bytes.fromhex("2B 0E 01 00"),
}


def test_request_lengths_from_content() -> None:
    """The spec's example requests, framed: each one's length is told from its first bytes."""
    for name, pdu in REQUESTS.items():
        frame = rtu.frame(1, pdu)
        assert rtu.request_length(frame, 0) == len(frame), name
        assert rtu.request_length(frame[:3], 0) in (rtu.NEED_MORE, len(frame)), name


def test_an_echo_ends_at_the_first_even_length_whose_crc_matches() -> None:
    frame = rtu.frame(1, bytes.fromhex("08 0000 A537 0102"))
    assert rtu.request_length(frame, 0) == rtu.ECHO
    assert rtu.echo_end(frame + rtu.frame(1, bytes([7])), 0) == len(frame)
    assert rtu.echo_end(frame[:-1], 0) == rtu.NEED_MORE
    issue = bytes.fromhex("01 08 0000 001B A000")  # its first 7 bytes end in a matching CRC
    assert rtu.search_end(issue, 0) == 7 and rtu.echo_end(issue, 0) == 8


def test_response_lengths() -> None:
    for pdu in (
        bytes.fromhex("03 04 0001 0002"),
        bytes.fromhex("83 02"),
        bytes.fromhex("06 0001 0003"),
        struct.pack(">BHH", 24, 6, 2) + bytes(4),
        bytes.fromhex("11 03 4D FF 41"),
    ):
        frame = rtu.frame(1, pdu)
        assert rtu.response_length(frame, 0) == len(frame), pdu.hex()
