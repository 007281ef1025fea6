"""What a scenario's steps do to the farm, and how `farm scenario stop` undoes it.

Beside the player in the master (scenario -> scenario_steps -> faults, switch, inventory,
scale). Each step goes through the same machinery as the API: a fault step is a fault in
the fault table (its `for` its duration), stop and start are farm.master.fleet.switch's, a set
writes the point in the banks as `PUT .../points/{point}` does, a scale is
farm.master.fleet.scale's. What a scenario applied is remembered, so stopping it clears its
faults, starts the servers it stopped, writes back the values points had before its first
set, and returns scaled fleets to their size before its first scale.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from farm.config import codec
from farm.config.faults.selection import Target, select
from farm.config.faults.spec import FaultSpecError
from farm.config.scenario.model import Step
from farm.config.templates import Point
from farm.master.faults.table import FaultTable
from farm.master.fleet.intent import API, SCENARIO
from farm.master.fleet.inventory import Inventory, Located, farm_write, write_point_data
from farm.master.fleet.switch import Switch

log = logging.getLogger("farm")
Scale = Callable[[str, int], Awaitable[object]]


class StepFailed(Exception):
    """A step could not act (its target matches nothing now, a port was taken...)."""


@dataclass(eq=False)
class StepActions:
    """Runs steps against one farm and remembers what they changed."""

    faults: FaultTable
    switch: Switch
    inventory: Inventory
    scale: Scale | None = None
    counts: Callable[[], dict[str, int]] = dict  # each fleet's size now
    fault_ids: set[int] = field(default_factory=set)
    stopped: set[str] = field(default_factory=set)
    previous: dict[tuple[str, str], bytes] = field(default_factory=dict)
    scaled: dict[str, int] = field(default_factory=dict)

    def servers(self, target: Target) -> list[str]:
        """The servers `target` picks from the farm as it is now."""
        pairs = ((name, each.spec.fleet) for name, each in self.inventory.servers.items())
        return select(target, pairs)

    async def run(self, step: Step) -> list[str]:
        """Do what the step says; returns the servers it acted on (for its end)."""
        if step.action == "fault":
            assert step.fault is not None
            try:
                fault = self.faults.add(step.fault)
            except FaultSpecError as error:
                raise StepFailed(str(error)) from None
            self.fault_ids.add(fault.id)
            await self.faults.settle()
            return list(fault.servers)
        if step.action == "scale":
            if self.scale is None:
                raise StepFailed("this farm cannot scale fleets")
            self.scaled.setdefault(step.fleet, self.counts().get(step.fleet, 0))
            await self.scale(step.fleet, step.count)
            return []
        assert step.target is not None
        names = self.servers(step.target)
        if not names:
            raise StepFailed("its target matches no server now")
        if step.action == "set":
            for name in names:
                self._set(self.inventory.locate(name), step.point, step.value)
        elif step.action == "stop":
            names = self.switch.hold(names, SCENARIO)  # those it takes down (for its end)
            self.stopped.update(names)
            await self.switch.settle()
        else:
            await self._start(names)
        return names

    async def end(self, step: Step, servers: list[str]) -> None:
        """A step's `for` is over: servers a stop step stopped start again."""
        if step.action == "stop":
            back = [name for name in servers if name in self.stopped]
            self.stopped.difference_update(back)
            self.switch.release(back, {SCENARIO})
            await self.switch.settle()

    def clear_faults(self) -> None:
        """Clear the faults the scenario added that are still on (a new play begins)."""
        for fault_id in sorted(self.fault_ids):
            self.faults.remove(fault_id)
        self.fault_ids.clear()

    async def undo(self) -> None:
        """Take back everything the scenario did (see the module docstring)."""
        self.clear_faults()
        await self.faults.settle()
        self.stopped = set()
        self.switch.release_all(SCENARIO)
        await self.switch.settle()
        for (name, point_name), data in self.previous.items():
            server = self.inventory.get(name)
            point = _point(server, point_name) if server is not None else None
            if server is not None and point is not None:
                _write(server, point, data)
        self.previous.clear()
        for fleet, count in self.scaled.items():
            if self.scale is not None:
                await self.scale(fleet, count)
        self.scaled.clear()

    async def _start(self, names: list[str]) -> None:
        """A start step: what the API or a stop step stopped serves again (an offline
        fault's servers stay down until it ends)."""
        self.stopped.difference_update(names)
        self.switch.release(names, {API, SCENARIO})
        await self.switch.settle()  # it warns of those that cannot listen again

    def _set(self, server: Located, point_name: str, value: float | str | None) -> None:
        point = _point(server, point_name)
        if point is None:
            raise StepFailed(f"{server.name} has no point {point_name!r}")
        try:
            data = codec.encode_exact(point, codec.operator_value(point, value))
        except ValueError as error:
            raise StepFailed(f"{point.name} is {point.type}: {error}") from None
        self.previous.setdefault((server.name, point.name), _read(server, point))
        _write(server, point, data)


def _point(server: Located, name: str) -> Point | None:
    return next((p for p in server.template.points if p.name == name), None)


def _read(server: Located, point: Point) -> bytes:
    view = server.banks()[point.unit_id].view(point.table)
    size = 1 if point.table.is_bits else 2
    return bytes(view[size * point.address : size * (point.address + point.width)])


def _write(server: Located, point: Point, data: bytes) -> None:
    bank = server.banks()[point.unit_id]
    farm_write(
        server, bank, point.table, point.address, point.width,
        lambda: write_point_data(bank, point, data),
    )  # fmt: skip
