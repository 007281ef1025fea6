"""MBAP framing (Modbus/TCP, and the farm's TLS and UDP): the 7-byte header before each PDU.

Pure wire format, shared by the worker's connections (farm.worker.transports), the load
generator (farm.bench), the benchmarks and the tests; imports nothing of the farm. A header
is transaction id, protocol id (0), length (unit id + PDU: 2 to 254 bytes, as a PDU holds at
most 253), unit id (Modbus Messaging on TCP/IP Implementation Guide v1.0b, 3.1.3).
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
HEADER_SIZE = 7
MIN_LENGTH = 2  # unit id and function code
MAX_LENGTH = 254  # unit id + PDU of at most 253 bytes
_TAIL = struct.Struct(">HHB")


def frame(transaction: int, unit: int, pdu: bytes) -> bytes:
    """The MBAP frame of a PDU."""
    return HEADER.pack(transaction, 0, len(pdu) + 1, unit) + pdu


def tail(unit: int, pdu: bytes) -> bytes:
    """A frame after its transaction id (the load generator prefixes a new id each time)."""
    return _TAIL.pack(0, len(pdu) + 1, unit) + pdu


def header_ok(protocol: int, length: int) -> bool:
    """Whether a header's protocol id and length field can start a Modbus/TCP frame."""
    return protocol == 0 and MIN_LENGTH <= length <= MAX_LENGTH


def frame_size(header: bytes | bytearray, start: int = 0) -> int:
    """The whole frame's size (header included) from the header at `start`."""
    return 6 + ((header[start + 4] << 8) | header[start + 5])
