"""The Modbus TCP engine: MBAP framing, request semantics, responses. The only module that
imports pymodbus.

Sits inside a worker (... worker -> engine -> banks). One `ModbusConnection` (an
`asyncio.Protocol`) per client connection frames MBAP itself and answers every complete frame
in a buffer, in order, with one write: pipelined requests are legal Modbus/TCP.

Request semantics come from pymodbus (`DecodePDU`, `request.datastore_update`,
`response.encode`) run against `UnitContext`, our per-unit view of the banks. Where
pymodbus and the Modbus Application Protocol spec v1.1b3 disagree, the spec wins:
  - a short body or a quantity out of range answers 03 (pymodbus answers 01);
  - FC 5 with a value other than 0x0000/0xFF00 answers 03 (pymodbus writes True);
  - FC 15 with more than 0x07B0 coils answers 03 (pymodbus allows 2000);
  - FC 43/14 answers from each server's own identity (pymodbus has one per process), and
    basic stream access from an unknown object id restarts at object 0.
Unknown unit ids answer 0B (gateway target failed to respond); unit 0xFF, which the TCP
implementation guide recommends for addressing a TCP server directly, means the device's
first unit. FC 07, 08, 11, 12 and 17 are farm.worker.diagnostics's, FC 20, 21 and 24
farm.worker.records's, each per device (pymodbus keeps their state once per process).
Function codes other than these, 1-6, 15, 16, 22, 23 and 43/14 answer 01.

`Device.answer(unit, pdu)` answers one request PDU, or returns None when the device stays
silent (listen-only mode, FC 08/04): every framing calls it, MBAP here (`ModbusConnection`),
RTU over TCP (farm.worker.framing), UDP (farm.worker.udp), TLS (farm.worker.tls).

`fast_answer` (farm.worker.fastpath) handles the hot function codes (1-6, 15, 16) straight from
the banks; it must produce the same bytes as `reference_answer` (a property test holds it
to that).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from bisect import bisect_left
from collections.abc import Coroutine, Sequence
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, ClassVar, cast

from pymodbus.constants import DeviceInformation, ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.device import DeviceInformationFactory, ModbusDeviceIdentification
from pymodbus.pdu.mei_message import ReadDeviceInformationRequest, ReadDeviceInformationResponse

from farm.config.templates import Identity, Table
from farm.ipc.banks import UnitBank
from farm.ipc.diagnostics import local_block
from farm.ipc.stats import (
    BYTES_RECEIVED,
    BYTES_SENT,
    CONNECTIONS_ACCEPTED,
    CONNECTIONS_OPEN,
    DURATION,
    DURATION_BOUNDS_NS,
    DURATION_SUM_NS,
    EXCEPTION_SLOT,
    FIRST_BOUND_NS,
    MALFORMED_FRAMES,
    REQUEST_SLOT,
    local_counters,
)
from farm.worker import diagnostics, records
from farm.worker.diagnostics import Diagnostics
from farm.worker.fastpath import (
    GATEWAY_NO_RESPONSE,
    ILLEGAL_ADDRESS,
    ILLEGAL_FUNCTION,
    ILLEGAL_VALUE,
    exception_pdu,
    fast_answer,
)
from farm.worker.framing import MBAP, Framing
from farm.worker.limits import ServerConnections
from farm.worker.records import Records
from farm.worker.wheel import NOT_SCHEDULED

if TYPE_CHECKING:
    from farm.worker.faults import ServerFaults
    from farm.worker.outbox import Outbox

# A frame that a client got wrong is the client's problem, counted in metrics; pymodbus
# would log an ERROR or WARNING line for each.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL + 1)

BROADCAST_TCP_UNIT = 0xFF
MAX_MBAP_LENGTH = 254  # unit id + PDU of at most 253 bytes
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
# Backpressure (ModbusConnection): unsent answers past HIGH_WATER_BYTES pause reading until
# they drain below LOW_WATER_BYTES; a long read is answered FLUSH_INPUT_BYTES of requests at a
# time (at most 33 times as many bytes of answers: 8-byte requests, 260-byte answers).
HIGH_WATER_BYTES = 64 * 1024
LOW_WATER_BYTES = 16 * 1024
FLUSH_INPUT_BYTES = 2048
_DECODER = DecodePDU(is_server=True)
_HEADER = struct.Struct(">HHHB")


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
        if table.is_bits:
            self.bank.write_bits(table, address, [bool(v) for v in values])
        else:
            self.bank.write_registers(table, address, [int(v) for v in values])
        return None


class _IdentityBlock:
    """Stands in for pymodbus's process-wide ModbusControlBlock: one per server."""

    def __init__(self, identity: Identity, server_name: str) -> None:
        fields = (
            identity.vendor_name,
            identity.product_code,
            identity.revision,
            identity.vendor_url,
            identity.product_name,
            identity.model_name,
            identity.user_application_name,
        )
        info = {oid: text.replace("{name}", server_name) for oid, text in enumerate(fields)}
        self.Identity = ModbusDeviceIdentification(info=info)


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


