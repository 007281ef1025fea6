"""The supervisor: starts, watches, restarts and stops the worker processes.

Sits after the plan in the data flow (plan -> supervisor -> worker). The only module that
starts or kills processes. Runs in the master's asyncio loop and never polls: each worker's
process sentinel and pipe are watched with `loop.add_reader`, so a death or a message
arrives as an event. A watchdog task checks deadlines only: a worker that has not said
`Ready` within `boot_timeout_s`, or whose heartbeats stop for `heartbeat_timeout_s` (its
loop is stuck, or it was SIGSTOPped), is killed and replaced.

Each slot (one shard) is restarted with a backoff that grows with consecutive crashes;
a slot that fails to boot `max_boot_failures` times in a row, or a worker that exits with
`EXIT_BOOT_FAILED`, stops the farm with a `BootError` naming the slot and the cause.

Heartbeat ages are measured on the master's loop, so time the master itself was stalled
(a long callback, a SIGSTOP, a laptop lid) is not charged to the workers: the watchdog
measures how late its own sleeps wake up, adds that to `stalled_s`, and a worker's silence
is the time since its last heartbeat minus the master's stalls since then. Without that, a
master resumed after a stall would kill every healthy worker whose heartbeats were still
waiting, unread, in its pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import multiprocess

from farm.config.behaviours import initialize_shard
from farm.config.plan import Plan, Shard
from farm.errors import BootError
from farm.ipc import messages
from farm.ipc.banks import Segment
from farm.ipc.messages import (
    ActiveFaults,
    Assign,
    Connection,
    Control,
    Events,
    FaultsApplied,
    Heartbeat,
    Message,
    Ready,
    Reply,
    ServerFailed,
    Stop,
)
from farm.ipc.spawn import EXIT_BOOT_FAILED, WORKER_ENTRY, InheritedSockets, run_entry
from farm.ipc.stats import ShardCounters
from farm.master import logs
from farm.master.logs import tag

log = logging.getLogger("farm")


class SlotState(StrEnum):
    STARTING = "starting"  # spawned, not Ready yet
    READY = "ready"
    RESTARTING = "restarting"  # its worker died; a new one is due after the backoff
    STOPPED = "stopped"  # the farm is stopping, or the slot failed for good


class WorkerProcess(Protocol):
    """The parts of a `multiprocess` Process the supervisor uses."""

    @property
    def pid(self) -> int | None: ...
    @property
    def sentinel(self) -> int: ...
    @property
    def exitcode(self) -> int | None: ...
    def start(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...
    def kill(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorOptions:
    heartbeat_interval_s: float = 0.5
    heartbeat_timeout_s: float = 3.0
    boot_timeout_s: float = 30.0
    max_boot_failures: int = 3
    stop_grace_s: float = 3.0
    backoff_s: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
    log_level: int = logging.INFO  # what workers report (DEBUG: every connection)
    stable_after_s: float = 30.0  # a worker up this long resets its slot's backoff


@dataclass(eq=False)
class Slot:
    """One shard and the worker process currently hosting it."""

    shard: Shard
    segment: Segment
    counters: ShardCounters
    # Server index -> the master's copy of its listening socket; a server stopped through
    # the API (farm.master.switch) has none, and a worker spawned meanwhile does not serve it.
    sockets: dict[int, socket.socket]
    state: SlotState = SlotState.STARTING
    process: WorkerProcess | None = None
    conn: Connection | None = None
    restarts: int = 0
    crashes_in_a_row: int = 0
    boot_failures: int = 0
    spawned_at: float = 0.0
    ready_at: float = 0.0
    last_heartbeat: float = 0.0
    # The master's `stalled_s` when the worker was spawned and last heard from.
    stalled_at_spawn: float = 0.0
    stalled_at_heartbeat: float = 0.0
    heartbeat: Heartbeat | None = None
    servers_up: int = 0
    failed: dict[str, ServerFailed] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)  # names of servers stopped through the API
    replies: dict[int, asyncio.Future[Reply | None]] = field(default_factory=dict)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    sending: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def pid(self) -> int | None:
        # None while Process.start is still running in its thread, too.
        pid = None if self.process is None else self.process.pid
        return None if pid is None else int(pid)


class Supervisor:
    def __init__(
        self,
        plan: Plan,
        sockets: dict[int, socket.socket],
        options: SupervisorOptions,
        entry: str = WORKER_ENTRY,  # `module:function` each worker process runs
    ) -> None:
        self.plan = plan
        self.options = options
        self.entry = entry
        self.origin = time.monotonic()
        self.context = multiprocess.get_context("spawn")
        self.slots = [
            Slot(
                shard=shard,
                segment=Segment.create(shard.bank_bytes),
                counters=ShardCounters.create(shard.stats_size),
                sockets={s.index: sockets[s.index] for s in shard.servers},
            )
            for shard in plan.shards
        ]
        for slot in self.slots:  # starting values, once: a restarted worker keeps the bank's
            initialize_shard(slot.segment.buf, slot.shard, plan.templates)
            slot.segment.remap()
        self.stopping = False
        self.stalled_s = 0.0  # how long the master's own loop was late, in all
        self.fatal: BootError | None = None
        self.changed = asyncio.Event()  # set on every state change; start() waits on it
        self.on_progress: Callable[[int, int], None] | None = None
        self.on_fatal: Callable[[], None] | None = None
        # The faults each worker must apply now (farm.master.faults sets both): sent within
        # every Assign, so a restarted worker applies them again.
        self.active_faults: Callable[[int], ActiveFaults] = lambda worker: ()
        self.on_faults_applied: Callable[[FaultsApplied], None] = lambda message: None
        self._request_ids = itertools.count(1)
        self._watchdog: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn every worker and wait until all are ready; raises BootError."""
        self._watchdog = asyncio.create_task(self._watch())
        spawns = [asyncio.create_task(self._spawn(slot)) for slot in self.slots]
        self._tasks.update(spawns)
        # Shielded: a stop that cancels start() must not cut a spawn off halfway (a process
        # started in a thread, its sentinel never watched); each spawn sees `stopping` and
        # ends its worker itself.
        await asyncio.shield(asyncio.gather(*spawns))
        while not all(slot.state is SlotState.READY for slot in self.slots):
            if self.fatal is not None:
                raise self.fatal
            self.changed.clear()
            await self.changed.wait()

    async def stop(self) -> None:
        """Ask every worker to stop, kill what is left after the grace period, free all."""
        self.stopping = True
        for slot in self.slots:
            if (
                slot.conn is not None
                and slot.process is not None
                and slot.state != SlotState.STOPPED
            ):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(slot.sending.acquire(), self.options.stop_grace_s)
                    slot.sending.release()
                if slot.conn is not None:
                    with contextlib.suppress(OSError):
                        messages.send(slot.conn, Stop(reason="farm stopping"))
        live = [slot for slot in self.slots if slot.process is not None]
        waits = [asyncio.create_task(slot.exited.wait()) for slot in live]
        if waits:
            await asyncio.wait(waits, timeout=self.options.stop_grace_s)
        for slot in live:
            if not slot.exited.is_set() and slot.pid is not None:
                log.warning(
                    "worker %d (pid %d) did not stop in time; killing it",
                    slot.shard.worker,
                    slot.pid,
                    extra=tag("worker_killed", worker=slot.shard.worker, pid=slot.pid),
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGKILL)
        for slot in live:
            if slot.process is not None:
                await asyncio.to_thread(slot.process.join, 2.0)
                self._forget_process(slot)
        for task in (self._watchdog, *self._tasks):
            if task is not None:
                task.cancel()
        for slot in self.slots:
            for sock in slot.sockets.values():
                sock.close()
            slot.segment.close()
            slot.counters.close()

    # -- spawning and exits ------------------------------------------------------------

    async def _spawn(self, slot: Slot) -> None:
        # The lock is held from the choice of sockets until Assign is written: a server
        # stopped or started meanwhile (farm.master.switch) is then told to the worker after
        # its Assign, never before, and never lost between the two.
        async with slot.sending:
            await self._spawn_locked(slot)

    async def _spawn_locked(self, slot: Slot) -> None:
        if self.stopping:
            return
        loop = asyncio.get_running_loop()
        ours, theirs = self.context.Pipe(duplex=True)
        process = self.context.Process(
            target=run_entry,
            args=(self.entry, theirs, InheritedSockets(tuple(slot.sockets.items()))),
            name=f"farm-worker-{slot.shard.worker}",
            daemon=True,
        )
        slot.state, slot.process, slot.conn = SlotState.STARTING, process, ours
        slot.servers_up, slot.heartbeat, slot.failed = 0, None, {}
        slot.exited = asyncio.Event()
        slot.spawned_at, slot.stalled_at_spawn = time.monotonic(), self.stalled_s
        # Process.start writes the pickled process object to the child: off the loop, it blocks.
        await asyncio.to_thread(process.start)
        theirs.close()
        if self.stopping:  # stop() began meanwhile: this worker has nothing to finish
            process.kill()
            await asyncio.to_thread(process.join, 2.0)
            slot.exited.set()
            return
        loop.add_reader(process.sentinel, self._on_exit, slot)
        messages.watch(loop, ours, lambda: self._on_message(slot, ours))
        assign = Assign(
            worker=slot.shard.worker,
            segment=slot.segment.name,
            stats_segment=slot.counters.name,
            templates=self.plan.templates,
            servers=slot.shard.servers,
            heartbeat_interval_s=self.options.heartbeat_interval_s,
            origin=self.origin,
            faults=self.active_faults(slot.shard.worker),  # read under the lock: current
            log_level=self.options.log_level,
        )
        # Written from a thread (a big Assign fills the pipe) under the lock held above: a
        # Stop written meanwhile from the loop would land in the middle of its bytes.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # _on_exit has it
            await asyncio.to_thread(messages.send, ours, assign)
        log.debug(
            "worker %d spawned as pid %s",
            slot.shard.worker,
            process.pid,
            extra=tag("worker_spawned", worker=slot.shard.worker, pid=process.pid),
        )

    def _forget_process(self, slot: Slot) -> None:
        loop = asyncio.get_running_loop()
        if slot.process is not None:
            loop.remove_reader(slot.process.sentinel)
        if slot.conn is not None:
            loop.remove_reader(slot.conn.fileno())
            slot.conn.close()
        slot.process, slot.conn = None, None
        for future in slot.replies.values():  # nobody will answer them now
            if not future.done():
                future.set_result(None)
        slot.replies.clear()

    def _on_exit(self, slot: Slot) -> None:
        process = slot.process
        if process is None:
            return
        # The sentinel stays readable until the process is forgotten: one call is enough.
        asyncio.get_running_loop().remove_reader(process.sentinel)
        self._later(self._reap(slot, process))

    async def _reap(self, slot: Slot, process: WorkerProcess) -> None:
        """Collect a worker whose sentinel closed, then restart it or stop the farm."""
        process.join(0)
        if process.exitcode is None:
            # The sentinel closes when the child's descriptors do, which can be well before
            # it can be reaped (and join then waits for the exit whatever its timeout says).
            # Never wait for that on the loop: heartbeats and the API would stall with it.
            # A child that lingers stops heartbeating and is killed by the watchdog, or by
            # stop(), so this returns.
            await asyncio.to_thread(process.join)
        if slot.process is not process:  # stop() has collected it meanwhile
            return
        code, pid = process.exitcode, process.pid
        booted = slot.state is SlotState.READY
        self._forget_process(slot)
        slot.counters.reset_open_connections()  # its connections died with it
        slot.exited.set()
        cause = f"exit code {code}" if code is not None and code >= 0 else f"signal {-(code or 0)}"
        if self.stopping:
            slot.state = SlotState.STOPPED
            exited = tag("worker_exited", worker=slot.shard.worker, pid=pid, exit_code=code)
            level = logging.DEBUG if code == 0 else logging.WARNING
            log.log(
                level, "worker %d (pid %s) exited (%s)", slot.shard.worker, pid, cause, extra=exited
            )
            self._changed()
            return
        if code == EXIT_BOOT_FAILED:
            self._fail(slot, f"worker {slot.shard.worker} could not boot ({cause})")
            return
        slot.state = SlotState.RESTARTING
        slot.restarts += 1
        log.warning(
            "worker %d (pid %s) died (%s); restarting it",
            slot.shard.worker,
            pid,
            cause,
            extra=tag("worker_restart", worker=slot.shard.worker, pid=pid, exit_code=code),
        )
        if not booted:
            slot.boot_failures += 1
            if slot.boot_failures >= self.options.max_boot_failures:
                self._fail(
                    slot,
                    f"worker {slot.shard.worker} failed to boot {slot.boot_failures} times in a "
                    f"row (last: {cause})",
                )
                return
        stable = booted and time.monotonic() - slot.ready_at > self.options.stable_after_s
        slot.crashes_in_a_row = 0 if stable else slot.crashes_in_a_row + 1
        backoff = self.options.backoff_s
        delay = backoff[min(max(slot.crashes_in_a_row - 1, 0), len(backoff) - 1)]
        self._later(self._respawn(slot, delay))
        self._changed()

    async def _respawn(self, slot: Slot, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._spawn(slot)

    def _fail(self, slot: Slot, message: str) -> None:
        slot.state = SlotState.STOPPED
        if self.fatal is None:
            self.fatal = BootError(message)
            if self.on_fatal is not None:
                self.on_fatal()
        self._changed()

    def _later(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- messages ----------------------------------------------------------------------

    def _on_message(self, slot: Slot, conn: Connection) -> None:
        try:
            message = messages.receive(conn)
        except (EOFError, OSError, messages.ProtocolError):
            # The pipe is closed or garbled: stop listening; the sentinel reports the exit.
            asyncio.get_running_loop().remove_reader(conn.fileno())
            return
        now = time.monotonic()
        if isinstance(message, Heartbeat):
            slot.heartbeat, slot.last_heartbeat = message, now
            slot.servers_up = message.servers_up  # servers stop and start through the API
            slot.stalled_at_heartbeat = self.stalled_s
            if slot.state is SlotState.STARTING:
                self._progress()
        elif isinstance(message, Ready):
            slot.state, slot.ready_at, slot.last_heartbeat = SlotState.READY, now, now
            slot.stalled_at_heartbeat = self.stalled_s
            slot.servers_up, slot.boot_failures = message.servers_up, 0
            ready = tag("worker_ready", worker=slot.shard.worker, servers=message.servers_up)
            log.debug(
                "worker %d ready: %d servers", slot.shard.worker, message.servers_up, extra=ready
            )
            self._progress()
        elif isinstance(message, Events):
            logs.worker_events(message)
            return  # nothing changed for anyone waiting on the supervisor
        elif isinstance(message, ServerFailed):
            slot.failed[message.server] = message
            failed = tag("server_failed", worker=slot.shard.worker, server=message.server)
            log.warning(
                "server %s (%s) failed: %s",
                message.server,
                message.address,
                message.reason,
                extra=failed,
            )
        elif isinstance(message, FaultsApplied):
            self.on_faults_applied(message)
        elif isinstance(message, Reply):
            future = slot.replies.pop(message.request_id, None)
            if future is not None and not future.done():
                future.set_result(message)
        self._changed()

    def _changed(self) -> None:
        self.changed.set()

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.servers_up(), self.plan.servers_total)

    async def _watch(self) -> None:
        """Kill workers that miss their boot deadline or go silent; the exit path restarts."""
        interval = min(self.options.heartbeat_interval_s, 0.5)
        while True:
            before = time.monotonic()
            await asyncio.sleep(interval)
            now = time.monotonic()
            # However late this wake-up is, the master was not listening meanwhile.
            self.stalled_s += max(0.0, now - before - interval)
            for slot in self.slots:
                if slot.pid is None or self.stopping:
                    continue
                reason = self._overdue(slot, now)
                if reason is None:
                    continue
                log.warning(
                    "worker %d (pid %d): %s; replacing it",
                    slot.shard.worker,
                    slot.pid,
                    reason,
                    extra=tag("worker_unresponsive", worker=slot.shard.worker, pid=slot.pid),
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGKILL)

    def _overdue(self, slot: Slot, now: float) -> str | None:
        """Why `slot`'s worker must be replaced now, if it must; master stalls not counted."""
        if slot.state is SlotState.STARTING:
            booting = now - slot.spawned_at - (self.stalled_s - slot.stalled_at_spawn)
            if booting > self.options.boot_timeout_s:
                return f"not ready after {self.options.boot_timeout_s:.0f} s"
        elif slot.state is SlotState.READY:
            silent = now - slot.last_heartbeat - (self.stalled_s - slot.stalled_at_heartbeat)
            if silent > self.options.heartbeat_timeout_s:
                return f"no heartbeat for {silent:.1f} s"
        return None

    # -- queries -----------------------------------------------------------------------

    def servers_up(self) -> int:
        live = (SlotState.READY, SlotState.STARTING)
        return sum(slot.servers_up for slot in self.slots if slot.state in live)

    def servers_ready(self) -> int:
        return sum(slot.servers_up for slot in self.slots if slot.state is SlotState.READY)

    def servers_stopped(self) -> int:
        """Servers stopped through the API (farm.master.switch): offline on purpose."""
        return sum(len(slot.stopped) for slot in self.slots)

    async def update_worker(self, worker_index: int, make: Callable[[], Message]) -> bool:
        """Send a worker the message `make` builds under the slot's `sending` lock, so it is
        current; False when no worker has its Assign now (the next Assign carries the news)."""
        slot = self.slots[worker_index]
        async with slot.sending:
            if slot.conn is None or slot.process is None or self.stopping:
                return False
            try:
                messages.send(slot.conn, make())
            except OSError:  # dying: the next worker gets the news with its Assign
                return False
            return True

    def ask(
        self,
        slot: Slot,
        make: Callable[[int], Message],
        socks: list[socket.socket] | tuple[()] = (),
    ) -> asyncio.Future[Reply | None]:
        """Send the message `make(request_id)` builds (and `socks`, in order) to the slot's
        worker; the future is its Reply, or None, as for `tell` (same rules)."""
        future: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()
        if slot.conn is None or slot.process is None:
            future.set_result(None)
            return future
        request_id = next(self._request_ids)
        slot.replies[request_id] = future
        try:
            messages.send(slot.conn, make(request_id))
            if socks:
                messages.send_sockets(slot.conn, list(socks))
        except OSError:  # the worker is dying; _on_exit respawns it with the new state
            slot.replies.pop(request_id, None)
            future.set_result(None)
        return future

    def tell(
        self,
        slot: Slot,
        op: str,
        servers: tuple[str, ...],
        socks: list[socket.socket] | tuple[()] = (),
    ) -> asyncio.Future[Reply | None]:
        """Send `Control(op, servers)` (and `socks`, in order, if any) to the slot's worker.

        Call with the slot's `sending` lock held, after changing what a new worker would be
        given; await the result after releasing it. The result is the worker's Reply, or None
        when no worker will answer (none is running, or it died first): the next one learns
        the servers' state from its sockets at spawn. A stuck worker is killed by the
        watchdog, so the wait is bounded by the heartbeat timeout.
        """
        return self.ask(
            slot, lambda request_id: Control(request_id=request_id, op=op, servers=servers), socks
        )
