"""How a fault of the table takes effect on the workers and their servers.

Used by farm.master.faults.table (the table), which decides when; this module does the work.
Each worker that hosts a server of a fault that started or ended is sent what changed
since it was last told (`Faults`, farm.ipc.messages: the faults added, the ids of those
ended), every change of one loop iteration in one message (clearing 5,000 faults is one
message, not 5,000 copies of a shrinking table), and confirms it with `FaultsApplied`
carrying the same `seq`; a worker replaced meanwhile gets them all with its Assign, and its
Ready confirms them. Offline and reboot take their servers down
through farm.master.fleet.switch and bring them back when they end, except servers that another
active offline fault still holds down; a reboot writes its servers' starting values back
and powers up their diagnostics first.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

from farm.config.behaviours import reset_server
from farm.config.faults.rules import FaultRule
from farm.config.plan import ServerSpec
from farm.ipc.banks import server_diagnostics
from farm.ipc.diagnostics import power_up
from farm.ipc.messages import ActiveFaults, Faults, FaultsApplied
from farm.master.faults.entry import Fault
from farm.master.fleet.intent import fault_hold
from farm.master.fleet.switch import Switch
from farm.master.supervision.supervisor import Supervisor

log = logging.getLogger("farm")
SETTLE_TIMEOUT_S = 10.0  # an API call waits this long at most for the workers to confirm


class FaultEffects:
    """Applies one table's faults; `where`, `specs` and `faults` are the table's own."""

    def __init__(
        self,
        supervisor: Supervisor,
        switch: Switch,
        *,
        where: dict[str, tuple[int, int]],
        specs: dict[str, ServerSpec],
        faults: dict[int, Fault],
        active_for: Callable[[int], ActiveFaults],
        entry_for: Callable[[int, int], tuple[FaultRule, tuple[int, ...]] | None],
    ) -> None:
        self.supervisor = supervisor
        self.switch = switch
        self.where = where
        self.specs = specs
        self.faults = faults
        self.active_for = active_for
        self.entry_for = entry_for
        self.seqs = itertools.count(1)
        # Faults.seq -> the worker and its confirmation; a worker confirms in order.
        self.acks: dict[int, tuple[int, asyncio.Future[None]]] = {}
        self.due: dict[int, asyncio.Future[None]] = {}  # a message to send, by worker
        self.changed: dict[int, set[int]] = {}  # fault ids to tell each worker about
        self.told: dict[int, set[int]] = {}  # the fault ids each worker applies
        self.assign_seq: dict[int, int] = {}  # the seqs before each worker's last Assign
        switch.power_cycle = self._power_cycle

    # -- each worker's faults --------------------------------------------------------------

    def told_to(self, fault_id: int) -> set[int]:
        """The workers that apply a fault now (to be told when it ends or moves)."""
        return {worker for worker, ids in self.told.items() if fault_id in ids}

    def note(self, worker: int, fault_id: int) -> asyncio.Future[None] | None:
        """A fault started, changed or ended on a worker's servers: it is told at the end
        of this loop iteration, with every other change of the iteration, in one message.
        Returns the message's confirmation when this change begins a new message."""
        self.changed.setdefault(worker, set()).add(fault_id)
        if worker in self.due:
            return None
        loop = asyncio.get_running_loop()
        confirmed = self.due[worker] = loop.create_future()
        loop.call_soon(self._send_due, worker, confirmed)
        return confirmed

    async def confirmed(self, worker: int, confirmed: asyncio.Future[None]) -> None:
        """Wait for the worker's confirmation, or its replacement's Ready."""
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), SETTLE_TIMEOUT_S)
        except TimeoutError:
            log.warning("worker %d did not confirm its faults in %g s", worker, SETTLE_TIMEOUT_S)

    def _send_due(self, worker: int, confirmed: asyncio.Future[None]) -> None:
        """Send the worker the difference between its faults now and what it was told."""
        if self.due.get(worker) is confirmed:
            del self.due[worker]  # changes from now on go in the next message
        seq = next(self.seqs)
        message = self._changes(worker, seq)
        if message is None or not self.supervisor.update_worker(worker, message):
            # Nothing changed, or no worker runs: the next Assign carries it all.
            confirmed.set_result(None)
            return
        self.acks[seq] = (worker, confirmed)

    def _changes(self, worker: int, seq: int) -> Faults | None:
        """What changed for the worker since it was last told: only the faults that did,
        so the cost follows the change, not the table."""
        told = self.told.setdefault(worker, set())
        added, removed = [], []
        for fault_id in sorted(self.changed.pop(worker, ())):
            entry = self.entry_for(fault_id, worker)
            if entry is not None:
                added.append(entry)
                told.add(fault_id)
            elif fault_id in told:
                removed.append(fault_id)
                told.discard(fault_id)
        if not added and not removed:
            return None
        return Faults(added=tuple(added), removed=tuple(removed), seq=seq)

    def assigned(self, worker: int) -> ActiveFaults:
        """Every fault for a worker's Assign: what its new process is told, all of it."""
        self.assign_seq[worker] = next(self.seqs)
        self.changed.pop(worker, None)
        active = self.active_for(worker)
        self.told[worker] = {rule.id for rule, _ in active}
        return active

    def applied(self, message: FaultsApplied) -> None:
        """The worker applied the Faults of `message.seq` (and so every earlier one)."""
        for seq, (worker, confirmed) in list(self.acks.items()):
            if worker == message.worker and seq <= message.seq:
                del self.acks[seq]
                if not confirmed.done():
                    confirmed.set_result(None)

    def replaced(self, worker: int) -> None:
        """A new worker is Ready: its Assign held every fault asked for before it."""
        self.applied(FaultsApplied(worker=worker, seq=self.assign_seq.get(worker, 0)))

    # -- offline and reboot ----------------------------------------------------------------

    def take_down(self, fault: Fault) -> None:
        """Hold the fault's servers down (the switch stops them) and count the outage of
        each that nothing held down before."""
        for name in self.switch.hold(fault.servers, fault_hold(fault.id)):
            worker, number = self.where[name]
            self.supervisor.slots[worker].counters.count_injection(number, fault.spec.kind)

    def bring_back(self, fault: Fault) -> None:
        """Let go of the fault's servers: those nothing else holds down start again (the
        switch starts them however far their stop got), a reboot's with the template's
        starting values."""
        self.switch.release(
            fault.servers, {fault_hold(fault.id)}, reboot=fault.spec.kind == "reboot"
        )

    def _power_cycle(self, name: str) -> None:
        worker, _ = self.where[name]
        slot = self.supervisor.slots[worker]
        spec = self.specs[name]
        template = self.supervisor.plan.templates[spec.template]
        reset_server(slot.segment.buf, spec, template)
        # Its diagnostics too (FC 08/11/12): counters cleared, no events, not listen-only.
        block = server_diagnostics(slot.segment.buf, spec, template)
        power_up(block, slot.counters.server(spec.stats_index))