def _device_information(request: ReadDeviceInformationRequest, block: _IdentityBlock) -> bytes:
    fc = request.function_code
    if not 1 <= request.read_code <= 4:
        return exception_pdu(fc, ILLEGAL_VALUE)
    object_id = request.object_id
    if request.read_code == DeviceInformation.BASIC and object_id > 2:
        object_id = 0  # spec 6.21: an unknown object id in stream access restarts at 0
    information = DeviceInformationFactory.get(block, request.read_code, object_id)
    if request.read_code == DeviceInformation.SPECIFIC and (
        0x07 <= object_id < 0x80 or not information.get(object_id)
    ):
        return exception_pdu(fc, ILLEGAL_ADDRESS)
    response = ReadDeviceInformationResponse(
        read_code=request.read_code, information=information, dev_id=request.dev_id
    )
    return _encode(response)


def reference_answer(bank: UnitBank, pdu: bytes, identity: _IdentityBlock | None) -> bytes:
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
        return _device_information(request, identity)
    context = cast(ModbusServerContext, UnitContext(bank))
    response = _run_now(request.datastore_update(context, 0))
    if isinstance(response, ExceptionResponse):
        return exception_pdu(fc, response.exception_code)
    return _encode(response)


class Device:
    """One simulated server: its banks, its identity, its counters (farm.ipc.stats layout),
    its diagnostics (FC 07/08/11/12/17) and its files and FIFOs (FC 20/21/24)."""

    __slots__ = (
        "_identity",
        "banks",
        "counters",
        "diagnostics",
        "faults",
        "identity_template",
        "name",
        "records",
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
        if BROADCAST_TCP_UNIT not in self.banks and banks:
            self.banks[BROADCAST_TCP_UNIT] = next(iter(banks.values()))
        self.identity_template = identity
        self._identity: _IdentityBlock | None = None
        self.counters = local_counters() if counters is None else counters
        self.faults: ServerFaults | None = None  # farm.worker.faults; None: no fault
        self.diagnostics = Diagnostics(
            self.counters,
            local_block() if block is None else block,
            identity.server_id,
            name,
            exception_status_coil,
        )
        self.records = Records(files or {}, fifos)

    def identity(self) -> _IdentityBlock:
        # Built on first use: most devices are never asked, and it costs ~1 KiB each.
        if self._identity is None:
            self._identity = _IdentityBlock(self.identity_template, self.name)
        return self._identity

    def answer(self, unit: int, pdu: bytes) -> bytes | None:
        """The response PDU to a request PDU for `unit`; None: the device stays silent."""
        counters = self.counters
        counters[REQUEST_SLOT[pdu[0]]] += 1
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
            self.diagnostics.exception_sent(response[1])
        return response

    def _answer_slowly(self, bank: UnitBank, pdu: bytes) -> bytes | None:
        fc = pdu[0]
        if fc in diagnostics.CODES:
            return self.diagnostics.answer(bank, pdu)
        if fc in records.CODES:
            return self.records.answer(bank, pdu)
        identity = self.identity() if fc == 43 else None
        return reference_answer(bank, pdu, identity)


class ModbusConnection(asyncio.Protocol):
    """One client connection to one device.

    Backpressure: when answers the peer has not read pile up past `HIGH_WATER_BYTES` in the
    transport, the transport calls `pause_writing` and the connection stops reading (as a
    device's TCP stack would: the peer's sends then block in its kernel), until
    `resume_writing` at `LOW_WATER_BYTES`. One read's frames are answered in chunks of
    `FLUSH_INPUT_BYTES`, so a read full of pipelined requests cannot queue more than a chunk's
    answers past the mark: a peer that never reads costs a bounded amount of memory. Answers
    a fault holds back (farm.worker.outbox) pause reading the same way (`hold`).
    """

    __slots__ = (
        "buffer",
        "clock",
        "device",
        "due",
        "guard",
        "held",
        "outbox",
        "partial_at",
        "paused",
        "peer",
        "seen",
        "transport",
    )

    framing: ClassVar[Framing] = MBAP  # how the faults frame its answers

    def __init__(self, device: Device, guard: ServerConnections) -> None:
        self.device = device
        self.guard = guard
        self.clock = guard.clock
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.outbox: Outbox | None = None  # only once a fault holds an answer back
        self.paused = False  # by the transport: the peer is not reading its answers
        self.held = False  # by the outbox: answers held back by a fault pile up
        self.seen = 0  # the timer wheel's tick at the last read (farm.worker.limits)
        self.partial_at = NOT_SCHEDULED  # the tick an unfinished frame began
        self.due = NOT_SCHEDULED  # the tick the wheel looks at this connection next
        self.peer = ""  # "host:port", filled in when something needs to name it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        counters = self.device.counters
        counters[CONNECTIONS_OPEN] += 1
        counters[CONNECTIONS_ACCEPTED] += 1
        self.transport.set_write_buffer_limits(high=HIGH_WATER_BYTES, low=LOW_WATER_BYTES)
        self.guard.admit(self)  # may refuse (and close) it

    def connection_lost(self, exc: Exception | None) -> None:
        counters = self.device.counters
        # Zero only if the gauge was reset under this connection (a uint64 cannot go below).
        if counters[CONNECTIONS_OPEN]:
            counters[CONNECTIONS_OPEN] -= 1
        self.transport = None
        self.guard.release(self)
        if self.outbox is not None:
            self.outbox.drop()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        self._resume_reading()

    def hold(self, held: bool) -> None:
        """The outbox's backpressure: stop reading while it holds too many answers."""
        self.held = held
        if held and self.transport is not None:
            self.transport.pause_reading()
        elif not held and not self.paused:
            self._resume_reading()

    def _resume_reading(self) -> None:
        if self.transport is not None and not self.held:
            self.transport.resume_reading()
            if self.buffer:
                self.data_received(b"")  # the frames left waiting when it paused

    def data_received(self, data: bytes) -> None:
        self.seen = self.clock.now  # for the idle timeout (farm.worker.limits)
        arrived = perf_counter_ns()
        device = self.device
        counters = device.counters
        counters[BYTES_RECEIVED] += len(data)
        if device.faults is not None:  # the one check a server without faults pays
            outbox = self.outbox
            if outbox is None or not outbox.closing:  # else a disconnect is queued: no more
                self.buffer += data
                self.answer_in_chunks(arrived)  # the faults answer a chunk at a time too
            return
        buffer = self.buffer
        buffer += data
        available = len(buffer)
        if available > FLUSH_INPUT_BYTES:
            self.answer_in_chunks(arrived)  # a long read: mind backpressure as it goes
            return
        # No check of `paused` here: a paused transport reads nothing, and resume_writing
        # clears it before it calls this for the frames left waiting.
        replies: list[bytes] = []
        position = 0
        malformed = False
        while available - position >= 7:
            transaction, protocol, length, unit = _HEADER.unpack_from(buffer, position)
            if protocol != 0 or length < 2 or length > MAX_MBAP_LENGTH:
                malformed = True
                break
            end = position + 6 + length
            if end > available:
                break
            response = device.answer(unit, bytes(buffer[position + 7 : end]))
            if response is not None:
                replies.append(_HEADER.pack(transaction, 0, len(response) + 1, unit) + response)
            position = end
        del buffer[:position]
        if replies and self.transport is not None:
            out = b"".join(replies)
            self.transport.write(out)
            counters[BYTES_SENT] += len(out)
            took = perf_counter_ns() - arrived
            answered = len(replies)
            # Nearly every answer beats the first bound; skip the search for those.
            bucket = 0 if took <= FIRST_BOUND_NS else bisect_left(DURATION_BOUNDS_NS, took)
            counters[DURATION + bucket] += answered
            counters[DURATION_SUM_NS] += answered * took
        if malformed:
            counters[MALFORMED_FRAMES] += 1
            self.malformed(protocol, length)
        elif buffer:
            # A frame begun and not finished: its timeout runs from the first read that left
            # it unfinished (a frame finished in this read means a new one began).
            if position or self.partial_at < 0:
                self.guard.frame_started(self)
        elif self.partial_at >= 0:
            self.partial_at = NOT_SCHEDULED

    def answer_in_chunks(self, arrived: int) -> None:
        """Answer the buffer's frames a chunk (`frames`) at a time, each chunk answered and
        written (or handed to the faults, whose outbox may hold it) before the next is taken,
        stopping as soon as the transport pauses or the outbox holds: the rest waits in the
        buffer until the connection reads again. A long read of every framing comes here, and
        every read of a faulted server."""
        faults = self.device.faults
        position = 0
        while True:
            frames, end = self.frames(position)
            if frames:
                if faults is not None:
                    faults.answer_frames(self, arrived, frames, self.framing)
                else:
                    self.answer_chunk(frames, arrived)  # may pause the transport
            taken, position = end - position, end
            # Less than a chunk taken: no whole frame is left. Else go on unless paused.
            if taken < FLUSH_INPUT_BYTES or self.paused or self.held or self.transport is None:
                break
        buffer = self.buffer
        # A disconnect fault may have cleared the buffer under us: del clamps to its length.
        del buffer[:position]
        if taken < FLUSH_INPUT_BYTES and len(buffer) >= 7 and self.malformed_head():
            return  # the frames ran out at a malformed one: closed
        self.track_partial(position)

    def frames(self, start: int = 0) -> tuple[list[tuple[int, int, bytes]], int]:
        """The whole MBAP frames from `start` on, a chunk of them (until one ends at or past
        `FLUSH_INPUT_BYTES`): (transaction id, unit id, PDU) of each, and where they end. A
        malformed header ends them too (`malformed_head` sees to it)."""
        buffer = self.buffer
        frames: list[tuple[int, int, bytes]] = []
        position = start
        available = len(buffer)
        last = start + FLUSH_INPUT_BYTES
        while available - position >= 7 and position < last:
            transaction, protocol, length, unit = _HEADER.unpack_from(buffer, position)
            if protocol != 0 or length < 2 or length > MAX_MBAP_LENGTH:
                break
            end = position + 6 + length
            if end > available:
                break
            frames.append((transaction, unit, bytes(buffer[position + 7 : end])))
            position = end
        return frames, position

    def answer_chunk(self, frames: list[tuple[int, int, bytes]], arrived: int) -> None:
        """Answer and write a chunk of frames of a server without faults."""
        device = self.device
        replies = []
        for transaction, unit, pdu in frames:
            response = device.answer(unit, pdu)
            if response is not None:
                replies.append(_HEADER.pack(transaction, 0, len(response) + 1, unit) + response)
        self._send(replies, arrived)

    def malformed_head(self) -> bool:
        """Whether the buffer starts with a malformed MBAP header (at least 7 bytes in it);
        if it does, the connection is closed."""
        _, protocol, length, _ = _HEADER.unpack_from(self.buffer)
        if protocol == 0 and 2 <= length <= MAX_MBAP_LENGTH:
            return False
        self.device.counters[MALFORMED_FRAMES] += 1
        self.malformed(protocol, length)
        return True

    def _send(self, replies: list[bytes], arrived: int) -> None:
        """Write a chunk of answers (a short read writes inline)."""
        if not replies or self.transport is None:
            return
        counters = self.device.counters
        out = b"".join(replies)
        self.transport.write(out)  # may call pause_writing
        counters[BYTES_SENT] += len(out)
        took = perf_counter_ns() - arrived
        bucket = 0 if took <= FIRST_BOUND_NS else bisect_left(DURATION_BOUNDS_NS, took)
        counters[DURATION + bucket] += len(replies)
        counters[DURATION_SUM_NS] += len(replies) * took

    def track_partial(self, position: int) -> None:
        """After a read that took `position` bytes of whole frames: an unfinished frame left
        starts its timeout, as in `data_received`."""
        if self.buffer and not (self.paused or self.held):
            if position or self.partial_at < 0:
                self.guard.frame_started(self)
        elif not self.buffer and self.partial_at >= 0:
            self.partial_at = NOT_SCHEDULED

    def malformed(self, protocol: int, length: int) -> None:
        """Close the connection for a malformed frame: counted, said (throttled)."""
        self.buffer.clear()
        self.partial_at = NOT_SCHEDULED
        if self.transport is not None:
            detail = f"protocol id {protocol}" if protocol else f"length field {length}"
            self.guard.malformed(self, detail)
            self.transport.close()
