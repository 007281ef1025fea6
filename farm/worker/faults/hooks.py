"""Fault hooks: how a faulted server answers (farm.config.faults.spec says what each kind means).

Sits beside the engine in a worker (... worker -> connection -> faults -> outbox). A `Device`
with no fault has `faults = None`, and its connections pay that one attribute check per
read: the connection's own loop and the fast path run untouched. A device with faults hands
each chunk of a read to `ServerFaults.answer_frames` (the connection frames it, as it does a
long read), which for each request draws which rules apply (function code, unit, address
range, probability) and acts:
    answer-level, where the answer is built: exception (the request is not carried out),
        garble, wrong_tid, wrong_unit;
    connection-level, through the connection's ordered outbox (farm.worker.outbox): delay,
        slice, drop (nothing is queued; the request is not carried out), disconnect and
        reset (after the answers before them; later requests go unanswered).
When the last rule of a server is cleared while some answers are still waiting, the device
keeps its (empty) `ServerFaults` until they have left, so later answers cannot overtake them.
Offline and reboot act on the server's listener, not on requests (farm.worker.process).
How an answer is framed, and garbled, is a `Framing`'s (farm.worker.framing): MBAP for
TCP, TLS and UDP, RTU for RTU over TCP.
Value faults (stuck, spike, drift, ...) change what reads of a point answer
(farm.worker.faults.values): they too route the server's requests through here.
"""

from __future__ import annotations

import random
import struct
from typing import TYPE_CHECKING

from farm.config.faults.rules import FaultRule
from farm.ipc.stats import (
    BYTES_SENT,
    EXCEPTION_SLOT,
    INJECTION_SLOT,
    REQUEST_SLOT,
)
from farm.modbus.pdu import exception_pdu
from farm.worker.faults.values import PointValues
from farm.worker.framing import Framing
from farm.worker.outbox import CLOSE, RESET, SEND, Entry, Outbox, count_answered

if TYPE_CHECKING:
    from farm.worker.engine import Device
    from farm.worker.transports.connection import ModbusConnection

_ADDRESS_COUNT = struct.Struct(">HH")
# Function codes whose request starts with an address, and those that also give a count.
_ADDRESSED = frozenset({1, 2, 3, 4, 5, 6, 15, 16, 22, 23})
_COUNTED = frozenset({1, 2, 3, 4, 15, 16, 23})


class ServerFaults:
    """The rules active on one server, and how many of its connections hold answers back."""

    __slots__ = ("device", "pending", "rng", "rules", "values")

    def __init__(
        self,
        device: Device,
        rules: tuple[FaultRule, ...],
        rng: random.Random,
        values: PointValues | None = None,
    ) -> None:
        self.device = device
        self.rules = rules
        self.rng = rng
        self.values = values
        self.pending = 0

    def settle(self) -> None:
        idle = not self.rules and self.values is None and not self.pending
        if idle and self.device.faults is self:
            self.device.faults = None

    def answer(self, framing: Framing, unit: int, pdu: bytes) -> bytes | None:
        """The device's answer, with faulted points reading as they should (None: the
        device is silent, in listen-only mode or on a serial line's broadcast)."""
        device = self.device
        answer = framing.answer(device, unit, pdu)
        if answer is not None and self.values is not None:
            bank = device.banks.get(unit)
            if bank is not None:
                answer = self.values.patch(bank, pdu, answer, device.counters)
        return answer

    def answer_frames(
        self,
        connection: ModbusConnection,
        arrived: int,
        frames: list[tuple[int, int, bytes]],
        framing: Framing,
    ) -> None:
        """Answer (header, unit, PDU) requests read off `connection`, a chunk of a read
        (`ModbusConnection.answer_in_chunks`) or a UDP datagram; header: MBAP's transaction
        id, 0 for RTU over TCP."""
        outbox = connection.outbox
        if outbox is not None and outbox.closing:
            return  # a disconnect is queued: nothing more is answered
        batch = _Batch(connection, arrived)
        # The role in the client's certificate (farm.worker.transports.tls); None on
        # other transports.
        role: str | None = getattr(connection, "role", None)
        for header, unit, pdu in frames:
            self._request(batch, header, unit, pdu, framing, role)
            if batch.stopped:
                connection.buffer.clear()
                return
        batch.flush()

    def _request(
        self,
        batch: _Batch,
        transaction: int,
        unit: int,
        pdu: bytes,
        framing: Framing,
        role: str | None,
    ) -> None:
        device = self.device
        counters = device.counters
        matched = []  # a loop, not a comprehension: Python 3.11 calls a function for that
        for rule in self.rules:
            if self._applies(rule, unit, pdu, role):
                matched.append(rule)
        if not matched:
            answer = self.answer(framing, unit, pdu)
            if answer is not None:  # None: the device is silent (listen-only mode)
                batch.answer(framing.encode(transaction, unit, answer))
            return
        for rule in matched:
            counters[INJECTION_SLOT[rule.kind]] += 1
        kinds = {rule.kind: rule for rule in matched}
        delay = sum(self._delay(rule) for rule in matched if rule.kind == "delay")
        stop = RESET if "reset" in kinds else CLOSE if "disconnect" in kinds else SEND
        if stop != SEND or "drop" in kinds:
            counters[REQUEST_SLOT[pdu[0]]] += 1  # counted, not carried out
            if stop != SEND:
                batch.queue(delay, 0.0, [b""], stop)
            return
        if "exception" in kinds:
            counters[REQUEST_SLOT[pdu[0]]] += 1
            code = kinds["exception"].code
            counters[EXCEPTION_SLOT[code]] += 1
            answer = exception_pdu(pdu[0], code)
        else:
            silent = self.answer(framing, unit, pdu)
            if silent is None:
                return  # listen-only mode: nothing to delay, garble or slice
            answer = silent
        if "wrong_tid" in kinds:
            transaction = (transaction + 0x8000) & 0xFFFF
        if "wrong_unit" in kinds:
            unit = (unit + 1) & 0xFF
        frame = framing.encode(transaction, unit, answer)
        if "garble" in kinds:
            frame = framing.garble(frame, kinds["garble"].mode, self.rng)
        pieces = [frame]
        gap = 0.0
        if "slice" in kinds:
            pieces = _cut(frame, kinds["slice"].segments)
            gap = kinds["slice"].gap_ms / 1000
        if delay or gap or batch.waiting():
            batch.queue(delay, gap, pieces, SEND)
        else:
            batch.answer(frame)

    def _applies(self, rule: FaultRule, unit: int, pdu: bytes, role: str | None) -> bool:
        fc = pdu[0]
        if rule.function_codes and fc not in rule.function_codes:
            return False
        if rule.unit is not None and unit != rule.unit:
            return False
        if rule.role is not None and role != rule.role:
            return False
        if rule.first_address > 0 or rule.last_address < 65535:
            if fc not in _ADDRESSED or len(pdu) < 5:
                return False
            address, count = _ADDRESS_COUNT.unpack_from(pdu, 1)
            last = address + max(count, 1) - 1 if fc in _COUNTED else address
            if last < rule.first_address or address > rule.last_address:
                return False
        return rule.probability >= 1.0 or self.rng.random() < rule.probability

    def _delay(self, rule: FaultRule) -> float:
        if rule.distribution == "uniform":
            ms = rule.ms + rule.jitter_ms * (2 * self.rng.random() - 1)
        elif rule.distribution == "normal":
            ms = self.rng.gauss(rule.ms, rule.jitter_ms)
        else:
            ms = rule.ms
        return max(ms, 0.0) / 1000


