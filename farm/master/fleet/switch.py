"""Stop and start single servers of a running farm: the port closes, and opens again.

Sits beside the supervisor in the master (api -> switch -> supervisor -> worker). A stopped
device is offline as a switched-off network port is: connections are refused (the kernel
answers RST to a SYN) and open ones are dropped, while its registers stay where they are and
its live values keep moving; started again, it serves the same banks.

"Refused" needs the listening socket closed in every process that holds it: the master
keeps a copy of each (so a port stays open while its worker is replaced) and the worker
has its own. `shutdown()` on a listening socket cannot be undone (it releases the port, and
`listen()` does not bring it back). So once the worker confirmed the stop, the master
keeps the port with a bound, non-listening socket (`listeners.reserve`: refused, and no other
program's socket can take it), and a start listens on that socket, keeps that copy, and
passes the descriptor to the worker over its pipe (SCM_RIGHTS, farm.ipc.channel). If the
port could not be kept and another program took it, the start fails with 409, the server
stays offline, and its `error` (slot.failed) says why. The master's state is the truth: a
worker spawned later (after a kill -9, say) is given the sockets of the running servers
only, so a stopped server stays stopped.

Who wants a server down is the intent (farm.master.fleet.intent): the API
(POST /api/v1/servers/{name}/stop and /start), scenario steps (`stop`, `start`) and faults
(`offline`, `reboot`) take and give back holds at once, and one task of the switch brings
the workers in line, in rounds, until what they serve is what the intent says: a stop still
unconfirmed when its fault ends is followed by a start, never forgotten. Each round
switches thousands of servers at once: one Control per worker naming its servers (the
sockets follow in chunks), the master's copies closed or bound in one pass, and one log line
for the round. `settle` waits for the rounds to end. A start of a server that an offline
fault holds down is refused (409) naming the fault.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from farm.config.plan import ServerSpec
from farm.ipc import messages
from farm.ipc.messages import Reply, ServerFailed
from farm.master.fleet.intent import API, SCENARIO, Intent
from farm.master.supervision.listeners import bind_one, reserve
from farm.master.supervision.slot import Slot
from farm.master.supervision.supervisor import Supervisor

log = logging.getLogger("farm")
SHOWN_NAMES = 3  # servers named in a log line before the rest is counted


class CannotStart(Exception):
    """A server could not start again: its port was taken meanwhile, or the farm is stopping."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Switched:
    """What a stop or start did."""

    server: str
    changed: bool  # False: it was already in that state
    running: bool  # the worker serves it now (False while its worker is being replaced)


