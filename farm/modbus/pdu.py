"""Protocol data units: function codes, exception codes, request builders and answer parsers
(Modbus Application Protocol v1.1b3, sections 6 and 7).

Pure wire format, shared by the worker (its fast path builds exceptions with
`exception_pdu`), the load generator (`farm bench` sends `read`, `write_*`), the benchmarks and
the tests; imports nothing of the farm.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

ILLEGAL_FUNCTION = 0x01
ILLEGAL_ADDRESS = 0x02
ILLEGAL_VALUE = 0x03
DEVICE_FAILURE = 0x04
GATEWAY_NO_RESPONSE = 0x0B
EXCEPTION_BIT = 0x80  # an answer's function code with this bit set is an exception (7)
_ADDRESS_COUNT = struct.Struct(">BHH")
_WRITE_MANY = struct.Struct(">BHHB")


def exception_pdu(function_code: int, code: int) -> bytes:
    """The exception answer to a request of `function_code` (7: the code | 0x80, the code)."""
    return bytes(((function_code | EXCEPTION_BIT) & 0xFF, code))


def read(function_code: int, address: int, count: int) -> bytes:
    """A read request (FC 1, 2, 3, 4): starting address and quantity."""
    return _ADDRESS_COUNT.pack(function_code, address, count)


def write_coil(address: int, on: bool) -> bytes:
    """FC 5: 0xFF00 switches the coil on, 0x0000 off."""
    return _ADDRESS_COUNT.pack(5, address, 0xFF00 if on else 0)


def write_register(address: int, value: int) -> bytes:
    """FC 6."""
    return _ADDRESS_COUNT.pack(6, address, value)


def pack_bits(bits: Sequence[bool]) -> bytes:
    """Coils or inputs packed eight a byte, least significant bit first (6.1, 6.11)."""
    packed = bytearray((len(bits) + 7) // 8)
    for index, bit in enumerate(bits):
        if bit:
            packed[index // 8] |= 1 << (index % 8)
    return bytes(packed)


def write_coils(address: int, count: int, packed: bytes) -> bytes:
    """FC 15: `count` coils from `packed` (see `pack_bits`)."""
    return _WRITE_MANY.pack(15, address, count, len(packed)) + packed


def write_registers(address: int, values: Sequence[int]) -> bytes:
    """FC 16."""
    data = struct.pack(f">{len(values)}H", *values)
    return _WRITE_MANY.pack(16, address, len(values), len(data)) + data


def diagnostic(sub_function: int, data: bytes = b"\x00\x00") -> bytes:
    """FC 08: a sub-function and its data (00, Return Query Data, echoes any even count)."""
    return struct.pack(">BH", 8, sub_function) + data


def device_identification(read_code: int, object_id: int = 0) -> bytes:
    """FC 43/14 Read Device Identification: read code 1-4 and the first object's id."""
    return bytes((43, 14, read_code, object_id))


def is_exception(answer: bytes) -> bool:
    return bool(answer[0] & EXCEPTION_BIT)


def registers(answer: bytes) -> list[int]:
    """The registers of an FC 3/4 answer (function code, byte count, values)."""
    return list(struct.unpack(f">{answer[1] // 2}H", answer[2 : 2 + answer[1]]))


def bits(answer: bytes, count: int) -> list[bool]:
    """The first `count` bits of an FC 1/2 answer."""
    packed = answer[2 : 2 + answer[1]]
    return [bool(packed[index // 8] >> (index % 8) & 1) for index in range(count)]
