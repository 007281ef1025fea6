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

Used by the API (POST /api/v1/servers/{name}/stop and /start) and by faults and scenario
steps that take servers offline (`offline`, `reboot`, `stop`). Those switch thousands of
servers at once, so they go in batches (`stop_many`, `start_many`): one Control per worker
naming its servers (the sockets follow in chunks), the master's copies closed or bound in
one pass, and one log line for the batch; a single server is a batch of one.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from farm.config.plan import ServerSpec
from farm.ipc import messages
from farm.ipc.messages import Reply
from farm.master.supervision.listeners import bind_one
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
        (done,) = await self.stop_many([name])
        return done

    async def start(self, name: str) -> Switched:
        """Bind the server's address again and serve it; raises KeyError, CannotStart (409)."""
        done, failed = await self.start_many([name])
        if failed:
            raise failed[0]
        return done[0]

    async def stop_many(self, names: Sequence[str]) -> list[Switched]:
        """Stop servers (an offline fault's, say) in one pass per worker: the master closes
        its copies, each worker gets one Control naming its servers, and one line is logged.
        Raises KeyError (before anything changes) for an unknown name."""
        by_slot = self._group(names)
        done: dict[str, Switched] = {}
        pending = []
        for slot, specs in by_slot:
            async with slot.sending:
                todo = [spec for spec in specs if spec.name not in slot.stopped]
                for spec in specs:
                    done[spec.name] = Switched(server=spec.name, changed=False, running=False)
                for spec in todo:
                    slot.stopped.add(spec.name)
                    slot.sockets.pop(spec.index).close()
                    done[spec.name] = Switched(server=spec.name, changed=True, running=False)
                if todo:
                    told = tuple(spec.name for spec in todo)
                    pending.append((slot, self.supervisor.tell(slot, messages.STOP_SERVER, told)))
        for slot, reply in pending:
            await self._settle(slot, reply)
        _log([self._where[name][1] for name, each in done.items() if each.changed], "stopped")
        return [done[name] for name in names]

    async def start_many(self, names: Sequence[str]) -> tuple[list[Switched], list[CannotStart]]:
        """Start servers again in one pass per worker: bind them all in the master, send each
        worker one Control and their sockets (in chunks, `send_sockets`). Returns what was
        done for each name and why some could not start (they stay stopped); raises KeyError
        before anything changes for an unknown name."""
        by_slot = self._group(names)
        done: dict[str, Switched] = {}
        failed: list[CannotStart] = []
        pending = []
        for slot, specs in by_slot:
            async with slot.sending:
                bound = self._bind(slot, specs, done, failed)
                if bound:
                    told = tuple(spec.name for spec, _ in bound)
                    socks = [sock for _, sock in bound]
                    reply = self.supervisor.tell(slot, messages.START_SERVER, told, socks)
                    pending.append((slot, told, reply))
        for slot, told, reply in pending:
            running = await self._settle(slot, reply)
            for name in told:
                done[name] = Switched(server=name, changed=True, running=running)
        _log([self._where[name][1] for name, each in done.items() if each.changed], "started")
        return [done[name] for name in names if name in done], failed

    def _group(self, names: Sequence[str]) -> list[tuple[Slot, list[ServerSpec]]]:
        """The servers by worker, each once, in the order named; raises KeyError."""
        by_slot: dict[int, tuple[Slot, list[ServerSpec]]] = {}
        for name in dict.fromkeys(names):
            slot, spec = self._where[name]
            by_slot.setdefault(id(slot), (slot, []))[1].append(spec)
        return list(by_slot.values())

    def _bind(
        self,
        slot: Slot,
        specs: list[ServerSpec],
        done: dict[str, Switched],
        failed: list[CannotStart],
    ) -> list[tuple[ServerSpec, socket.socket]]:
        """Bind the stopped ones of `specs` afresh (the slot's `sending` lock held)."""
        bound = []
        for spec in specs:
            name = spec.name
            if name not in slot.stopped:
                done[name] = Switched(server=name, changed=False, running=True)
            elif self.supervisor.stopping:  # its sockets are closed, or about to be
                failed.append(CannotStart(f"server {name} stays stopped: the farm is stopping"))
            else:
                try:
                    sock = bind_one(spec)
                except OSError as exc:
                    failed.append(_cannot(spec, exc))
                    continue
                slot.sockets[spec.index] = sock
                slot.stopped.discard(name)
                bound.append((spec, sock))
        return bound

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