class Switch:
    """Stops and starts servers of one supervisor's farm; see the module docstring."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.intent = Intent()
        # Why a server that should serve could not listen again (until it does): the API's
        # server detail and the fleet view show it.
        self.reasons: dict[str, str] = {}
        self.reboots: set[str] = set()  # to start with their starting values (a reboot ended)
        self.power_cycle: Callable[[str], None] = lambda name: None  # set by the fault effects
        self._where: dict[str, tuple[Slot, ServerSpec]] = {}
        self._run: asyncio.Task[None] | None = None
        self.refresh()

    def refresh(self) -> None:
        """Learn the servers again from the slots' shards (a fleet was scaled)."""
        before = set(self._where)
        self._where = {
            spec.name: (slot, spec) for slot in self.supervisor.slots for spec in slot.shard.servers
        }
        left = before - set(self._where)
        self.intent.forget(left)
        for name in left:
            self.reasons.pop(name, None)
        self.reboots -= left

    def stopped(self, name: str) -> bool:
        slot, _ = self._where[name]
        return name in slot.stopped

    # -- intent ----------------------------------------------------------------------------

    def hold(self, names: Sequence[str], holder: str) -> list[str]:
        """`holder` wants `names` down (at once; `settle` waits for the workers); returns
        those nobody held before. Raises KeyError, before anything changes, for an unknown
        name."""
        self._check(names)
        newly = self.intent.hold(names, holder)
        self._converge()
        return newly

    def release(
        self, names: Sequence[str], holders: Collection[str], reboot: bool = False
    ) -> list[str]:
        """`holders` let go of `names`; returns those nobody holds now, which start again
        (with their starting values when `reboot`). A server that could not listen is tried
        again."""
        freed = self.intent.release([name for name in names if name in self._where], holders)
        if reboot:
            self.reboots.update(freed)
        for name in names:
            self.reasons.pop(name, None)
        self._converge()
        return freed

    def release_all(self, holder: str) -> list[str]:
        freed = self.intent.release_all(holder)
        self._converge()
        return freed

    async def settle(self) -> None:
        """Wait until the workers serve what the intent says (or the farm stops)."""
        while self._run is not None and not self._run.done():
            await asyncio.wait({self._run})  # never cancels it: others may wait on it too

    # -- what the API calls ----------------------------------------------------------------

    async def stop(self, name: str) -> Switched:
        """Close the server's port everywhere and drop its connections; raises KeyError."""
        slot, _ = self._where[name]
        was_up = name not in slot.stopped and not self.intent.down(name)
        self.hold([name], API)
        await self.settle()
        return Switched(server=name, changed=was_up, running=False)

    async def start(self, name: str) -> Switched:
        """Bind the server's address again and serve it; raises KeyError, CannotStart (409:
        its port was taken, or a fault still holds it down)."""
        slot, _ = self._where[name]
        was_stopped = name in slot.stopped or self.intent.down(name)
        self.release([name], {API, SCENARIO})
        await self.settle()
        held = self.intent.holders(name)
        if held:
            raise CannotStart(
                f"server {name} stays offline: {', '.join(held)} holds it down; "
                "clear the fault to bring it back"
            )
        if name in self.reasons:
            raise CannotStart(self.reasons[name])
        slot, _ = self._where[name]
        return Switched(server=name, changed=was_stopped, running=name not in slot.stopped)

    # -- making the intent true ------------------------------------------------------------

    def _check(self, names: Sequence[str]) -> None:
        for name in names:
            if name not in self._where:
                raise KeyError(name)

    def _converge(self) -> None:
        """Start the task that makes the workers serve what the intent says, unless it runs:
        it looks at the intent again after each round, so nothing asked meanwhile is lost."""
        if self._run is None or self._run.done():
            self._run = asyncio.create_task(self._rounds())

    async def _rounds(self) -> None:
        while not self.supervisor.stopping:
            stopped: list[ServerSpec] = []
            started: list[tuple[Slot, tuple[str, ...], asyncio.Future[Reply | None]]] = []
            failed: list[CannotStart] = []
            stops = []
            for slot in list(self.supervisor.slots):
                async with slot.sending:
                    down, up = self._diff(slot)
                    if down:
                        stopped.extend(down)
                        stops.append(self._stop_locked(slot, down))
                    bound = self._bind(slot, up, failed)
                    if bound:
                        told = tuple(spec.name for spec, _ in bound)
                        socks = [sock for _, sock in bound]
                        reply = self.supervisor.tell(slot, messages.START_SERVER, told, socks)
                        started.append((slot, told, reply))
            if not stops and not started and not failed:
                return
            for slot, reply in stops:
                await self._settle(slot, reply)
                self._reserve(slot)
            for slot, _, reply in started:
                await self._settle(slot, reply)
            _log(stopped, "stopped")
            _log([self._where[name][1] for _, told, _ in started for name in told], "started")
            warn_unstarted(failed)

    def _diff(self, slot: Slot) -> tuple[list[ServerSpec], list[ServerSpec]]:
        """The slot's servers to stop and to start (its `sending` lock held)."""
        down, up = [], []
        for spec in slot.shard.servers:
            name = spec.name
            if self.intent.down(name):
                if name not in slot.stopped:
                    down.append(spec)
            elif name in slot.stopped:
                if name not in self.reasons:  # tried once: again when asked again
                    up.append(spec)
            else:
                self.reboots.discard(name)  # it never went down
        return down, up

    def _stop_locked(
        self, slot: Slot, specs: list[ServerSpec]
    ) -> tuple[Slot, asyncio.Future[Reply | None]]:
        for spec in specs:
            slot.stopped.add(spec.name)
            sock = slot.sockets.pop(spec.index, None)
            if sock is not None:
                sock.close()
        told = tuple(spec.name for spec in specs)
        return slot, self.supervisor.tell(slot, messages.STOP_SERVER, told)

    def _bind(
        self, slot: Slot, specs: list[ServerSpec], failed: list[CannotStart]
    ) -> list[tuple[ServerSpec, socket.socket]]:
        """Bind `specs` afresh (the slot's `sending` lock held); a reboot's first get their
        starting values."""
        bound = []
        for spec in specs:
            try:
                sock = bind_one(spec, slot.reserved.pop(spec.index, None))
            except OSError as exc:
                error = _cannot(spec, exc)
                self.reasons[spec.name] = str(error)
                # Said where a failed start is: the server's `error` in the API and the page.
                slot.failed[spec.name] = ServerFailed(
                    worker=slot.shard.worker,
                    server=spec.name,
                    address=spec.address,
                    reason=str(error),
                )
                failed.append(error)
                continue
            slot.failed.pop(spec.name, None)
            if spec.name in self.reboots:
                self.reboots.discard(spec.name)
                self.power_cycle(spec.name)
            slot.sockets[spec.index] = sock
            slot.stopped.discard(spec.name)
            bound.append((spec, sock))
        return bound

    def _reserve(self, slot: Slot) -> None:
        """Keep the ports of the slot's stopped servers, now that its worker closed its
        listeners (until then the port is still theirs)."""
        for spec in slot.shard.servers:
            if spec.name in slot.stopped and spec.index not in slot.reserved:
                sock = reserve(spec)
                if sock is not None:
                    slot.reserved[spec.index] = sock

    async def _settle(self, slot: Slot, pending: asyncio.Future[Reply | None]) -> bool:
        """Wait for the worker's answer; True when it did what it was told."""
        reply = await pending
        if reply is None:
            return False  # no worker now: the next one is spawned with the new state
        if isinstance(reply.result, int):
            slot.servers_up = reply.result
        if not reply.ok:
            log.warning("worker %d: %s", slot.shard.worker, reply.error)
        return bool(reply.ok)