def _cut(frame: bytes, segments: int) -> list[bytes]:
    """`frame` in `segments` pieces of nearly equal size (fewer if it is shorter)."""
    segments = min(segments, len(frame))
    size, extra = divmod(len(frame), segments)
    pieces, start = [], 0
    for number in range(segments):
        end = start + size + (1 if number < extra else 0)
        pieces.append(frame[start:end])
        start = end
    return pieces


class _Batch:
    """The answers to one read: written at once while nothing waits, else queued in order."""

    __slots__ = ("arrived", "connection", "ready", "stopped")

    def __init__(self, connection: ModbusConnection, arrived: int) -> None:
        self.connection = connection
        self.arrived = arrived
        self.ready: list[bytes] = []
        self.stopped = False

    def waiting(self) -> bool:
        outbox = self.connection.outbox
        return outbox is not None and len(outbox) > 0

    def answer(self, frame: bytes) -> None:
        if self.waiting():
            self.queue(0.0, 0.0, [frame], SEND)
        else:
            self.ready.append(frame)

    def flush(self) -> None:
        """Write the answers that need not wait (nothing is queued before them)."""
        if not self.ready:
            return
        connection = self.connection
        counters = connection.device.counters
        out = b"".join(self.ready)
        if connection.transport is not None:
            connection.transport.write(out)
            counters[BYTES_SENT] += len(out)
            count_answered(counters, len(self.ready), self.arrived)
        self.ready = []

    def queue(self, delay: float, gap: float, pieces: list[bytes], action: int) -> None:
        self.flush()
        outbox = self._outbox()
        if outbox is None:
            return
        not_before = outbox.loop.time() + delay
        last = len(pieces) - 1
        for number, piece in enumerate(pieces):
            answers = 1 if number == last and action == SEND else 0
            outbox.push(
                Entry(
                    not_before=not_before,
                    gap=gap if number else 0.0,
                    data=piece,
                    action=action if number == last else SEND,
                    answers=answers,
                    arrived_ns=self.arrived,
                )
            )
        self.stopped = action != SEND

    def _outbox(self) -> Outbox | None:
        connection = self.connection
        faults = connection.device.faults
        if connection.transport is None or faults is None:
            return None
        if connection.outbox is None:
            connection.outbox = Outbox(
                connection.transport, connection.device.counters, faults, connection.hold
            )
        connection.outbox.owner = faults  # an empty outbox may still name an earlier owner
        return connection.outbox
