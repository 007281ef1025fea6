"""The fault table: every fault of the farm, when it starts and ends, and who applies it.

Sits in the master between the API and the workers (api_faults -> faults -> supervisor ->
worker). A fault (farm.config.faults.spec.FaultSpec) is resolved here once, when it is added, to
server names and, per worker, to their numbers there (counters indexes); then it waits for
its start (a loop timer, on the master's monotonic clock) and is active until its end
(another timer), until it is cleared, or until the farm stops. Whenever the faults active
on a worker's servers change, the worker is sent the change (`Faults`, farm.ipc.messages;
farm.master.faults.effects), and a worker spawned after a kill -9 gets them all within its
Assign (`Supervisor.active_faults`). Workers
get durations (delays, gaps), never times.

Its parts: fault_entry (a `Fault`, and how it reads in the API and the log) and
fault_effects (sending workers their faults and awaiting confirmation; taking servers down
and bringing them back). Offline and reboot hold their servers down
(farm.master.fleet.intent) from their start to their end: farm.master.fleet.switch closes
the ports in every process and drops the connections, and brings each back when nothing
holds it down any more (not a `farm server stop`, not another offline fault), however the
workers' confirmations and the fault's end interleave. A reboot also writes its servers'
starting values back (farm.config.behaviours.reset_server), and powers up their diagnostics
(farm.ipc.diagnostics.power_up), before they come back. Each fault applied, started,
expired or cleared is one log line (faults ending together by the thousand: one line for
all). The table holds at most MAX_FAULTS faults, MAX_FAULTS_PER_SERVER on one server.

Value faults (the kinds of family value, farm.config.faults.kinds) are checked against the
targeted servers' points, start from the master's clock (`FaultRule.started`), and hold
what `stuck` captured (farm.master.faults.values); `overlay` makes the API read them as a
Modbus client does.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from typing import Any

from farm.config.faults.rules import FaultRule
from farm.config.faults.spec import (
    KINDS,
    SERVER_KINDS,
    VALUE_KINDS,
    FaultSpec,
    FaultSpecError,
    rule,
    select,
)
from farm.config.plan import ServerSpec
from farm.config.templates import Table
from farm.ipc.messages import ActiveFaults
from farm.master.faults.effects import SETTLE_TIMEOUT_S, FaultEffects
from farm.master.faults.entry import EndedFault, Fault, kind_text, log_ended, servers_text
from farm.master.faults.values import Entries, PointError, ValueFaults
from farm.master.fleet.switch import Switch
from farm.master.supervision.supervisor import Supervisor

log = logging.getLogger("farm")
ENDED_KEPT = 256
# Faults the table holds at once (scheduled or active), in all and on one server: past them
# an add is refused (422), so that a runaway script cannot grow the master and every
# message to the workers without bound (README, "Faults").
MAX_FAULTS = 10_000
MAX_FAULTS_PER_SERVER = 5_000


class TooManyFaults(FaultSpecError):
    """An add past MAX_FAULTS or MAX_FAULTS_PER_SERVER."""


class FaultTable:
    """Every fault of one supervisor's farm; see the module docstring."""

    def __init__(self, supervisor: Supervisor, switch: Switch) -> None:
        self.supervisor = supervisor
        self.switch = switch
        # Server name -> (worker, its number there: ServerSpec.stats_index), and its spec.
        self.where: dict[str, tuple[int, int]] = {}
        self.specs: dict[str, ServerSpec] = {}
        self.fleets: dict[str, str] = {}
        self.values = ValueFaults(supervisor, self.where, self.specs)
        self.refresh()
        self.faults: dict[int, Fault] = {}
        self.on_server: dict[str, set[int]] = {}  # active fault ids by server
        self.changes = 0  # bumped whenever on_server changes
        self._kinds: tuple[int, dict[str, int]] = (-1, {})
        self.per_server: Counter[str] = Counter()  # faults in the table (any state) by server
        self.ids = itertools.count(1)
        self.effects = FaultEffects(
            supervisor,
            switch,
            where=self.where,
            specs=self.specs,
            faults=self.faults,
            active_for=self.active_for,
            entry_for=self.entry_for,
        )
        self.tasks: set[asyncio.Task[None]] = set()
        # The faults that ended, newest last: how clients behaved around them (farm report).
        self.ended: deque[EndedFault] = deque(maxlen=ENDED_KEPT)
        # Told when a fault takes its servers down and when it ends (farm.master.observe).
        # Servers taken down so far, by kind (every server kind, from 0: a rate from the start).
        self.outages: dict[str, int] = dict.fromkeys(sorted(SERVER_KINDS), 0)
        self.on_down: Callable[[Fault], None] = lambda fault: None
        self.on_up: Callable[[Fault], None] = lambda fault: None
        self.ending: list[tuple[Fault, str]] = []  # to log at the end of this loop iteration
        supervisor.active_faults = self.effects.assigned
        supervisor.on_faults_applied = self.effects.applied
        supervisor.on_worker_ready = self.effects.replaced

    # -- what the API calls ----------------------------------------------------------------

    def refresh(self) -> tuple[str, ...]:
        """Learn the farm's servers again (a fleet was scaled, farm.master.fleet.scale); faults
        drop the servers that left. Returns the names that left."""
        self.where.clear()
        self.specs.clear()
        for worker, slot in enumerate(self.supervisor.slots):
            for spec in slot.shard.servers:
                self.where[spec.name] = (worker, spec.stats_index)
                self.specs[spec.name] = spec
        left = tuple(name for name in self.fleets if name not in self.where)
        self.fleets.clear()
        self.fleets.update((name, spec.fleet) for name, spec in self.specs.items())
        if left:
            self._forget(set(left))
        return left

    def _forget(self, left: set[str]) -> None:
        for fault in list(self.faults.values()):
            if not left & set(fault.servers):
                continue
            self.per_server.subtract(name for name in fault.servers if name in left)
            fault.servers = tuple(name for name in fault.servers if name not in left)
            for name in left:
                fault.held.pop(name, None)
            self._place(fault)
            if not fault.servers:
                self._finish(fault, "cleared")
            elif fault.state == "active":
                self._tell(fault)
        for name in left:
            self.on_server.pop(name, None)
            self.per_server.pop(name, None)
        self.changes += 1

    async def settle(self) -> None:
        """Wait until what was asked so far is in effect: every worker concerned confirmed
        its faults, and servers are down or back (at most SETTLE_TIMEOUT_S)."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=SETTLE_TIMEOUT_S)

    def add(self, spec: FaultSpec) -> Fault:
        """Resolve, schedule and (if it starts now) apply a fault; raises FaultSpecError
        (TooManyFaults past a cap)."""
        servers = self._resolve(spec)
        self._check_caps(servers)
        self.per_server.update(servers)
        fault_id = next(self.ids)
        now = time.monotonic()
        fault = Fault(
            id=fault_id,
            spec=spec,
            servers=tuple(servers),
            rule=rule(fault_id, spec, started=now + spec.start_in),
            placement={},
            start=now + spec.start_in,
            end=None if spec.duration is None else now + spec.start_in + spec.duration,
        )
        self._place(fault)
        self.faults[fault_id] = fault
        when = f"starts in {spec.start_in:g} s" if spec.start_in else "active now"
        until = "until cleared" if spec.duration is None else f"for {spec.duration:g} s"
        what, on = kind_text(fault), servers_text(fault)
        log.info("fault %d applied: %s on %s, %s, %s", fault_id, what, on, when, until)
        loop = asyncio.get_running_loop()
        if spec.start_in:
            fault.timers.append(loop.call_later(spec.start_in, self._start, fault))
        else:
            self._start(fault, quiet=True)
        if spec.duration is not None:
            ends_in = spec.start_in + spec.duration
            fault.timers.append(loop.call_later(ends_in, self._finish, fault, "expired"))
        return fault

    def get(self, fault_id: int) -> Fault | None:
        return self.faults.get(fault_id)

    def remove(self, fault_id: int) -> Fault | None:
        """Clear one fault (None if there is no such fault)."""
        fault = self.faults.get(fault_id)
        if fault is not None:
            self._finish(fault, "cleared")
        return fault

    def clear(self) -> list[Fault]:
        cleared = list(self.faults.values())
        for fault in cleared:
            self._finish(fault, "cleared")
        return cleared

    def views(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [fault.view(now) for fault in self.faults.values()]

    def faults_of(self, server: str) -> list[dict[str, Any]]:
        """The faults active on one server, as the API shows them."""
        now = time.monotonic()
        return [self.faults[each].view(now) for each in sorted(self.on_server.get(server, ()))]

    def active_by_kind(self) -> dict[str, int]:
        """Active faults by kind, every kind present (for modbus_farm_faults_active).

        Called from the scrape's thread: the table is copied in one C-level step first.
        """
        faults = tuple(self.faults.values())
        counts: Counter[str] = Counter(f.spec.kind for f in faults if f.state == "active")
        return {kind: counts[kind] for kind in KINDS}

    def kinds_by_server(self) -> dict[str, int]:
        """The kinds active on each server with a fault on, as a bit mask of their places in
        KINDS (how the fleet view marks its cells). The same dict until on_server changes:
        the view, asking twice a second, rebuilds nothing while faults stand still."""
        if self._kinds[0] != self.changes:
            bit = {kind: 1 << place for place, kind in enumerate(KINDS)}
            faults = self.faults
            masks = {
                name: sum({bit[faults[i].spec.kind] for i in ids if i in faults})
                for name, ids in self.on_server.items()
            }
            self._kinds = (self.changes, masks)
        return self._kinds[1]

    def active_for(self, worker: int) -> ActiveFaults:
        """Every fault active now on a worker's servers, as the worker applies them."""
        return tuple(
            (fault.rules.get(worker, fault.rule), fault.placement[worker])
            for fault in self.faults.values()
            if fault.state == "active" and worker in fault.placement
        )

    def entry_for(self, fault_id: int, worker: int) -> tuple[FaultRule, tuple[int, ...]] | None:
        """One fault as a worker applies it (None: not active on its servers now)."""
        fault = self.faults.get(fault_id)
        if fault is None or fault.state != "active" or worker not in fault.placement:
            return None
        return fault.rules.get(worker, fault.rule), fault.placement[worker]

    def overlay(self, server: str, unit_id: int, table: Table, first: int, data: bytes) -> bytes:
        """Table entries of a server (bank layout, from `first`) as its readers see them:
        with what active value faults make its points read (Inventory.overlay)."""
        entries: Entries = [
            (self.faults[each].rule, self.faults[each].held.get(server))
            for each in sorted(self.on_server.get(server, ()))
            if each in self.faults and self.faults[each].spec.kind in VALUE_KINDS
        ]
        if not entries:
            return data
        return self.values.overlay(entries, server, unit_id, table, first, data)

    async def close(self) -> None:
        """The farm is stopping: cancel every timer and whatever is under way."""
        for fault in self.faults.values():
            for timer in fault.timers:
                timer.cancel()
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- the life of a fault ---------------------------------------------------------------

    def _resolve(self, spec: FaultSpec) -> list[str]:
        target = spec.target
        unknown = [name for name in target.servers if name not in self.where]
        if unknown:
            raise FaultSpecError("target.servers", f"no server named {unknown[0]!r} in this farm")
        if target.fleet is not None and target.fleet not in self.fleets.values():
            fleets = ", ".join(sorted(set(self.fleets.values())))
            raise FaultSpecError("target.fleet", f"no fleet {target.fleet!r}; fleets: {fleets}")
        servers = select(target, self.fleets.items())
        if not servers:
            raise FaultSpecError("target", "matches no server of this farm")
        if spec.kind in VALUE_KINDS:
            try:
                self.values.check(spec.kind, getattr(spec, "point", ""), servers)
            except PointError as error:
                raise FaultSpecError("point", str(error)) from None
        return servers

    def _check_caps(self, servers: list[str]) -> None:
        if len(self.faults) >= MAX_FAULTS:
            raise TooManyFaults(
                "faults",
                f"the farm holds {len(self.faults):,} faults, its cap (MAX_FAULTS); "
                "clear some first (`farm fault clear`)",
            )
        full = [name for name in servers if self.per_server[name] >= MAX_FAULTS_PER_SERVER]
        if full:
            raise TooManyFaults(
                "faults",
                f"{full[0]} holds {MAX_FAULTS_PER_SERVER:,} faults, the cap per server "
                "(MAX_FAULTS_PER_SERVER); clear some of its faults first",
            )

    def _place(self, fault: Fault) -> None:
        """Which numbers of which worker a fault's servers are (and their held values)."""
        placement: dict[int, list[int]] = {}
        for name in fault.servers:
            worker, number = self.where[name]
            placement.setdefault(worker, []).append(number)
        fault.placement = {worker: tuple(each) for worker, each in placement.items()}
        if fault.held:
            fault.rules = self.values.per_worker(fault.rule, fault.servers, fault.held)

    def _hold(self, fault: Fault) -> None:
        """A stuck fault without a value holds each server's point as it reads now."""
        spec = fault.spec
        if spec.kind == "stuck" and getattr(spec, "value", None) is None:
            fault.held = self.values.capture(fault.servers, fault.rule.point)
            fault.rules = self.values.per_worker(fault.rule, fault.servers, fault.held)

    def _start(self, fault: Fault, quiet: bool = False) -> None:
        self._hold(fault)
        fault.state = "active"
        self.changes += 1
        for name in fault.servers:
            self.on_server.setdefault(name, set()).add(fault.id)
        if not quiet:
            log.info("fault %d started: %s on %s", fault.id, kind_text(fault), servers_text(fault))
        if fault.spec.kind in SERVER_KINDS:
            self.outages[fault.spec.kind] += len(fault.servers)
            self.on_down(fault)
            self.effects.take_down(fault)  # now, in order: whatever the workers are doing
            self._later(self.switch.settle())
        self._tell(fault)

    def _finish(self, fault: Fault, how: str) -> None:
        if self.faults.pop(fault.id, None) is None:
            return
        self.per_server.subtract(fault.servers)
        for name in fault.servers:
            if self.per_server[name] <= 0:
                del self.per_server[name]
        for timer in fault.timers:
            timer.cancel()
        self._log_end(fault, how)
        was, fault.state = fault.state, how
        if was != "active":
            return
        self.ended.append(EndedFault.of(fault, ended=time.monotonic()))
        self.changes += 1
        for name in fault.servers:
            ids = self.on_server.get(name)
            if ids is not None:
                ids.discard(fault.id)
                if not ids:
                    del self.on_server[name]
        if fault.spec.kind in SERVER_KINDS:
            self.on_up(fault)
            self.effects.bring_back(fault)
            self._later(self.switch.settle())
        self._tell(fault)

    def _log_end(self, fault: Fault, how: str) -> None:
        """Logged at the end of the loop iteration, with the others ending in it
        (farm.master.faults.entry.log_ended)."""
        if not self.ending:
            asyncio.get_running_loop().call_soon(self._log_ended)
        self.ending.append((fault, how))

    def _log_ended(self) -> None:
        ended, self.ending = self.ending, []
        log_ended(ended)

    def _tell(self, fault: Fault) -> None:
        """Send every worker that hosts a server of `fault` its active faults, as they are."""
        for worker in set(fault.placement) | self.effects.told_to(fault.id):
            confirmed = self.effects.note(worker, fault.id)
            if confirmed is not None:
                self._later(self.effects.confirmed(worker, confirmed))

    def _later(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