def _cannot(spec: ServerSpec, exc: OSError) -> CannotStart:
    reason = (
        "another program listens there now"
        if exc.errno == errno.EADDRINUSE
        else exc.strerror or str(exc)
    )
    return CannotStart(
        f"server {spec.name} cannot listen on {spec.address} again: {reason}; "
        "it stays stopped (free the port, then start it again)"
    )


def _log(specs: list[ServerSpec], how: str) -> None:
    """One line for a whole batch (a fault on 10,000 servers is not 10,000 lines)."""
    closed = ": port closed" if how == "stopped" else ""
    if len(specs) == 1:
        log.info("server %s (%s) %s%s", specs[0].name, specs[0].address, how, closed)
    elif specs:
        names = ", ".join(spec.name for spec in specs[:SHOWN_NAMES])
        more = f" and {len(specs) - SHOWN_NAMES} more" if len(specs) > SHOWN_NAMES else ""
        log.info("%d servers %s%s (%s%s)", len(specs), how, closed, names, more)


def warn_unstarted(failed: list[CannotStart]) -> None:
    """One warning for the servers of a batch that stay stopped (as `farm server start`
    would say for one)."""
    if failed:
        more = f" (and {len(failed) - 1} more servers)" if len(failed) > 1 else ""
        log.warning("%s%s", failed[0], more)
