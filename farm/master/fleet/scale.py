"""Fleets that change while the farm runs: `farm scale FLEET N`, a scenario's scale step,
and POST /api/v1/fleets/{name}/scale.

Beside the supervisor in the master (api_fleets, scenario_steps -> scale -> supervisor ->
worker). A fleet grows by the next names and addresses its config gives
(farm.config.growth), exactly as if it had asked for N from the start; it shrinks from its
end (the servers added last leave first). No worker is restarted and no other server is
disturbed:
  - growing, the master binds every newcomer's address first (all or nothing: a taken
    address is a 409 and nothing changes), sends each to the least-loaded worker: it places
    them in the shard's memory (farm.config.plan.add_servers: a departed server's free
    slot, or a block appended at the end), grows the shard's two segments in place, writes
    their starting values and zeroed counters, and passes the new listening sockets to the
    running worker over its pipe (`AddServers`, then SCM_RIGHTS, as farm.master.fleet.switch does
    for one server), which serves them (farm.worker.membership);
  - shrinking, the master closes its copies of the leavers' sockets and tells their workers
    (`RemoveServers`): their ports close, their connections drop, their slots are free for
    the next newcomer of their template.
The shard each slot holds is the truth: a worker replaced later (kill -9) is given the shard
as it is now. The inventory, the switch and the fault table learn the new set of servers
(faults drop the servers that left); /metrics follows each slot's shard by itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from farm.config.behaviours import PointGroups, initialize_fifos, initialize_records
from farm.config.growth import FleetSpec
from farm.config.plan import (
    TABLE_ORDER,
    ServerRequest,
    ServerSpec,
    Shard,
    add_servers,
    table_bytes,
    table_offset,
)
from farm.config.templates import DeviceTemplate
from farm.ipc.banks import server_diagnostics
from farm.ipc.messages import AddServers, RemoveServers, Reply
from farm.master.supervision.listeners import bind_one, describe
from farm.master.supervision.slot import Slot
from farm.master.supervision.supervisor import Supervisor

log = logging.getLogger("farm")


class CannotScale(Exception):
    """A scale the farm refuses; `status`: 404 unknown fleet, 422 bad count, 409 busy."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True, kw_only=True)
class Scaled:
    fleet: str
    before: int
    count: int
    added: tuple[str, ...]
    removed: tuple[str, ...]
    seconds: float


