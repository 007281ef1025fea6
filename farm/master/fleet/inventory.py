"""The master's view of every server: where it is, whether it serves, its banks and counters.

Sits between the supervisor and the API routes (supervisor -> inventory -> api_*). Built
once from the plan; answers by name. Values are read and written in place, in the shards'
shared-memory banks the master owns (farm.ipc.banks): no round trip to a worker, and a
worker being replaced does not stop the API from answering. A write lands where the
worker's ticker reads back from, so counters and random walks carry on from it.

`faults` is the hook through which the faults registry says which faults are active on a
server (each a JSON object); until one is plugged in, no server has any. `overlay` is the
hook through which it makes points under a value fault read as Modbus clients see them.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from farm.config.plan import ServerSpec
from farm.config.templates import DeviceTemplate, Point, Table
from farm.ipc.banks import UnitBank, server_banks
from farm.ipc.journal import FARM_PEER, ServerJournal
from farm.ipc.stats import CONNECTIONS_OPEN
from farm.master.supervision.slot import Slot, SlotState
from farm.master.supervision.supervisor import Supervisor

State = Literal["up", "offline", "faulted"]


class UnknownServer(LookupError):
    """No server of that name in the farm; the message names it (the API answers 404)."""


BROADCAST_TCP_UNIT = 0xFF  # as in the engine: the device's first unit
FaultsOf = Callable[[str], list[dict[str, Any]]]
# (server, unit id, table, first address, entries in bank layout) -> as readers see them
Overlay = Callable[[str, int, Table, int, bytes], bytes]


def no_faults(server: str) -> list[dict[str, Any]]:
    return []


def no_overlay(server: str, unit_id: int, table: Table, first: int, data: bytes) -> bytes:
    return data


@dataclass(frozen=True, slots=True, kw_only=True)
class Located:
    """One server and what hosts it."""

    spec: ServerSpec
    slot: Slot
    position: int  # in its shard's servers
    template: DeviceTemplate

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def stopped(self) -> bool:
        return self.spec.name in self.slot.stopped

    @property
    def error(self) -> str | None:
        failure = self.slot.failed.get(self.spec.name)
        return failure.reason if failure is not None else None

    @property
    def up(self) -> bool:
        """Its worker serves it now."""
        return self.slot.state is SlotState.READY and not self.stopped and self.error is None

    def connections(self) -> int:
        return int(self.slot.counters.server(self.spec.stats_index)[CONNECTIONS_OPEN])

    def banks(self) -> dict[int, UnitBank]:
        """Views on its units' tables (read-only points are writable here: the operator's)."""
        return server_banks(self.slot.segment.buf, self.spec, self.template)

    def journal(self) -> ServerJournal:
        """Its write journal (farm.ipc.journal), in its shard's shared memory."""
        return self.slot.journal.server(self.spec.stats_index)

    def unit_id(self, unit: int) -> int | None:
        """The unit id `unit` names (255: the first unit), or None if it has no such unit."""
        ids = [each.unit_id for each in self.template.units]
        if unit in ids:
            return unit
        return ids[0] if unit == BROADCAST_TCP_UNIT and ids else None


def farm_write(
    server: Located,
    bank: UnitBank,
    table: Table,
    address: int,
    count: int,
    write: Callable[[], None],
) -> None:
    """Make a write of the farm's own (API, scenario, page) and journal it as the farm's."""
    width = 1 if table.is_bits else 2
    view = bank.view(table)
    before = bytes(view[width * address : width * (address + count)])
    write()
    after = bytes(view[width * address : width * (address + count)])
    server.journal().record(
        FARM_PEER, bank.unit_id, 0, table, address, after, before, time.time_ns(),
        time.monotonic_ns(),
    )  # fmt: skip


def write_point_data(bank: UnitBank, point: Point, data: bytes) -> None:
    """A point's encoded value into its unit's bank (a bit takes the data's last byte)."""
    view = bank.view(point.table)
    if point.table.is_bits:
        view[point.address] = 1 if data[-1] else 0
    else:
        view[2 * point.address : 2 * point.address + len(data)] = data


@dataclass(frozen=True, slots=True, kw_only=True)
class Filters:
    fleet: str | None = None
    name: str | None = None  # a glob: 'plc-*'
    worker: int | None = None
    state: State | None = None


class Inventory:
    """Every server of a supervisor's farm, by name, in the plan's order."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.servers: dict[str, Located] = {}
        self.refresh()
        self.faults: FaultsOf = no_faults
        self.overlay: Overlay = no_overlay

    def refresh(self) -> None:
        """Learn the servers again from the slots' shards (a fleet was scaled)."""
        templates = self.supervisor.plan.templates
        located = [
            Located(spec=spec, slot=slot, position=position, template=templates[spec.template])
            for slot in self.supervisor.slots
            for position, spec in enumerate(slot.shard.servers)
        ]
        located.sort(key=lambda each: each.spec.index)
        self.servers = {each.name: each for each in located}

    def get(self, name: str) -> Located | None:
        return self.servers.get(name)

    def locate(self, name: str) -> Located:
        """The server named `name`, or UnknownServer naming it."""
        server = self.servers.get(name)
        if server is None:
            raise UnknownServer(f"no server named {name!r}; `farm servers` lists them")
        return server

    def states(self, server: Located) -> set[State]:
        """'up' or 'offline', and 'faulted' when a fault is active on it."""
        states: set[State] = {"up" if server.up else "offline"}
        if self.faults(server.name):
            states.add("faulted")
        return states

    def state(self, server: Located) -> State:
        """One word: offline if it does not serve, else faulted if a fault is on, else up."""
        states = self.states(server)
        return "offline" if "offline" in states else "faulted" if "faulted" in states else "up"

    def select(self, filters: Filters) -> list[Located]:
        chosen = []
        for server in self.servers.values():
            spec = server.spec
            if filters.fleet is not None and spec.fleet != filters.fleet:
                continue
            if filters.name is not None and not fnmatch.fnmatchcase(spec.name, filters.name):
                continue
            if filters.worker is not None and server.slot.shard.worker != filters.worker:
                continue
            if filters.state is not None and filters.state not in self.states(server):
                continue
            chosen.append(server)
        return chosen
