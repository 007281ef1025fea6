"""Live values: the formulas that move points, applied to every server of a shard at once.

Pure data and arithmetic, no processes: the master writes every starting value with
`initialize_shard` (and one server's again with `reset_server`, when a reboot fault
ends), a worker's ticker (farm.worker.ticker) moves the live ones. Points are
grouped by template point, so one numpy expression updates that point on every server of
the shard: 10,000 devices with 20 live points cost milliseconds a second, not a core. The
ticker writes between requests and never awaits mid-update, so a client never sees half a
value. Counters and random walks read their state back from the bank, so a restarted
worker, or a client's write, carries on from the value in the bank.

Formulas, with t the seconds since the farm started, k = floor(t / interval) the update
number, u a uniform number in [0, 1) drawn from (server seed, point, k) so every server is
deterministic for its seed whatever worker hosts it:
    constant      value
    counter       previous + step; past high, back to low
    ramp          low + (high - low) * (t mod period) / period
    sine          mid + amp * sin(2 pi t / period)      mid, amp from low and high
    square        high for the first half of each period, low for the second
    random_walk   previous + step * (2u - 1), kept within [low, high]
    replay        samples[k mod len(samples)]           a CSV column, one row per interval
and jitter adds jitter * (2u' - 1) with an independent u'.
"""

from __future__ import annotations

import math
import struct
from array import array
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from farm.config import codec
from farm.config.plan import (
    TABLE_ORDER,
    ServerSpec,
    Shard,
    file_offset,
    point_offset,
    table_bytes,
    table_offset,
)
from farm.config.templates import BehaviourKind, DeviceTemplate, Point, PointType, Table

Floats = npt.NDArray[np.float64]
_WALK_SALT = 0x9E3779B97F4A7C15
_JITTER_SALT = 0xD1B54A32D192ED03


