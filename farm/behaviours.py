"""Live values: the behaviours that move points, and the per-worker ticker that applies them.

Sits beside the engine in a worker (... worker -> engine/behaviours -> banks). The ticker
writes straight into the register banks between requests; it never awaits mid-update, so a
client never sees half a value. Stateful behaviours (counter, random walk) read their state
back from the bank, so a restarted worker carries on from where its predecessor stopped.

Formulas, with t the seconds since the farm started and [low, high] the range:
    constant      value
    counter       previous + step, back to low past high
    ramp          low + (high - low) * (t mod period) / period
    sine          mid + amp * sin(2 pi t / period)
    square        high for the first half of each period, low for the second
    random_walk   previous + uniform(-step, step), kept within [low, high]
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from farm.banks import UnitBank
from farm.template import Behaviour, Point

KINDS = frozenset({"constant", "counter", "ramp", "sine", "square", "random_walk"})


@dataclass(slots=True)
class LivePoint:
    """A point bound to its bank, with its own random stream."""

    view: memoryview
    offset: int
    width: int  # 1 for a bit, 2 for a register
    behaviour: Behaviour
    rng: random.Random

    def read(self) -> int:
        return int.from_bytes(self.view[self.offset : self.offset + self.width], "big")

    def write(self, value: float) -> None:
        if self.width == 1:
            self.view[self.offset] = 1 if value else 0
        else:
            integer = round(value) & 0xFFFF
            self.view[self.offset : self.offset + 2] = integer.to_bytes(2, "big")


def next_value(point: LivePoint, t: float) -> float:
    b = point.behaviour
    if b.kind == "constant":
        return b.value
    if b.kind == "counter":
        value = point.read() + b.step
        return b.low if value > b.high else value
    if b.kind == "ramp":
        return b.low + (b.high - b.low) * ((t % b.period_s) / b.period_s)
    if b.kind == "sine":
        mid, amp = (b.high + b.low) / 2, (b.high - b.low) / 2
        return mid + amp * math.sin(2 * math.pi * t / b.period_s)
    if b.kind == "square":
        return b.high if (t % b.period_s) < b.period_s / 2 else b.low
    if b.kind == "random_walk":
        current = point.read()
        if not b.low <= current <= b.high:
            current = round(b.value)
        return min(b.high, max(b.low, current + point.rng.uniform(-b.step, b.step)))
    raise ValueError(f"unknown behaviour {b.kind!r}")


def bind(points: tuple[Point, ...], banks: dict[int, UnitBank], seed: int) -> list[LivePoint]:
    bound = []
    for number, point in enumerate(points):
        bank = banks[point.unit_id]
        width = 1 if point.table.is_bits else 2
        bound.append(
            LivePoint(
                view=bank.view(point.table),
                offset=point.address * width,
                width=width,
                behaviour=point.behaviour,
                rng=random.Random(seed * 1000 + number),
            )
        )
    return bound


class Ticker:
    """Applies every live point of a worker once per `tick`."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.points: list[LivePoint] = []

    def add(self, points: list[LivePoint]) -> None:
        self.points.extend(points)

    def tick(self, now: float) -> None:
        t = now - self.started_at
        for point in self.points:
            point.write(next_value(point, t))
