"""The Modbus engine: request semantics and responses, one `Device` per server. The only
module that imports pymodbus.

Sits inside a worker (... worker -> connection -> engine -> banks): every framing's
connection (farm.worker.transports.connection's MBAP, farm.worker.transports.rtu_over_tcp,
farm.worker.transports.udp,
farm.worker.transports.tls) hands each request PDU to its server's `Device`.

Request semantics come from pymodbus (`DecodePDU`, `request.datastore_update`,
`response.encode`) run against `UnitContext`, our per-unit view of the banks. Where
pymodbus and the Modbus Application Protocol spec v1.1b3 disagree, the spec wins:
  - a short body or a quantity out of range answers 03 (pymodbus answers 01);
  - FC 5 with a value other than 0x0000/0xFF00 answers 03 (pymodbus writes True);
  - FC 15 with more than 0x07B0 coils answers 03 (pymodbus allows 2000);
  - FC 43/14 answers from each server's own identity (pymodbus has one per process), with
    farm.modbus.deviceid: objects split over answers that fit in a PDU, individual access
    one object, conformity 0x82 (0x83 with extended objects);
  - FC 08/00 echoes N x 2 data bytes (6.8), N >= 1; other counts answer 03;
  - a request whose function code has the exception bit (0x80-0xFF, reserved for exception
    answers by 4.1) is not answered: an answer, its code | 0x80, would read as an exception
    to another function code (7).
Unknown unit ids answer 0B (gateway target failed to respond); units 0xFF and 0, which the
TCP implementation guide (4.4.2) gives for addressing a TCP server directly, mean the
device's first unit (on RTU, farm.worker.framing keeps 0 a broadcast). FC 07, 08, 11, 12
and 17 are farm.worker.diagnostics's, FC 20, 21 and 24 farm.worker.records's, each per
device (pymodbus keeps their state once per process).
Function codes other than these, 1-6, 15, 16, 22, 23 and 43/14 answer 01.

`Device.answer(unit, pdu)` answers one request PDU, or returns None when the device stays
silent (listen-only mode, FC 08/04): every framing calls it, MBAP
(farm.worker.transports.connection),
RTU over TCP (farm.worker.framing), UDP (farm.worker.transports.udp), TLS
(farm.worker.transports.tls).

`fast_answer` (farm.worker.fastpath) handles the hot function codes (1-6, 15, 16) straight from
the banks; it must produce the same bytes as `reference_answer` (a property test holds it
to that).
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.mei_message import ReadDeviceInformationRequest

from farm.config.templates import Identity, Table
from farm.ipc.banks import UnitBank
from farm.ipc.diagnostics import local_block
from farm.ipc.stats import (
    EXCEPTION_SLOT,
    REQUEST_SLOT,
    UNANSWERED,
    local_counters,
)
from farm.modbus import deviceid
from farm.modbus.pdu import (
    EXCEPTION_BIT,
    GATEWAY_NO_RESPONSE,
    ILLEGAL_FUNCTION,
    ILLEGAL_VALUE,
    exception_pdu,
)
from farm.worker import diagnostics, records
from farm.worker.diagnostics import Diagnostics
from farm.worker.fastpath import fast_answer
from farm.worker.observe.clients import ClientBook
from farm.worker.observe.writes import JournalWrites
from farm.worker.records import Records

if TYPE_CHECKING:
    from farm.ipc.journal import ServerJournal
    from farm.worker.faults.hooks import ServerFaults
    from farm.worker.observe.callers import Caller

# A frame that a client got wrong is the client's problem, counted in metrics; pymodbus
# would log an ERROR or WARNING line for each.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL + 1)

BROADCAST_TCP_UNIT = 0xFF
DIRECT_TCP_UNIT = 0  # TCP implementation guide 4.4.2: 0 also reaches the server itself
SUPPORTED_FUNCTIONS = frozenset({1, 2, 3, 4, 5, 6, 15, 16, 22, 23, 43})
FC_TABLE = {
    1: Table.COILS,
    5: Table.COILS,
    15: Table.COILS,
    2: Table.DISCRETE_INPUTS,
    3: Table.HOLDING_REGISTERS,
    6: Table.HOLDING_REGISTERS,
    16: Table.HOLDING_REGISTERS,
    22: Table.HOLDING_REGISTERS,
    23: Table.HOLDING_REGISTERS,
    4: Table.INPUT_REGISTERS,
}
_DECODER = DecodePDU(is_server=True)


class UnitContext:
    """The context pymodbus's `datastore_update` expects, over one unit's banks."""

    def __init__(self, bank: UnitBank) -> None:
        self.bank = bank

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        table = FC_TABLE[func_code]
        if not self.bank.in_range(table, address, count):
            return ExcCodes.ILLEGAL_ADDRESS
        if table.is_bits:
            return self.bank.read_bits(table, address, count)
        return self.bank.read_registers(table, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int | bool]
    ) -> ExcCodes | None:
        table = FC_TABLE[func_code]
        if not self.bank.in_range(table, address, len(values)):
            return ExcCodes.ILLEGAL_ADDRESS
        if not self.bank.writable(table, address, len(values)):
            return ExcCodes.ILLEGAL_ADDRESS
        bank = self.bank
        width = 1 if table.is_bits else 2
        view = bank.view(table)
        before = bytes(view[width * address : width * (address + len(values))])
        if table.is_bits:
            bank.write_bits(table, address, [bool(v) for v in values])
        else:
            bank.write_registers(table, address, [int(v) for v in values])
        if bank.journal is not None:
            after = bytes(view[width * address : width * (address + len(values))])
            bank.journal(bank.unit_id, func_code, table, address, before, after)
        return None


def identity_objects(identity: Identity, server_name: str) -> dict[int, bytes]:
    """A server's FC 43/14 objects by id: the texts it was given, `{name}` substituted.
    The config refuses an object that cannot fit in one answer, or is not ASCII; a fleet
    grown at run time may still make a longer name, so the bytes are cut to fit here."""
    return {
        oid: text.replace("{name}", server_name).encode("ascii", "replace")[: deviceid.MAX_OBJECT]
        for oid, text in identity.objects()
    }


def _run_now(coroutine: Coroutine[Any, Any, ModbusPDU]) -> ModbusPDU:
    """Drive a `datastore_update` coroutine that never suspends (our context does not)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: ModbusPDU = done.value
        return result
    coroutine.close()
    raise RuntimeError("datastore_update suspended; UnitContext must not await")


