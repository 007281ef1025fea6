"""Stop and start single servers of a running farm: the port closes, and opens again.

Sits beside the supervisor in the master (api -> switch -> supervisor -> worker). A stopped
device is offline as a switched-off network port is: connections are refused (the kernel
answers RST to a SYN) and open ones are dropped, while its registers stay where they are and
its live values keep moving; started again, it serves the same banks.

"Refused" needs the listening socket closed in every process that holds it: the master
keeps a copy of each (so a port stays open while its worker is replaced) and the worker
has its own. `shutdown()` on a listening socket cannot be undone (it releases the port, and
`listen()` does not bring it back), so a start binds afresh in the master, keeps that copy,
and passes the descriptor to the worker over its pipe (SCM_RIGHTS, farm.ipc.messages). If
another program took the port meanwhile, the start fails with 409 and the server stays
offline. The master's state is the truth: a worker spawned later (after a kill -9, say) is
given the sockets of the running servers only, so a stopped server stays stopped.

Used by the API (POST /api/v1/servers/{name}/stop and /start) and by faults that take a
server offline (`offline`, `reboot`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from dataclasses import dataclass

from farm.config.plan import ServerSpec
from farm.ipc import messages
from farm.ipc.messages import Reply
from farm.master.listeners import bind_one
from farm.master.supervisor import Slot, Supervisor

log = logging.getLogger("farm")


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
        self._where: dict[str, tuple[Slot, ServerSpec]] = {}
        self.refresh()

    def refresh(self) -> None:
        """Learn the servers again from the slots' shards (a fleet was scaled)."""
        self._where = {
            spec.name: (slot, spec) for slot in self.supervisor.slots for spec in slot.shard.servers
        }

    def stopped(self, name: str) -> bool:
        slot, _ = self._where[name]
        return name in slot.stopped

    async def stop(self, name: str) -> Switched:
        """Close the server's port everywhere and drop its connections; raises KeyError."""
        slot, spec = self._where[name]
        async with slot.sending:
            if name in slot.stopped:
                return Switched(server=name, changed=False, running=False)
            slot.stopped.add(name)
            slot.sockets.pop(spec.index).close()
            pending = self.supervisor.tell(slot, messages.STOP_SERVER, name)
        await self._settle(slot, pending)
        log.info("server %s (%s) stopped: port closed", name, spec.address)
        return Switched(server=name, changed=True, running=False)

    async def start(self, name: str) -> Switched:
        """Bind the server's address again and serve it; raises KeyError, CannotStart (409)."""
        slot, spec = self._where[name]
        async with slot.sending:
            if name not in slot.stopped:
                return Switched(server=name, changed=False, running=True)
            if self.supervisor.stopping:  # its sockets are closed, or about to be
                raise CannotStart(f"server {name} stays stopped: the farm is stopping")
            try:
                sock = bind_one(spec)
            except OSError as exc:
                reason = (
                    "another program listens there now"
                    if exc.errno == errno.EADDRINUSE
                    else exc.strerror or str(exc)
                )
                raise CannotStart(
                    f"server {name} cannot listen on {spec.address} again: {reason}; "
                    "it stays stopped (free the port, then start it again)"
                ) from exc
            slot.sockets[spec.index] = sock
            slot.stopped.discard(name)
            pending = self.supervisor.tell(slot, messages.START_SERVER, name, sock)
        running = await self._settle(slot, pending)
        log.info("server %s (%s) started", name, spec.address)
        return Switched(server=name, changed=True, running=running)

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