class Scaler:
    """Grows and shrinks the fleets of one supervisor's farm; see the module docstring."""

    def __init__(
        self, supervisor: Supervisor, refresh: tuple[Callable[[], object], ...] = ()
    ) -> None:
        self.supervisor = supervisor
        self.refreshers = refresh  # the inventory, switch and fault table learn the servers
        self.fleets = {fleet.name: fleet for fleet in supervisor.plan.fleets}
        self.lock = asyncio.Lock()  # one scale at a time
        known = (spec.index for slot in supervisor.slots for spec in slot.shard.servers)
        self.indexes = itertools.count(max(known, default=-1) + 1)

    def counts(self) -> dict[str, int]:
        """Each fleet's servers now."""
        counted = Counter(
            spec.fleet for slot in self.supervisor.slots for spec in slot.shard.servers
        )
        return {name: counted[name] for name in self.fleets}

    async def scale(self, fleet: str, count: int) -> Scaled:
        """Make `fleet` `count` servers; raises CannotScale."""
        part = self.supervisor.plan.fleet_slice
        if not part.whole:
            raise CannotScale(
                f"a shard cannot scale: this farm is shard {part.index} of {part.count}, "
                f"servers {part.start}-{part.stop - 1} of a fleet of {part.total}; to change "
                "the fleet's size, restart every shard with the new --count",
                409,
            )
        spec = self.fleets.get(fleet)
        if spec is None:
            known = ", ".join(self.fleets) or "none"
            raise CannotScale(f"no fleet {fleet!r}; fleets: {known}", 404)
        if not 0 <= count <= spec.capacity:
            raise CannotScale(
                f"count: {count} is outside 0-{spec.capacity} (the fleet's address range "
                f"holds {spec.capacity}); pick a count in it",
                422,
            )
        async with self.lock:
            began = time.monotonic()
            before = self.counts()[fleet]
            if self.supervisor.stopping:
                raise CannotScale("the farm is stopping", 409)
            if count > before:
                newcomers = spec.servers(count)[before:]
                self._check_names(fleet, newcomers)
                added = await self._grow(spec, newcomers)
                removed: tuple[str, ...] = ()
            else:
                added, removed = (), await self._shrink(spec.names(before)[count:])
            self.supervisor.plan = replace(
                self.supervisor.plan, shards=tuple(slot.shard for slot in self.supervisor.slots)
            )
            for refresh in self.refreshers:
                refresh()
            took = time.monotonic() - began
        if added or removed:
            log.info(
                "fleet %s scaled %d -> %d (+%d, -%d) in %.2f s",
                fleet, before, count, len(added), len(removed), took,
            )  # fmt: skip
        return Scaled(
            fleet=fleet, before=before, count=count, added=added, removed=removed, seconds=took
        )

    # -- growing -------------------------------------------------------------------------

    async def _grow(self, fleet: FleetSpec, requests: list[ServerRequest]) -> tuple[str, ...]:
        slots = self.supervisor.slots
        load = [len(slot.shard.servers) for slot in slots]
        chosen: dict[int, list[tuple[int, ServerRequest]]] = {}
        for request in requests:  # each to the least-loaded worker
            worker = min(range(len(slots)), key=lambda each: (load[each], each))
            load[worker] += 1
            chosen.setdefault(worker, []).append((next(self.indexes), request))
        shards = {
            worker: add_servers(
                slots[worker].shard,
                newcomers,
                self.supervisor.plan.templates,
                self.supervisor.plan.seed,
            )
            for worker, newcomers in chosen.items()
        }
        joining = {
            worker: shards[worker].servers[len(slots[worker].shard.servers) :] for worker in shards
        }
        sockets = self._bind([spec for specs in joining.values() for spec in specs])
        pending = [
            self._join(slots[worker], shards[worker], joining[worker], sockets) for worker in shards
        ]
        await asyncio.gather(*pending)
        return tuple(request.name for request in requests)

    def _check_names(self, fleet: str, requests: list[ServerRequest]) -> None:
        """CannotScale (409) when a newcomer would take the name of a server of the farm (two
        fleets whose name patterns give the same names: the API finds a server by its name)."""
        taken = {spec.name for slot in self.supervisor.slots for spec in slot.shard.servers}
        clash = [request.name for request in requests if request.name in taken]
        if clash:
            raise CannotScale(
                f"{clash[0]} is already the name of a server of the farm ({len(clash)} of the "
                f"new names are taken); give fleet {fleet!r} a name_pattern of its own",
                409,
            )

    def _bind(self, specs: list[ServerSpec]) -> dict[int, socket.socket]:
        """Every newcomer's listening socket, or CannotScale (409) and none."""
        bound: dict[int, socket.socket] = {}
        try:
            for spec in specs:
                bound[spec.index] = bind_one(spec)
        except OSError as exc:
            for sock in bound.values():
                sock.close()
            taken = [(spec.host, spec.port) for spec in specs if spec.index not in bound][:1]
            raise CannotScale(
                f"cannot listen on {describe(taken)}: {exc.strerror or exc}; "
                "free the address (or scale to fewer)",
                409,
            ) from exc
        return bound

    async def _join(
        self,
        slot: Slot,
        shard: Shard,
        specs: tuple[ServerSpec, ...],
        sockets: dict[int, socket.socket],
    ) -> None:
        templates = self.supervisor.plan.templates
        async with slot.sending:
            slot.segment.grow(shard.bank_bytes)
            slot.counters.grow(shard.stats_size)
            slot.journal.grow(shard.stats_size)
            _fresh(slot, specs, templates)
            slot.shard = shard
            socks = [sockets[spec.index] for spec in specs]
            slot.sockets.update((spec.index, sockets[spec.index]) for spec in specs)
            used = {spec.template: templates[spec.template] for spec in specs}
            pending = self.supervisor.ask(
                slot,
                lambda request_id: AddServers(request_id=request_id, servers=specs, templates=used),
                socks,
            )
        _settled(slot, await pending)

    # -- shrinking -----------------------------------------------------------------------

    async def _shrink(self, names: list[str]) -> tuple[str, ...]:
        leaving = set(names)
        pending = []
        for slot in self.supervisor.slots:
            mine = tuple(spec for spec in slot.shard.servers if spec.name in leaving)
            if mine:
                pending.append(self._leave(slot, mine))
        await asyncio.gather(*pending)
        return tuple(names)

    async def _leave(self, slot: Slot, specs: tuple[ServerSpec, ...]) -> None:
        names = tuple(spec.name for spec in specs)
        async with slot.sending:
            for spec in specs:
                for held in (slot.sockets, slot.reserved):
                    sock = held.pop(spec.index, None)
                    if sock is not None:
                        sock.close()
                slot.stopped.discard(spec.name)
                slot.failed.pop(spec.name, None)
            slot.shard = replace(
                slot.shard, servers=tuple(s for s in slot.shard.servers if s.name not in names)
            )
            pending = self.supervisor.ask(
                slot, lambda request_id: RemoveServers(request_id=request_id, servers=names)
            )
        _settled(slot, await pending)


def _settled(slot: Slot, reply: Reply | None) -> None:
    if reply is None:
        return  # no worker now: the next one is spawned with the shard as it is
    if isinstance(reply.result, int):
        slot.servers_up = reply.result
    if not reply.ok:
        log.warning("worker %d: %s", slot.shard.worker, reply.error)


def _fresh(slot: Slot, specs: tuple[ServerSpec, ...], templates: dict[str, DeviceTemplate]) -> None:
    """Newcomers' memory as a new device's: a slot a server left may hold its bytes."""
    buf = slot.segment.buf
    data = np.frombuffer(buf, dtype=np.uint8)
    zero = memoryview(bytes(8 * len(slot.counters.server(0)))).cast("Q")
    groups = PointGroups(buf)
    for spec in specs:
        template = templates[spec.template]
        slot.counters.server(spec.stats_index)[:] = zero
        slot.journal.clear(spec.stats_index)
        for unit in template.units:
            for table in TABLE_ORDER:
                start = table_offset(spec, template, unit.unit_id, table)
                data[start : start + table_bytes(unit, table)] = 0
        block = server_diagnostics(buf, spec, template)
        block[:] = bytes(len(block))
        groups.add(spec, template)
    groups.freeze()
    groups.initialize()
    for spec in specs:
        initialize_fifos(buf, spec, templates[spec.template])
        initialize_records(buf, spec, templates[spec.template])
