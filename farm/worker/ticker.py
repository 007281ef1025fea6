"""The ticker: a worker's live values, moved on schedule between requests.

Runs in a worker (farm.worker.process schedules it on the loop). The formulas and the
grouping are farm.config.behaviours; this adds the schedule. Time is the monotonic clock,
with t = 0 at the farm's start: a step of the wall clock neither freezes nor races the
values. The ticker writes between requests and never awaits mid-update, so a client never
sees half a value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from farm.config import codec
from farm.config.behaviours import PointGroups
from farm.config.plan import ServerSpec
from farm.config.templates import DeviceTemplate


class Ticker(PointGroups):
    """Every point of a shard's servers; `tick` applies the due live ones."""

    def __init__(self, buf: memoryview, origin: float) -> None:
        """`origin` is the monotonic time at which t = 0 (the farm's start)."""
        super().__init__(buf)
        self.origin = origin

    def tick(self, now: float) -> float:
        """Update the due groups at monotonic time `now`; returns when the next one is due."""
        t = now - self.origin
        upcoming = math.inf
        for group in self.live():
            if group.next_due <= now:
                current = codec.decode(group.point, self.bytes[group.index])
                self.bytes[group.index] = codec.encode(group.point, group.values(t, current))
                interval = group.point.behaviour.interval_s
                group.next_due = self.origin + (math.floor(t / interval) + 1) * interval
            upcoming = min(upcoming, group.next_due)
        return upcoming


def ticker_over(
    buf: memoryview,
    origin: float,
    servers: Iterable[tuple[ServerSpec, DeviceTemplate]],
    before: Ticker | None = None,
) -> Ticker:
    """A ticker over these servers' points in `buf`, ready to tick; each group keeps its
    schedule from `before` (a counter does not step twice because the shard changed)."""
    ticker = Ticker(buf, origin)
    for spec, template in servers:
        ticker.add(spec, template)  # a stopped server's values move too
    ticker.freeze()
    if before is not None:
        for key, group in ticker.groups.items():
            earlier = before.groups.get(key)
            if earlier is not None:
                group.next_due = earlier.next_due
    return ticker
