"""The timer wheel: a worker's connection timeouts on one periodic tick.

Part of the limits (farm.worker.limits.guard) in a worker. Not a timer per connection per request:
one `call_at` per tick (every `RESOLUTION_S`) for the whole worker. A connection records the
tick of its last read (one attribute store per read, farm.worker.transports.connection); the wheel
files it
under the tick of its next possible deadline and looks at it only then, when the limits
either close it or file it again under the next one. Filing it again under a sooner tick
leaves a stale entry behind, which is skipped (`due` says which entry is current), so a
connection is in at most a few buckets at once.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Protocol

RESOLUTION_S = 0.25
NOT_SCHEDULED = -1


class Connection(Protocol):
    """What limits need of a connection (farm.worker.transports.connection.ModbusConnection)."""

    transport: asyncio.Transport | None
    seen: int  # the wheel's tick at the last read
    partial_at: int  # the tick at which an unfinished frame began, or NOT_SCHEDULED
    due: int  # the tick the wheel will look at it next, or NOT_SCHEDULED
    paused: bool  # backpressure: not reading until its peer reads its answers
    held: bool  # backpressure: not reading until answers a fault holds back leave
    peer: str


class TimerWheel:
    """One periodic tick per worker; connections filed under the tick of their next deadline."""

    def __init__(self, resolution_s: float = RESOLUTION_S) -> None:
        self.resolution_s = resolution_s
        self.now = 0  # ticks since start(); what connections record
        self._buckets: dict[int, list[Connection]] = {}
        self._swept = 0
        self._origin = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self.on_due: Callable[[Connection, int], None] = lambda connection, now: None

    def ticks(self, seconds: float) -> int:
        """A timeout in ticks; 0 stays 0 (never)."""
        return math.ceil(seconds / self.resolution_s) if seconds > 0 else 0

    def schedule(self, connection: Connection, tick: int) -> None:
        """Look at `connection` at `tick`, unless it is already due sooner."""
        due = connection.due
        if due != NOT_SCHEDULED and due <= tick:
            return
        connection.due = tick
        bucket = self._buckets.get(tick)
        if bucket is None:
            self._buckets[tick] = [connection]
        else:
            bucket.append(connection)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._origin = loop.time()
        self._handle = loop.call_later(self.resolution_s, self._sweep, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = int((loop.time() - self._origin) / self.resolution_s)
        self.now = now
        for tick in range(self._swept + 1, now + 1):  # every tick since, if the loop was late
            for connection in self._buckets.pop(tick, ()):
                if connection.due == tick:  # else it was filed again, under a sooner tick
                    connection.due = NOT_SCHEDULED
                    self.on_due(connection, now)
        self._swept = now
        next_at = self._origin + (now + 1) * self.resolution_s
        self._handle = loop.call_at(next_at, self._sweep, loop)

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())
