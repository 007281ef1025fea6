"""The fault rules of every server of a worker, and which `ServerFaults` each device holds.

Sits beside the faults in a worker (... worker process -> faultbook -> faults): the worker
hands it every `Faults` message from the master (`FaultBook.replace`), and each device as it
is built (`attach`); the book gives a device the request faults (farm.worker.faults.hooks) and value
faults (farm.worker.faults.values) of its position, or takes them back. Offline and reboot act on
the server's listener instead (farm.worker.process).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from farm.config.faults.rules import SERVER_KINDS, VALUE_KINDS, FaultRule
from farm.config.templates import DeviceTemplate
from farm.ipc.messages import ActiveFaults
from farm.worker.faults.hooks import ServerFaults
from farm.worker.faults.values import PointValues

if TYPE_CHECKING:
    from farm.worker.engine import Device


def _no_template(position: int) -> DeviceTemplate | None:
    return None


class FaultBook:
    """The fault rules of every server of a worker, by number (its counters index).

    `template_of` finds a number's template (the worker sets it), for the points that value
    faults name.
    """

    def __init__(self) -> None:
        self.rules: dict[int, tuple[FaultRule, ...]] = {}
        self.values: dict[int, list[tuple[FaultRule, bytes | None]]] = {}
        self.rng = random.Random()
        self.template_of: Callable[[int], DeviceTemplate | None] = _no_template

    def replace(self, active: ActiveFaults, devices: Callable[[int], Device | None]) -> None:
        """Make `active` (all the worker's faults now) the rules; `devices` finds built ones."""
        rules: dict[int, list[FaultRule]] = {}
        values: dict[int, list[tuple[FaultRule, bytes | None]]] = {}
        for rule, positions in active:
            if rule.kind in SERVER_KINDS:
                continue  # acts on the listener (farm.worker.process), not on requests
            if rule.kind in VALUE_KINDS:
                for number, position in enumerate(positions):
                    held = rule.held[number] if rule.held else None
                    values.setdefault(position, []).append((rule, held))
                continue
            for position in positions:
                rules.setdefault(position, []).append(rule)
        before = self.rules.keys() | self.values.keys()
        self.rules = {p: tuple(each) for p, each in rules.items()}
        self.values = values
        for position in before | self.rules.keys() | self.values.keys():
            device = devices(position)
            if device is not None:
                self.attach(device, position)

    def attach(self, device: Device, position: int) -> None:
        """Give a device the rules of its position (a new one, or after a change)."""
        rules = self.rules.get(position, ())
        values = None
        entries = self.values.get(position)
        template = self.template_of(position) if entries else None
        if entries and template is not None:
            values = PointValues.build(entries, template)
        if device.faults is not None:
            device.faults.rules = rules
            device.faults.values = values
            device.faults.settle()
        elif rules or values is not None:
            device.faults = ServerFaults(device, rules, self.rng, values)
