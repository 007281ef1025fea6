"""FC 07, 08, 11, 12 and 17 for one device, from its diagnostics block and its counters.

Part of the engine (... worker -> engine -> diagnostics -> banks): `Device.answer` hands these
function codes here, and tells it of every exception it sends and every request it leaves
unanswered. No pymodbus: pymodbus keeps this state once per process (ModbusControlBlock),
and its server never counts. The state lives in the device's block of its shard's segment
(farm.ipc.diagnostics), so a worker restart keeps it; most counters derive from the
device's counters (farm.ipc.stats) minus a baseline taken when a client clears them.

Modbus Application Protocol spec v1.1b3, and where this farm had to choose:
  - 6.7 FC 07: the eight coils from the template's `exception_status_coil` of the addressed
    unit, the lowest coil in the least significant bit (coils past the table read 0).
  - 6.8 FC 08: sub-functions 00 (echo any data), 01 (restart: clears the counters, with
    FF00 the event log too, ends listen-only mode; no answer when in it), 02 (the diagnostic
    register, always 0), 04 (listen-only mode: no answers, no actions, until 01), 0A (clear
    counters), 0B-12 (the counters below), 14 (clear the overrun counter). Others answer 01;
    a data field other than 0000 (01: 0000 or FF00) answers 03.
        0B bus messages      every frame the device read, whatever its unit id
        0C communication errors  frames it could not read: bad MBAP header, bad CRC
        0D exceptions sent   0E messages for it (its unit ids, and broadcasts)
        0F messages for it left unanswered (listen-only, broadcasts)
        10 NAK (07) and 11 busy (06) exceptions sent   12 RTU frames over 256 bytes
  - 6.9 FC 11: status 0000 (never busy) and the event counter: normal answers since the last
    clear, not counting FC 11 itself. 6.10 FC 12: status, event counter, bus message
    counter, and the last 64 events, newest first: a receive event (80, +40 broadcast, +20
    in listen-only mode) and a send event (40, +01 exception 01-03, +02 04, +04 05-06,
    +08 07, +20 listen-only) per request, 04 entering listen-only mode (6.10's own example
    shows 20 for it, against its table), 00 a restart.
  - 6.13 FC 17: the template's server id, run indicator FF, then the device's name.
A unit id names a table, not a device: the units of one server share its diagnostics.
"""

from __future__ import annotations

import struct

from farm.ipc import diagnostics as block_layout
from farm.ipc.banks import UnitBank
from farm.ipc.diagnostics import LISTEN_ONLY
from farm.ipc.stats import (
    EXCEPTION_SLOT,
    REQUEST_SLOT,
    UNANSWERED,
)
from farm.modbus.pdu import ILLEGAL_FUNCTION, ILLEGAL_VALUE, exception_pdu

CODES = frozenset({7, 8, 11, 12, 17})
NAK_SLOT, BUSY_SLOT = EXCEPTION_SLOT[7], EXCEPTION_SLOT[6]
RECEIVED, SENT = 0x80, 0x40
BROADCAST, IN_LISTEN_ONLY = 0x40, 0x20  # receive event bits (20 is a send event bit too)
ENTERED_LISTEN_ONLY, RESTARTED = 0x04, 0x00
_SEND_BITS = bytes([0, 0x01, 0x01, 0x01, 0x02, 0x04, 0x04, 0x08] + [0] * 248)  # by code
_ZERO = b"\x00\x00"
_ON = b"\xff\x00"


