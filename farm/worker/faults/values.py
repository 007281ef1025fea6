"""Value faults in a worker: what a faulted server's reads answer while a point reads wrong.

Sits beside the fault hooks (... engine -> faults -> values). A server with a value fault
has `Device.faults` set, so its requests take farm.worker.faults.hooks' path (servers without a
fault still pay one check, and the fast path is untouched); there every answer to a read
(function codes 1-4 and 23's read) is built from the bank as usual, then the entries it
shares with a faulted point are overwritten with the point's faulted reading
(farm.config.faults.value_rules), computed from the true value in the bank at that moment. The bank
is never written, so the point resumes exactly where it would be when the fault ends,
and writes by clients land in the bank as on any device.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from time import monotonic

from farm.config.faults.rules import FaultRule
from farm.config.templates import DeviceTemplate, Point, Table
from farm.ipc.banks import UnitBank
from farm.ipc.stats import INJECTION_SLOT

_READS = {
    1: Table.COILS,
    2: Table.DISCRETE_INPUTS,
    3: Table.HOLDING_REGISTERS,
    4: Table.INPUT_REGISTERS,
    23: Table.HOLDING_REGISTERS,  # read/write multiple: the answer carries the read part
}
_ADDRESS_COUNT = struct.Struct(">HH")


class Overlay:
    """One value fault on one point of one server."""

    __slots__ = ("held", "point", "rule")

    def __init__(self, rule: FaultRule, point: Point, held: bytes | None) -> None:
        self.rule = rule
        self.point = point
        self.held = held


class PointValues:
    """The value faults on one server's points, by (unit id, table)."""

    __slots__ = ("by_table", "rules")

    def __init__(self, overlays: Iterable[Overlay]) -> None:
        # Here, not at the top: the readings are numpy's (farm.config.codec), which a worker
        # loads after its boot, or now, for its first value fault.
        from farm.config.faults import value_rules

        self.rules = value_rules
        self.by_table: dict[tuple[int, Table], list[Overlay]] = {}
        for overlay in overlays:
            key = (overlay.point.unit_id, overlay.point.table)
            self.by_table.setdefault(key, []).append(overlay)

    @classmethod
    def build(
        cls, entries: Iterable[tuple[FaultRule, bytes | None]], template: DeviceTemplate
    ) -> PointValues | None:
        """The server's overlays (None if none of the points is in its template)."""
        points = {point.name: point for point in template.points}
        overlays = [
            Overlay(rule, points[rule.point], held)
            for rule, held in entries
            if rule.point in points
        ]
        return cls(overlays) if overlays else None

    def patch(self, bank: UnitBank, pdu: bytes, answer: bytes, counters: memoryview) -> bytes:
        """`answer` to the read `pdu` with the faulted points' entries as they read now."""
        table = _READS.get(pdu[0])
        if table is None or answer[0] & 0x80 or len(pdu) < 5:
            return answer
        overlays = self.by_table.get((bank.unit_id, table))
        if not overlays:
            return answer
        first, count = _ADDRESS_COUNT.unpack_from(pdu, 1)
        out: bytearray | None = None
        now = monotonic()
        rules = self.rules
        for overlay in overlays:
            point = overlay.point
            shared = rules.overlap(point, first, count)
            if shared is None:
                continue
            if out is None:
                out = bytearray(answer)
            start = point.address * (1 if table.is_bits else 2)
            true = bytes(bank.view(table)[start : start + rules.bank_width(point)])
            data = rules.reading(overlay.rule, point, true, overlay.held, now)
            _put(out, table, first, shared, point, data)
            counters[INJECTION_SLOT[overlay.rule.kind]] += 1
        return answer if out is None else bytes(out)


def _put(
    out: bytearray, table: Table, first: int, shared: tuple[int, int], point: Point, data: bytes
) -> None:
    """Write a point's reading into an answer (bytes from out[2]: packed bits or registers)."""
    start, end = shared
    if table.is_bits:
        for address in range(start, end):
            bit = address - first
            if data[0]:
                out[2 + bit // 8] |= 1 << (bit % 8)
            else:
                out[2 + bit // 8] &= ~(1 << (bit % 8)) & 0xFF
        return
    into = 2 + 2 * (start - first)
    skip = 2 * (start - point.address)
    out[into : into + 2 * (end - start)] = data[skip : skip + 2 * (end - start)]
