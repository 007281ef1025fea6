"""The fast path: the hot function codes (1-6, 15, 16) answered straight from the banks.

Part of the engine (... worker -> engine -> fastpath -> banks), split out because it must
not import pymodbus: every answer here must be byte-for-byte the answer farm.worker.engine's
`reference_answer` gives through pymodbus's PDU classes, spec corrections included
(tests/test_engine_equivalence.py drives random requests, valid and invalid, through both).
It skips decoding into objects: a read of registers is one slice of the bank. A write that
succeeds is handed to the bank's `journal` hook, when it has one (farm.worker.observe.writes).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from farm.config.templates import Table
from farm.ipc.banks import UnitBank
from farm.modbus.pdu import ILLEGAL_ADDRESS, ILLEGAL_VALUE, exception_pdu

_ADDRESS_COUNT = struct.Struct(">HH")
_GATHER_BITS = 0x0102040810204080  # multiplies eight 0/1 bytes into one packed byte
# A packed byte of coils (FC 15) spread to eight 0/1 bytes, least significant bit first.
_SPREAD_BITS = tuple(bytes((value >> bit) & 1 for bit in range(8)) for value in range(256))
# The first two bytes of an FC 3 or 4 answer (function code, byte count), by count (1-125).
_REGISTER_HEADS: dict[int, tuple[bytes, ...]] = {
    fc: tuple(bytes((fc, 2 * count)) for count in range(126)) for fc in (3, 4)
}


def _read_bits(bank: UnitBank, pdu: bytes, view: memoryview) -> bytes:
    fc = pdu[0]
    if len(pdu) < 5:
        return exception_pdu(fc, ILLEGAL_VALUE)
    address, count = _ADDRESS_COUNT.unpack_from(pdu, 1)
    if not 1 <= count <= 2000:
        return exception_pdu(fc, ILLEGAL_VALUE)
    if address + count > len(view):
        return exception_pdu(fc, ILLEGAL_ADDRESS)
    bits = bytes(view[address : address + count]) + bytes(-count % 8)
    # Eight 0/1 bytes read as one little-endian word; the multiply gathers them into a byte.
    words = struct.unpack(f"<{len(bits) // 8}Q", bits)
    packed = bytes([((word * _GATHER_BITS) >> 56) & 0xFF for word in words])
    return bytes((fc, len(packed))) + packed


def _read_registers(bank: UnitBank, pdu: bytes, view: memoryview) -> bytes:
    fc = pdu[0]
    if len(pdu) < 5:
        return exception_pdu(fc, ILLEGAL_VALUE)
    address, count = _ADDRESS_COUNT.unpack_from(pdu, 1)
    if not 1 <= count <= 125:
        return exception_pdu(fc, ILLEGAL_VALUE)
    if 2 * (address + count) > len(view):
        return exception_pdu(fc, ILLEGAL_ADDRESS)
    head: bytes = _REGISTER_HEADS[fc][count]
    return head + view[2 * address : 2 * (address + count)]


def _write_coil(bank: UnitBank, pdu: bytes, view: memoryview) -> bytes:
    if len(pdu) < 5:
        return exception_pdu(5, ILLEGAL_VALUE)
    address, value = _ADDRESS_COUNT.unpack_from(pdu, 1)
    if value not in (0x0000, 0xFF00):
        return exception_pdu(5, ILLEGAL_VALUE)
    if address >= len(view) or not bank.writable(Table.COILS, address, 1):
        return exception_pdu(5, ILLEGAL_ADDRESS)
    before = view[address]
    view[address] = 1 if value else 0
    if bank.journal is not None:
        bank.journal(
            bank.unit_id, 5, Table.COILS, address, bytes((before,)), b"\1" if value else b"\0"
        )
    return pdu[:5]


def _write_register(bank: UnitBank, pdu: bytes, view: memoryview) -> bytes:
    if len(pdu) < 5:
        return exception_pdu(6, ILLEGAL_VALUE)
    address = (pdu[1] << 8) | pdu[2]
    if 2 * address >= len(view) or not bank.writable(Table.HOLDING_REGISTERS, address, 1):
        return exception_pdu(6, ILLEGAL_ADDRESS)
    journal = bank.journal
    before = bytes(view[2 * address : 2 * address + 2]) if journal is not None else b""
    view[2 * address : 2 * address + 2] = pdu[3:5]
    if journal is not None:
        journal(bank.unit_id, 6, Table.HOLDING_REGISTERS, address, before, pdu[3:5])
    return pdu[:5]


def _write_coils(bank: UnitBank, pdu: bytes, view: memoryview) -> bytes:
    if len(pdu) < 6:
        return exception_pdu(15, ILLEGAL_VALUE)
    address, count = _ADDRESS_COUNT.unpack_from(pdu, 1)
    byte_count = pdu[5]
    if not 1 <= count <= 0x07B0 or byte_count != (count + 7) // 8 or len(pdu) - 6 != byte_count:
        return exception_pdu(15, ILLEGAL_VALUE)
    if address + count > len(view) or not bank.writable(Table.COILS, address, count):
        return exception_pdu(15, ILLEGAL_ADDRESS)
    journal = bank.journal
    before = bytes(view[address : address + count]) if journal is not None else b""
    view[address : address + count] = b"".join([_SPREAD_BITS[byte] for byte in pdu[6:]])[:count]
    if journal is not None:
        after = bytes(view[address : address + count])
        journal(bank.unit_id, 15, Table.COILS, address, before, after)
    return pdu[:5]


def _write_registers(bank: UnitBank, pdu: bytes, view: memoryview) -> bytes:
    if len(pdu) < 6:
        return exception_pdu(16, ILLEGAL_VALUE)
    address, count = _ADDRESS_COUNT.unpack_from(pdu, 1)
    byte_count = pdu[5]
    if not 1 <= count <= 123 or byte_count != 2 * count or len(pdu) - 6 != byte_count:
        return exception_pdu(16, ILLEGAL_VALUE)
    if 2 * (address + count) > len(view) or not bank.writable(
        Table.HOLDING_REGISTERS, address, count
    ):
        return exception_pdu(16, ILLEGAL_ADDRESS)
    journal = bank.journal
    before = bytes(view[2 * address : 2 * (address + count)]) if journal is not None else b""
    view[2 * address : 2 * (address + count)] = pdu[6:]
    if journal is not None:
        journal(bank.unit_id, 16, Table.HOLDING_REGISTERS, address, before, pdu[6:])
    return pdu[:5]


_FastHandler = Callable[[UnitBank, bytes, memoryview], bytes]
_FAST: dict[int, tuple[_FastHandler, str]] = {
    1: (_read_bits, "coils"),
    2: (_read_bits, "discrete_inputs"),
    3: (_read_registers, "holding_registers"),
    4: (_read_registers, "input_registers"),
    5: (_write_coil, "coils"),
    6: (_write_register, "holding_registers"),
    15: (_write_coils, "coils"),
    16: (_write_registers, "holding_registers"),
}


def register_span(bank: UnitBank, pdu: bytes) -> memoryview | None:
    """For a valid FC 3 or 4 read: the bank's registers it answers with, as a live slice (the
    answer is its head and the slice's current bytes); None for any other request. A
    connection keeps it for a client that asks the same again (farm.worker.transports.
    connection)."""
    fc = pdu[0]
    if fc not in (3, 4) or len(pdu) < 5:
        return None
    view: memoryview = bank.holding_registers if fc == 3 else bank.input_registers
    address, count = _ADDRESS_COUNT.unpack_from(pdu, 1)
    if not 1 <= count <= 125 or 2 * (address + count) > len(view):
        return None
    return view[2 * address : 2 * (address + count)]


def fast_answer(bank: UnitBank, pdu: bytes) -> bytes | None:
    """Answer a hot function code straight from the bank, or None for the reference path."""
    entry = _FAST.get(pdu[0])
    if entry is None:
        return None
    handler, table = entry
    return handler(bank, pdu, getattr(bank, table))
