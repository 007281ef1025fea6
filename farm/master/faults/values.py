"""Value faults in the master: which points they may name, what they hold, what the API reads.

Beside the fault table (api_faults -> faults -> value_faults). A value fault is checked
against the template of every server it targets when it is added (the point must be there,
and fit the kind: nan needs a float, flap a bool); when it starts, a `stuck` without a value
captures each server's point as it reads then, from the banks the master owns, and sends
those bytes with the rule (`FaultRule.held`), so a worker replaced meanwhile holds the same
value. The control API reads through `patch_range`, so an operator sees what a Modbus
client sees (farm.config.faults.value_rules does the arithmetic for both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from time import monotonic

from farm.config.faults.rules import FaultRule
from farm.config.faults.value_rules import bank_width, overlap, reading, unfit
from farm.config.plan import ServerSpec, point_offset
from farm.config.templates import DeviceTemplate, Point, Table
from farm.errors import ConfigError
from farm.ipc.banks import server_banks
from farm.master.supervision.slot import Slot
from farm.master.supervision.supervisor import Supervisor

Entries = list[tuple[FaultRule, bytes | None]]


class PointError(ConfigError):
    """A value fault names a point some targeted server lacks, or one that does not fit."""


def check(
    kind: str, point_name: str, servers: Iterable[str], template_of: Callable[[str], DeviceTemplate]
) -> None:
    """Raise PointError unless every server's template has a point `point_name` that fits."""
    seen: set[str] = set()
    for server in servers:
        template = template_of(server)
        if template.name in seen:
            continue
        seen.add(template.name)
        point = find(template, point_name)
        if point is None:
            names = ", ".join(p.name for p in template.points) or "none"
            raise PointError(
                f"{server} ({template.name}) has no point {point_name!r}; its points: {names}"
            )
        reason = unfit(kind, point)
        if reason is not None:
            raise PointError(reason)


class ValueFaults:
    """The value-fault work of one supervisor's fault table (farm.master.faults.table)."""

    def __init__(
        self,
        supervisor: Supervisor,
        where: dict[str, tuple[int, int]],
        specs: dict[str, ServerSpec],
    ) -> None:
        self.supervisor = supervisor
        self.where = where  # server name -> (worker, number), the fault table's
        self.specs = specs  # server name -> its spec, the fault table's

    def _locate(self, name: str) -> tuple[Slot, ServerSpec, DeviceTemplate]:
        worker, _ = self.where[name]
        spec = self.specs[name]
        return self.supervisor.slots[worker], spec, self.supervisor.plan.templates[spec.template]

    def check(self, kind: str, point: str, servers: Iterable[str]) -> None:
        """PointError unless every server has a point of that name fit for `kind`."""
        check(kind, point, servers, lambda name: self._locate(name)[2])

    def capture(self, servers: Iterable[str], point: str) -> dict[str, bytes]:
        """Each server's point bytes now."""
        held = {}
        for name in servers:
            slot, spec, template = self._locate(name)
            held[name] = capture(slot.segment.buf, spec, template, point)
        return held

    def per_worker(
        self, rule: FaultRule, servers: tuple[str, ...], held: dict[str, bytes]
    ) -> dict[int, FaultRule]:
        """The rule each worker gets: `held` in the order of its numbers in the placement
        (which follows `servers`, farm.master.faults.table)."""
        values: dict[int, list[bytes]] = {}
        for name in servers:
            worker, _ = self.where[name]
            values.setdefault(worker, []).append(held[name])
        return {worker: replace(rule, held=tuple(each)) for worker, each in values.items()}

    def overlay(
        self, entries: Entries, server: str, unit_id: int, table: Table, first: int, data: bytes
    ) -> bytes:
        """`data` of a server's table as its readers see it (see `patch_range`)."""
        slot, spec, template = self._locate(server)
        banks = server_banks(slot.segment.buf, spec, template)

        def point_bytes(point: Point) -> bytes:
            view = banks[point.unit_id].view(point.table)
            size = 1 if point.table.is_bits else 2
            return bytes(view[size * point.address : size * (point.address + point.width)])

        return patch_range(entries, template, point_bytes, unit_id, table, first, data)


def find(template: DeviceTemplate, name: str) -> Point | None:
    return next((point for point in template.points if point.name == name), None)


def capture(buf: memoryview, spec: ServerSpec, template: DeviceTemplate, name: str) -> bytes:
    """The point's bytes in a server's bank now (what `stuck` holds)."""
    point = find(template, name)
    if point is None:
        return b""
    start = point_offset(spec, template, point)
    return bytes(buf[start : start + bank_width(point)])


def patch_range(
    entries: Entries,
    template: DeviceTemplate,
    point_bytes: Callable[[Point], bytes],
    unit_id: int,
    table: Table,
    first: int,
    data: bytes,
) -> bytes:
    """`data` (bank layout: a byte per bit, two per register, from address `first`) with the
    entries that faulted points share as they read now; `point_bytes` gives a point's true
    bytes."""
    count = len(data) if table.is_bits else len(data) // 2
    out: bytearray | None = None
    now = monotonic()
    for rule, held in entries:
        point = find(template, rule.point)
        if point is None or point.unit_id != unit_id or point.table is not table:
            continue
        shared = overlap(point, first, count)
        if shared is None:
            continue
        out = out if out is not None else bytearray(data)
        faulted = reading(rule, point, point_bytes(point), held, now)
        size = 1 if table.is_bits else 2
        start, end = shared
        skip = size * (start - point.address)
        out[size * (start - first) : size * (end - first)] = faulted[
            skip : skip + size * (end - start)
        ]
    return data if out is None else bytes(out)