def _encode(response: ModbusPDU) -> bytes:
    return bytes((response.function_code,)) + response.encode()


def reference_answer(bank: UnitBank, pdu: bytes, identity: dict[int, bytes] | None) -> bytes:
    """Answer one request PDU through pymodbus's PDU classes (spec corrections applied)."""
    fc = pdu[0]
    if fc not in SUPPORTED_FUNCTIONS:
        return exception_pdu(fc, ILLEGAL_FUNCTION)
    request = _DECODER.decode(pdu)
    if request is None:
        return exception_pdu(fc, ILLEGAL_VALUE)
    if fc == 5 and len(pdu) >= 5 and pdu[3:5] not in (b"\x00\x00", b"\xff\x00"):
        return exception_pdu(fc, ILLEGAL_VALUE)
    if fc == 15 and request.count > 0x07B0:
        return exception_pdu(fc, ILLEGAL_VALUE)
    if isinstance(request, ReadDeviceInformationRequest):
        if identity is None:
            return exception_pdu(fc, ILLEGAL_FUNCTION)
        return deviceid.answer(identity, request.read_code, request.object_id)
    context = cast(ModbusServerContext, UnitContext(bank))
    response = _run_now(request.datastore_update(context, 0))
    if isinstance(response, ExceptionResponse):
        return exception_pdu(fc, response.exception_code)
    return _encode(response)


class Recorder(Protocol):
    """What a traced device hands each request and its answer (farm.worker.observe.trace)."""

    def record(self, device: Device, unit: int, pdu: bytes, answer: bytes | None) -> None: ...


