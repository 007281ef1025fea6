"""The write journal's worker side: a write's target, its values before and after, recorded
in the server's journal (farm.ipc.journal) with who wrote it.

Part of the engine (... engine -> writes -> journal): `Device.answer` sends the writing
function codes (`JOURNALLED`) here when the device has a journal; reads never come here, so
they pay one table lookup. A write that fails (an exception answer) is not journalled.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from farm.config.templates import Table
from farm.ipc.banks import UnitBank
from farm.ipc.journal import Peer, ServerJournal
from farm.worker.observe.callers import Caller

WRITING_CODES = (5, 6, 15, 16, 22, 23)
JOURNALLED = bytes(1 if code in WRITING_CODES else 0 for code in range(256))
_WORD = struct.Struct(">H")
_UNKNOWN = Peer(bytes(16), 0, 1)


def target(pdu: bytes) -> tuple[Table, int, int] | None:
    """The table, address and count a write request writes (None: too short to say)."""
    fc = pdu[0]
    if fc == 23:  # read/write multiple: the writing half
        if len(pdu) < 9:
            return None
        return Table.HOLDING_REGISTERS, _WORD.unpack_from(pdu, 5)[0], _WORD.unpack_from(pdu, 7)[0]
    if len(pdu) < 5:
        return None
    address = _WORD.unpack_from(pdu, 1)[0]
    if fc == 5:
        return Table.COILS, address, 1
    if fc in (6, 22):
        return Table.HOLDING_REGISTERS, address, 1
    count = _WORD.unpack_from(pdu, 3)[0]
    return (Table.COILS if fc == 15 else Table.HOLDING_REGISTERS), address, count


def entries(bank: UnitBank, table: Table, address: int, count: int) -> bytes:
    """The bank's bytes of a range: a byte per coil, two per register."""
    width = 1 if table.is_bits else 2
    return bytes(bank.view(table)[width * address : width * (address + count)])


def answer_journalled(
    journal: ServerJournal,
    caller: Caller | None,
    bank: UnitBank,
    unit: int,
    pdu: bytes,
    answer: Callable[[], bytes | None],
) -> bytes | None:
    """`answer()` a write request, journalling the write if it succeeded."""
    where = target(pdu)
    if where is None or not bank.in_range(*where) or where[2] == 0:
        return answer()
    table, address, count = where
    before = entries(bank, table, address, count)
    response = answer()
    if response is not None and response[0] == pdu[0]:
        after = entries(bank, table, address, count)
        peer = caller.peer() if caller is not None else _UNKNOWN
        journal.record(
            peer, unit, pdu[0], table, address, after, before, time.time_ns(), time.monotonic_ns()
        )
    return response
