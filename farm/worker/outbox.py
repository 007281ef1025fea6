"""The ordered outbox of one faulted connection: answers that must wait leave in order.

Sits beside the engine, under the fault hooks (... connection -> faults -> outbox). A connection
of a server with no fault writes its answers at once and never has an outbox. Once a fault
holds an answer back (delay), cuts it into pieces (slice) or closes the connection after
the answers before it (disconnect, reset), the connection's answers go through here: each
waits for its own time and for every answer before it, so responses keep request order, as
Modbus/TCP masters that pipeline expect. One `loop.call_at` timer per connection, for the
head of the line, never a sleep: 10,000 delayed answers cost 10,000 small tuples and at
most one timer handle per connection. Answers held here are backpressure too: past
HELD_HIGH_BYTES of them the connection stops reading until they drain below HELD_LOW_BYTES
(`hold`), or a client pipelining into a delay would queue answers without limit.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from time import perf_counter_ns
from typing import NamedTuple, Protocol

from farm.ipc.stats import BYTES_SENT, DURATION, DURATION_BOUNDS_NS, DURATION_SUM_NS

SEND = 0
CLOSE = 1  # FIN, once everything before it has left
RESET = 2  # RST, once everything before it has left
_LINGER_NOW = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
HELD_HIGH_BYTES = 64 * 1024  # the transport's own marks (farm.worker.transports.connection)
HELD_LOW_BYTES = 16 * 1024


class Entry(NamedTuple):
    not_before: float  # loop time
    gap: float  # seconds after the previous write (slice pieces)
    data: bytes
    action: int
    answers: int  # requests this write answers (0 for the later pieces of a slice)
    arrived_ns: int  # perf_counter_ns of the request's arrival, for the duration histogram


def count_answered(counters: memoryview, answers: int, arrived_ns: int) -> None:
    """Add `answers` requests that arrived at `arrived_ns` to the duration histogram."""
    took = perf_counter_ns() - arrived_ns
    counters[DURATION + bisect_left(DURATION_BOUNDS_NS, took)] += answers
    counters[DURATION_SUM_NS] += answers * took


class Owner(Protocol):
    """The faults of the connection's server, which live while any outbox holds answers."""

    pending: int  # outboxes of the server that hold answers

    def settle(self) -> None:
        """An outbox ran dry: the server may go back to the fast path."""


class Outbox:
    """Answers of one connection waiting for their time, in request order."""

    __slots__ = (
        "closing",
        "counters",
        "entries",
        "held",
        "hold",
        "holding",
        "last_write",
        "loop",
        "owner",
        "timer",
        "transport",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        counters: memoryview,
        owner: Owner,
        hold: Callable[[bool], None],
    ) -> None:
        self.transport: asyncio.Transport | None = transport
        self.counters = counters
        self.owner = owner
        self.hold = hold  # the connection's: True stops its reading, False lets it read again
        self.entries: deque[Entry] = deque()
        self.held = 0  # bytes of answers waiting here
        self.holding = False  # the connection was told to stop reading
        self.loop = asyncio.get_running_loop()
        self.timer: asyncio.TimerHandle | None = None
        self.last_write = 0.0
        self.closing = False  # a close or reset is queued: later requests go unanswered

    def __len__(self) -> int:
        return len(self.entries)

    def push(self, entry: Entry) -> None:
        """Queue an answer behind the others; it leaves when its time and theirs have come."""
        if self.closing or self.transport is None:
            return
        self.closing = entry.action != SEND
        self.entries.append(entry)
        self.held += len(entry.data)
        if self.held > HELD_HIGH_BYTES and not self.holding:
            self.holding = True
            self.hold(True)
        if len(self.entries) == 1:
            self.owner.pending += 1
            self.flush()

    def flush(self) -> None:
        """Write every answer whose time has come, up to the first that must still wait."""
        self.timer = None
        now = self.loop.time()
        entries = self.entries
        while entries:
            entry = entries[0]
            due = max(entry.not_before, self.last_write + entry.gap if entry.gap else 0.0)
            if due > now:
                self.timer = self.loop.call_at(due, self.flush)
                break
            entries.popleft()
            self.held -= len(entry.data)
            if not entries:
                self._emptied()
            self._write(entry)
            self.last_write = now
        # Last: letting the connection read again may answer (and push) at once.
        if self.holding and self.held < HELD_LOW_BYTES and self.transport is not None:
            self.holding = False
            self.hold(False)

    def _write(self, entry: Entry) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if entry.data:
            transport.write(entry.data)
            self.counters[BYTES_SENT] += len(entry.data)
        if entry.answers:
            count_answered(self.counters, entry.answers, entry.arrived_ns)
        if entry.action == CLOSE:
            transport.close()
            self.drop()
        elif entry.action == RESET:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_NOW)
            transport.abort()
            self.drop()

    def drop(self) -> None:
        """The connection is gone: nothing more leaves."""
        self.transport = None
        self.held, self.holding = 0, False
        if self.entries:
            self.entries.clear()
            self._emptied()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _emptied(self) -> None:
        self.owner.pending -= 1
        self.owner.settle()