class Device:
    """One simulated server: its banks, its identity, its counters (farm.ipc.stats layout),
    its diagnostics (FC 07/08/11/12/17) and its files and FIFOs (FC 20/21/24)."""

    __slots__ = (
        "_identity",
        "banks",
        "caller",
        "clients",
        "counters",
        "diagnostics",
        "faults",
        "identity_template",
        "journal",
        "name",
        "records",
        "tracer",
    )

    def __init__(
        self,
        name: str,
        banks: dict[int, UnitBank],
        identity: Identity,
        counters: memoryview | None = None,
        *,
        block: memoryview | None = None,  # its diagnostics block (farm.ipc.diagnostics)
        files: dict[int, memoryview] | None = None,
        fifos: Sequence[tuple[int, int]] = (),  # (unit id, pointer address)
        exception_status_coil: int = 0,
    ) -> None:
        self.name = name
        self.banks = dict(banks)
        for alias in (BROADCAST_TCP_UNIT, DIRECT_TCP_UNIT):
            if alias not in self.banks and banks:
                self.banks[alias] = next(iter(banks.values()))
        self.identity_template = identity
        self._identity: dict[int, bytes] | None = None
        self.counters = local_counters() if counters is None else counters
        self.faults: ServerFaults | None = None  # farm.worker.faults.hooks; None: no fault
        self.diagnostics = Diagnostics(
            self.counters,
            local_block() if block is None else block,
            identity.server_id,
            name,
            exception_status_coil,
        )
        self.records = Records(files or {}, fifos)
        self.journal: ServerJournal | None = None  # farm.ipc.journal; None: not journalled
        # Who sent the request being answered: each connection sets it on every read.
        self.caller: Caller | None = None
        self.clients: ClientBook | None = None  # made when the first client connects
        # farm.worker.observe.trace's, while the device is traced (never read otherwise).
        self.tracer: Recorder | None = None

    def keep_journal(self, journal: ServerJournal) -> None:
        """Journal every write a client makes (each bank's `journal` hook, in farm.worker.
        fastpath and `UnitContext`), with the caller that made it."""
        self.journal = journal
        hook = JournalWrites(journal, self)
        for bank in self.banks.values():
            bank.journal = hook
        self.records.journal = hook.file_written

    def client_book(self) -> ClientBook:
        if self.clients is None:
            self.clients = ClientBook()
        return self.clients

    def identity(self) -> dict[int, bytes]:
        # Built on first use: most devices are never asked.
        if self._identity is None:
            self._identity = identity_objects(self.identity_template, self.name)
        return self._identity

    def answer(self, unit: int, pdu: bytes) -> bytes | None:
        """The response PDU to a request PDU for `unit`; None: the device stays silent."""
        counters = self.counters
        counters[REQUEST_SLOT[pdu[0]]] += 1
        caller = self.caller
        if caller is not None:
            # Poll bookkeeping (farm.worker.observe.clients), inline: it runs on every request.
            if pdu == caller.last and unit == caller.unit:
                caller.times.append(caller.now)
            else:
                caller.seen(unit, pdu)
        if self.diagnostics.listen_only:
            self.diagnostics.unanswered(pdu)
            return None
        bank = self.banks.get(unit)
        response: bytes | None
        if bank is None:
            response = exception_pdu(pdu[0], GATEWAY_NO_RESPONSE)
        else:
            response = fast_answer(bank, pdu)
            if response is None:
                response = self._answer_slowly(bank, pdu)
                if response is None:
                    return None  # FC 08/04 enters listen-only mode without an answer
        if response[0] & 0x80:
            counters[EXCEPTION_SLOT[response[1]]] += 1
            if caller is not None:
                caller.client.exceptions += 1
            self.diagnostics.exception_sent(response[1])
        return response

    def _answer_slowly(self, bank: UnitBank, pdu: bytes) -> bytes | None:
        fc = pdu[0]
        if fc & EXCEPTION_BIT:  # not a request (4.1): no answer could read as its own (7)
            self.counters[UNANSWERED] += 1
            return None
        if fc in diagnostics.CODES:
            return self.diagnostics.answer(bank, pdu)
        if fc in records.CODES:
            return self.records.answer(bank, pdu)
        identity = self.identity() if fc == 43 else None
        return reference_answer(bank, pdu, identity)