def uniform(seeds: npt.NDArray[np.uint64], point: int, k: int, salt: int) -> Floats:
    """Deterministic uniforms in [0, 1): splitmix64 of (seed, point, k, salt)."""
    with np.errstate(over="ignore"):
        key = np.uint64((point * 0x100000001B3 + k * 0x9E3779B1 + salt) & 0xFFFFFFFFFFFFFFFF)
        z = seeds ^ key
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def scalar_value(point: Point, t: float) -> float:
    """The value of a time-only behaviour at t (also the start of the stateful ones)."""
    b = point.behaviour
    if b.kind is BehaviourKind.RAMP:
        return b.low + (b.high - b.low) * ((t % b.period_s) / b.period_s)
    if b.kind is BehaviourKind.SINE:
        mid, amp = (b.high + b.low) / 2, (b.high - b.low) / 2
        return mid + amp * math.sin(2 * math.pi * t / b.period_s)
    if b.kind is BehaviourKind.SQUARE:
        return b.high if (t % b.period_s) < b.period_s / 2 else b.low
    if b.kind is BehaviourKind.REPLAY:
        return b.samples[int(t // b.interval_s) % len(b.samples)] if b.samples else b.value
    return b.value  # constant, and where counters and random walks start


@dataclass(eq=False)
class PointGroup:
    """One template point on every server of a shard that has it."""

    point: Point
    number: int
    # Machine integers, not lists of int objects: 8 bytes a server where a list took 40
    # (about 1.6 MB of a 5,000-server worker's default points).
    offsets: array[int] = field(default_factory=lambda: array("q"))
    seeds: array[int] = field(default_factory=lambda: array("Q"))
    index: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    seed_array: npt.NDArray[np.uint64] = field(default_factory=lambda: np.zeros(0, np.uint64))
    next_due: float = 0.0

    def freeze(self) -> None:
        width = codec.byte_width(self.point)
        starts = np.frombuffer(self.offsets, dtype=np.int64)
        self.index = starts[:, None] + np.arange(width, dtype=np.int64)
        self.seed_array = np.frombuffer(self.seeds, dtype=np.uint64).copy()

    def values(self, t: float, current: Floats) -> Floats:
        b = self.point.behaviour
        k = int(t // b.interval_s)
        if b.kind is BehaviourKind.COUNTER:
            stepped = current + b.step
            values = np.where(stepped > b.high, b.low, stepped)
        elif b.kind is BehaviourKind.RANDOM_WALK:
            start = np.where((current < b.low) | (current > b.high), b.value, current)
            noise = uniform(self.seed_array, self.number, k, _WALK_SALT)
            values = np.clip(start + b.step * (2 * noise - 1), b.low, b.high)
        else:
            values = np.full(len(current), scalar_value(self.point, t))
        if b.jitter:
            values = values + b.jitter * (
                2 * uniform(self.seed_array, self.number, k, _JITTER_SALT) - 1
            )
        return values


class PointGroups:
    """Every point of a shard's servers, grouped by template point, over a segment's bytes."""

    def __init__(self, buf: memoryview) -> None:
        self.bytes = np.frombuffer(buf, dtype=np.uint8)
        self.groups: dict[tuple[str, int], PointGroup] = {}
        # (template, block offset, block capacity) -> each point's (group, first, stride)
        self._layouts: dict[tuple[str, int, int], list[tuple[PointGroup, int, int]]] = {}

    def add(self, spec: ServerSpec, template: DeviceTemplate) -> None:
        key = (template.name, spec.block_offset, spec.block_capacity)
        layout = self._layouts.get(key)
        if layout is None:
            layout = self._layouts[key] = self._layout(spec, template)
        slot, seed = spec.slot, spec.seed
        for group, first, stride in layout:
            group.offsets.append(first + slot * stride)
            group.seeds.append(seed)

    def _layout(
        self, spec: ServerSpec, template: DeviceTemplate
    ) -> list[tuple[PointGroup, int, int]]:
        """Where each point of `template` is for the servers of `spec`'s block: at `first +
        slot * stride` (a block holds each table of its servers side by side), so that
        10,000 servers cost a multiplication each, not point_offset's walk of the layout."""
        neighbour = replace(spec, slot=spec.slot + 1)
        layout = []
        for number, point in enumerate(template.points):
            group = self.groups.get((template.name, number))
            if group is None:
                group = self.groups[(template.name, number)] = PointGroup(point, number)
            here = point_offset(spec, template, point)
            stride = point_offset(neighbour, template, point) - here
            layout.append((group, here - spec.slot * stride, stride))
        return layout

    def freeze(self) -> None:
        for group in self.groups.values():
            group.freeze()

    def live(self) -> list[PointGroup]:
        return [g for g in self.groups.values() if g.point.behaviour.live and g.offsets]

    def initialize(self) -> None:
        """Write every point's starting value (the master does this once, at farm start)."""
        for group in self.groups.values():
            point = group.point
            if point.type is PointType.STRING:
                data = codec.encode_text(point, point.behaviour.text)
                self.bytes[group.index] = np.frombuffer(data, dtype=np.uint8)
                continue
            values = np.full(len(group.offsets), scalar_value(point, 0.0))
            self.bytes[group.index] = codec.encode(point, values)


def initialize_shard(buf: memoryview, shard: Shard, templates: dict[str, DeviceTemplate]) -> None:
    """Write the starting value of every point, file record and FIFO of a shard into its
    fresh segment."""
    groups = PointGroups(buf)
    for spec in shard.servers:
        groups.add(spec, templates[spec.template])
    groups.freeze()
    groups.initialize()
    for spec in shard.servers:
        initialize_records(buf, spec, templates[spec.template])


def initialize_records(buf: memoryview, spec: ServerSpec, template: DeviceTemplate) -> None:
    """A server's starting file records (FC 20/21) and FIFOs."""
    for file in template.files:
        if file.values:
            start = file_offset(spec, template, file.number)
            struct.pack_into(f">{len(file.values)}H", buf, start, *file.values)
    initialize_fifos(buf, spec, template)


def initialize_fifos(buf: memoryview, spec: ServerSpec, template: DeviceTemplate) -> None:
    """A server's starting FIFOs (FC 24): the count in the pointer register, values after it."""
    for fifo in template.fifos:
        start = table_offset(spec, template, fifo.unit_id, Table.HOLDING_REGISTERS)
        values = (len(fifo.values), *fifo.values)
        struct.pack_into(f">{len(values)}H", buf, start + 2 * fifo.address, *values)


def reset_server(buf: memoryview, spec: ServerSpec, template: DeviceTemplate) -> None:
    """A server's banks as after a power cycle: every table zeroed, then every point and FIFO
    at its starting value (counters and random walks carry on from there). File records are
    kept, as a device's non-volatile memory is."""
    data = np.frombuffer(buf, dtype=np.uint8)
    for unit in template.units:
        for table in TABLE_ORDER:
            start = table_offset(spec, template, unit.unit_id, table)
            data[start : start + table_bytes(unit, table)] = 0
    groups = PointGroups(buf)
    groups.add(spec, template)
    groups.freeze()
    groups.initialize()
    initialize_fifos(buf, spec, template)
