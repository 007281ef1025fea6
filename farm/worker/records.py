"""FC 20/21 (Read/Write File Record) and FC 24 (Read FIFO Queue) for one device.

Part of the engine (... worker -> engine -> records -> banks): `Device.answer` hands these
function codes here. No pymodbus: its server answers a dummy record and a dummy queue.
Files live in the device's part of its shard's segment (farm.config.plan lays them out
after the diagnostics blocks), FIFOs in its holding registers, so both survive a worker
restart and a client's writes stay.

Modbus Application Protocol spec v1.1b3:
  - 6.14 FC 20: sub-requests of 7 bytes (reference type 6, file number, record number,
    record length), a byte count of 07-F5 and a multiple of 7, else 03; a reference type
    other than 6, a file the template lacks, a record past 9999 or past the file's end 02;
    a record length of 0, or an answer longer than a PDU, 03.
  - 6.15 FC 21: sub-requests carry their data; a byte count of 09-FB that the sub-requests
    do not fill exactly answers 03, a bad file or record 02; nothing is written unless every
    sub-request is good; the answer echoes the request. Each sub-request written is one
    write in the journal (`journal`, farm.worker.observe.writes), with the records before.
  - 6.18 FC 24: the FIFO at a pointer address the template declares (02 for any other): the
    count in that holding register, the queued values in the ones after it (a count over
    31 answers 03). Reading does not empty the queue.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection

from farm.ipc.banks import UnitBank
from farm.modbus.pdu import ILLEGAL_ADDRESS, ILLEGAL_VALUE, exception_pdu

CODES = frozenset({20, 21, 24})
REFERENCE_TYPE = 6
LAST_RECORD = 0x270F
MAX_PDU = 253
FIFO_MOST = 31
_SUB_REQUEST = struct.Struct(">BHHH")
# The journal's hook: (unit, file number, first record, records before, records after).
FileJournal = Callable[[int, int, int, bytes, bytes], None]


class Records:
    """One device's files (by number, two bytes a record) and FIFO pointers (unit, address)."""

    __slots__ = ("fifos", "files", "journal")

    def __init__(
        self, files: dict[int, memoryview], fifos: Collection[tuple[int, int]] = ()
    ) -> None:
        self.files = files
        self.fifos = frozenset(fifos)
        self.journal: FileJournal | None = None  # None: writes are not journalled

    def answer(self, bank: UnitBank, pdu: bytes) -> bytes:
        if pdu[0] == 20:
            return self._read_files(pdu)
        if pdu[0] == 21:
            return self._write_files(bank.unit_id, pdu)
        return self._read_fifo(bank, pdu)

    def _record_range(self, number: int, record: int, length: int) -> memoryview | None:
        """The bytes of records record..record+length-1 of a file, or None if out of it."""
        view = self.files.get(number)
        if view is None or record > LAST_RECORD or 2 * (record + length) > len(view):
            return None
        return view[2 * record : 2 * (record + length)]

    def _read_files(self, pdu: bytes) -> bytes:
        count = pdu[1] if len(pdu) > 1 else 0
        if not 0x07 <= count <= 0xF5 or count % 7 or len(pdu) < 2 + count:
            return exception_pdu(20, ILLEGAL_VALUE)
        parts = []
        size = 2  # function code and byte count
        for offset in range(2, 2 + count, 7):
            reference, number, record, length = _SUB_REQUEST.unpack_from(pdu, offset)
            if length == 0:
                return exception_pdu(20, ILLEGAL_VALUE)
            records = self._record_range(number, record, length)
            if reference != REFERENCE_TYPE or records is None:
                return exception_pdu(20, ILLEGAL_ADDRESS)
            size += 2 + 2 * length
            if size > MAX_PDU:
                return exception_pdu(20, ILLEGAL_VALUE)
            parts.append(bytes((1 + 2 * length, REFERENCE_TYPE)) + records)
        body = b"".join(parts)
        return bytes((20, len(body))) + body

    def _write_files(self, unit: int, pdu: bytes) -> bytes:
        count = pdu[1] if len(pdu) > 1 else 0
        if not 0x09 <= count <= 0xFB or len(pdu) < 2 + count:
            return exception_pdu(21, ILLEGAL_VALUE)
        writes = []
        offset, end = 2, 2 + count
        while offset < end:
            if end - offset < 7:
                return exception_pdu(21, ILLEGAL_VALUE)
            reference, number, record, length = _SUB_REQUEST.unpack_from(pdu, offset)
            data_end = offset + 7 + 2 * length
            if length == 0 or data_end > end:
                return exception_pdu(21, ILLEGAL_VALUE)
            records = self._record_range(number, record, length)
            if reference != REFERENCE_TYPE or records is None:
                return exception_pdu(21, ILLEGAL_ADDRESS)
            writes.append((number, record, records, pdu[offset + 7 : data_end]))
            offset = data_end
        journal = self.journal
        for number, record, records, data in writes:
            before = bytes(records) if journal is not None else b""
            records[:] = data
            if journal is not None:
                journal(unit, number, record, before, bytes(data))
        return pdu[:end]

    def _read_fifo(self, bank: UnitBank, pdu: bytes) -> bytes:
        if len(pdu) < 3:
            return exception_pdu(24, ILLEGAL_VALUE)
        address = (pdu[1] << 8) | pdu[2]
        if (bank.unit_id, address) not in self.fifos:
            return exception_pdu(24, ILLEGAL_ADDRESS)
        view = bank.holding_registers
        count = (view[2 * address] << 8) | view[2 * address + 1]
        if count > FIFO_MOST:
            return exception_pdu(24, ILLEGAL_VALUE)
        values = bytes(view[2 * address + 2 : 2 * (address + 1 + count)])
        return struct.pack(">BHH", 24, 2 + 2 * count, count) + values
