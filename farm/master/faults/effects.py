"""How a fault of the table takes effect on the workers and their servers.

Used by farm.master.faults.table (the table), which decides when; this module does the work.
Each worker that hosts a server of a fault that started or ended is sent all the faults
active on its servers now (`Faults`, farm.ipc.messages) and confirms them with
`FaultsApplied` carrying the same `seq`. Offline and reboot take their servers down
through farm.master.fleet.switch and bring them back when they end, except servers that another
active offline fault still holds down; a reboot writes its servers' starting values back
and powers up their diagnostics first.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import Callable

from farm.config.behaviours import reset_server
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
    ) -> None:
        self.supervisor = supervisor
        self.switch = switch
        self.where = where
        self.specs = specs
        self.faults = faults
        self.active_for = active_for
        self.seqs = itertools.count(1)
        self.acks: dict[int, asyncio.Future[None]] = {}  # Faults.seq -> its confirmation
        switch.power_cycle = self._power_cycle

    # -- each worker's faults --------------------------------------------------------------

    async def update(self, worker: int) -> None:
        """Send a worker its active faults, as they are, and wait for its confirmation."""
        seq = next(self.seqs)
        confirmed = self.acks[seq] = asyncio.get_running_loop().create_future()
        make = functools.partial(self._faults, worker, seq)
        try:
            if await self.supervisor.update_worker(worker, make):
                await asyncio.wait_for(confirmed, SETTLE_TIMEOUT_S)
        except TimeoutError:
            log.warning("worker %d did not confirm its faults in %g s", worker, SETTLE_TIMEOUT_S)
        finally:
            del self.acks[seq]

    def _faults(self, worker: int, seq: int) -> Faults:
        return Faults(active=self.active_for(worker), seq=seq)

    def applied(self, message: FaultsApplied) -> None:
        confirmed = self.acks.get(message.seq)
        if confirmed is not None and not confirmed.done():
            confirmed.set_result(None)

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