class Diagnostics:
    """One device's diagnostics: its block's slots and event log, and its counters."""

    __slots__ = ("coil", "counters", "listen_only", "log", "name", "server_id", "slots")

    def __init__(
        self,
        counters: memoryview,
        block: memoryview,
        server_id: int = 1,
        name: str = "",
        exception_status_coil: int = 0,
    ) -> None:
        self.counters = counters
        self.slots, self.log = block_layout.views(block)
        # Read on every request (Device.answer): a plain attribute, mirrored into FLAGS.
        self.listen_only = bool(self.slots[block_layout.FLAGS] & LISTEN_ONLY)
        self.server_id = server_id
        self.name = name.encode()[:249]  # FC 17's byte count holds id, indicator and name
        self.coil = exception_status_coil

    # -- the sources every counter derives from ----------------------------------------

    def _answers(self) -> int:
        return block_layout.answers(self.counters)

    def _sources(self) -> dict[int, int]:
        return block_layout.sources(self.counters, self.slots)

    def reload(self) -> None:
        """Read listen-only mode again (the master powered the device up: a reboot fault)."""
        self.listen_only = bool(self.slots[block_layout.FLAGS] & LISTEN_ONLY)

    def counter(self, sub_function: int) -> int:
        """FC 08 counter 0B-12 since the last clear, as 16 bits."""
        sources, s = self._sources(), self.slots

        def since(slot: int) -> int:
            return sources[slot] - s[slot]

        value = {
            0x0B: since(block_layout.BASE_MESSAGES),
            0x0C: since(block_layout.BASE_COMM_ERRORS),
            0x0D: since(block_layout.BASE_EXCEPTIONS),
            0x0E: since(block_layout.BASE_MESSAGES) - since(block_layout.BASE_NOT_ADDRESSED),
            0x0F: since(block_layout.BASE_NO_RESPONSE),
            0x10: since(block_layout.BASE_NAK),
            0x11: since(block_layout.BASE_BUSY),
            0x12: since(block_layout.BASE_OVERRUN),
        }[sub_function]
        return value & 0xFFFF

    def events(self) -> int:
        """FC 11's event counter: normal answers since the last clear, less FC 11's own."""
        value = self._answers() - self.counters[REQUEST_SLOT[11]]
        return (value - self.slots[block_layout.BASE_EVENTS]) & 0xFFFF

    def clear(self) -> None:
        for slot, value in self._sources().items():
            self.slots[slot] = value

    # -- the event log -----------------------------------------------------------------

    def _pending_pairs(self, answers: int) -> int:
        """Normal answers the ring does not hold yet (each a receive and a send event)."""
        return min(answers - self.slots[block_layout.LOGGED_ANSWERS], block_layout.LOG_SIZE // 2)

    def _write(self, *events: int) -> None:
        answers = self._answers()
        pending = (RECEIVED, SENT) * self._pending_pairs(answers)
        self.slots[block_layout.LOGGED_ANSWERS] = answers
        head, size = self.slots[block_layout.LOG_HEAD], block_layout.LOG_SIZE
        for event in (*pending, *events):
            self.log[head] = event
            head = (head + 1) % size
        self.slots[block_layout.LOG_HEAD] = head
        count = self.slots[block_layout.LOG_COUNT] + len(pending) + len(events)
        self.slots[block_layout.LOG_COUNT] = min(count, size)

    def event_log(self, answers: int) -> bytes:
        """The last 64 events, newest first, with `answers` as the normal answers so far."""
        head, count = self.slots[block_layout.LOG_HEAD], self.slots[block_layout.LOG_COUNT]
        stored = bytes(self.log[head:]) + bytes(self.log[:head])
        newest_first = stored[::-1][:count]
        pending = bytes((SENT, RECEIVED)) * self._pending_pairs(answers)
        return (pending + newest_first)[: block_layout.LOG_SIZE]

    def _flags(self) -> int:
        return IN_LISTEN_ONLY if self.listen_only else 0

    def exception_sent(self, code: int) -> None:
        """Device.answer sent an exception response (already counted)."""
        flags = self._flags()
        self._write(RECEIVED | flags, SENT | flags | _SEND_BITS[code])

    # -- requests answered with silence ------------------------------------------------

    def unanswered(self, pdu: bytes) -> None:
        """A request in listen-only mode: monitored, not acted on, not answered; only
        FC 08/01 (restart communications) acts, and ends the mode."""
        self.counters[UNANSWERED] += 1
        self._write(RECEIVED | IN_LISTEN_ONLY, SENT | IN_LISTEN_ONLY)
        if pdu[:3] == b"\x08\x00\x01" and pdu[3:5] in (_ZERO, _ON) and len(pdu) == 5:
            self._restart(clear_log=pdu[3:5] == _ON)

    def broadcast(self) -> None:
        """A broadcast (unit 0 on an RTU line) was acted on; broadcasts are never answered."""
        self.counters[UNANSWERED] += 1
        self._write(RECEIVED | BROADCAST | self._flags(), SENT | self._flags())

    def not_addressed(self) -> None:
        """An RTU frame for a unit id this device does not have: seen, and left alone."""
        self.counters[UNANSWERED] += 1
        self.slots[block_layout.NOT_ADDRESSED] += 1

    def overrun(self) -> None:
        """More bytes than an RTU frame can hold, with no frame in them."""
        self.slots[block_layout.OVERRUN] += 1

    def _set_listen_only(self, on: bool) -> None:
        self.listen_only = on
        flags = self.slots[block_layout.FLAGS]
        self.slots[block_layout.FLAGS] = flags | LISTEN_ONLY if on else flags & ~LISTEN_ONLY

    def _restart(self, clear_log: bool) -> None:
        self.clear()
        if clear_log:
            self.slots[block_layout.LOG_COUNT] = 0
            self.slots[block_layout.LOGGED_ANSWERS] = self._answers()
        self._set_listen_only(False)
        self._write(RESTARTED)
        self.slots[block_layout.LOGGED_ANSWERS] = self._answers()  # this very request too

    # -- the function codes ------------------------------------------------------------

    def answer(self, bank: UnitBank, pdu: bytes) -> bytes | None:
        """Answer FC 07, 08, 11, 12 or 17; None: no answer (FC 08/04)."""
        fc = pdu[0]
        if fc == 8:
            return self._diagnostic(pdu)
        if fc == 7:
            coils = bank.coils[self.coil : self.coil + 8]
            return bytes((7, sum(bit << i for i, bit in enumerate(coils))))
        if fc == 11:
            return struct.pack(">BHH", 11, 0, self.events())
        if fc == 12:
            return self._comm_event_log()
        data = bytes((self.server_id, 0xFF)) + self.name  # 17
        return bytes((17, len(data))) + data

    def _comm_event_log(self) -> bytes:
        # This request is counted as answered already, but it is not finished: its receive
        # event is in the log, its send event and its completion are not.
        answers = self._answers() - 1
        events = (bytes((RECEIVED | self._flags(),)) + self.event_log(answers))[:64]
        event_count = (self.events() - 1) & 0xFFFF
        head = struct.pack(">BBHHH", 12, 6 + len(events), 0, event_count, self.counter(0x0B))
        return head + events

    def _diagnostic(self, pdu: bytes) -> bytes | None:
        if len(pdu) < 3:
            return exception_pdu(8, ILLEGAL_VALUE)
        sub, data = (pdu[1] << 8) | pdu[2], pdu[3:]
        if sub == 0x00:  # Return Query Data: the request, echoed; N x 2 data bytes (6.8)
            return pdu if data and len(data) % 2 == 0 else exception_pdu(8, ILLEGAL_VALUE)
        if sub not in _SUPPORTED:
            return exception_pdu(8, ILLEGAL_FUNCTION)
        if sub == 0x01:
            if data not in (_ZERO, _ON):
                return exception_pdu(8, ILLEGAL_VALUE)
            self._restart(clear_log=data == _ON)
            return pdu
        if data != _ZERO:
            return exception_pdu(8, ILLEGAL_VALUE)
        if sub == 0x04:
            self.counters[UNANSWERED] += 1
            self._set_listen_only(True)
            self._write(RECEIVED, ENTERED_LISTEN_ONLY)
            return None
        if sub == 0x0A:
            self.clear()
            return pdu
        if sub == 0x14:
            self.slots[block_layout.BASE_OVERRUN] = self.slots[block_layout.OVERRUN]
            return pdu
        value = 0 if sub == 0x02 else self.counter(sub)
        return pdu[:3] + struct.pack(">H", value)


_SUPPORTED = frozenset({0x01, 0x02, 0x04, 0x0A, *range(0x0B, 0x13), 0x14})
