"""The supervisor: starts, watches, restarts and stops the worker processes.

Sits after the plan in the data flow (plan -> supervisor -> worker). The only part of the
master that starts or kills processes, with its helpers: slot (one shard and its worker),
processes (making a worker, forgetting one, the stop sequence) and watchdog (deadlines,
backoff). Runs in the master's asyncio loop and never polls: each worker's process sentinel
and pipe are watched with `loop.add_reader`, so a death or a message arrives as an event. A
watchdog task checks deadlines only: a worker that has not said `Ready` within
`boot_timeout_s`, or whose heartbeats stop for `heartbeat_timeout_s` (its loop is stuck, or
it was SIGSTOPped), is killed and replaced; time the master itself was stalled is not
charged to the workers (farm.master.supervision.watchdog says how).

Each slot (one shard) is restarted with a backoff that grows with consecutive crashes;
a slot that fails to boot `max_boot_failures` times in a row, or a worker that exits with
`EXIT_BOOT_FAILED`, stops the farm with a `BootError` naming the slot and the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import multiprocess

from farm.config.plan import Plan
from farm.errors import BootError
from farm.ipc import messages
from farm.ipc.banks import Segment
from farm.ipc.channel import Channel, PipeFull
from farm.ipc.journal import DEFAULT_WRITES, ShardJournal
from farm.ipc.messages import (
    ActiveFaults,
    Control,
    Events,
    FaultsApplied,
    Listeners,
    Message,
    Ready,
    Reply,
)
from farm.ipc.spawn import WORKER_ENTRY
from farm.ipc.stats import ShardCounters
from farm.master import logs
from farm.master.logs import tag
from farm.master.supervision import processes, warm, watchdog, workerpipe
from farm.master.supervision.slot import Slot, SlotState, WorkerProcess

log = logging.getLogger("farm")


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
    journal_writes: int = DEFAULT_WRITES  # client writes each server's journal keeps


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
                journal=ShardJournal.create(shard.stats_size, options.journal_writes),
                sockets={s.index: sockets[s.index] for s in shard.servers},
            )
            for shard in plan.shards
        ]
        self.initialized = False  # the banks hold their starting values (`initialize`)
        self._initializing: asyncio.Future[None] | None = None
        self.stopping = False
        self.stalled_s = 0.0  # how long the master's own loop was late, in all
        self.fatal: BootError | None = None
        self.changed = asyncio.Event()  # set on every state change; start() waits on it
        self.on_progress: Callable[[int, int], None] | None = None
        self.on_fatal: Callable[[], None] | None = None
        # The faults each worker must apply now (farm.master.faults.table sets both): sent within
        # every Assign, so a restarted worker applies them again.
        self.active_faults: Callable[[int], ActiveFaults] = lambda worker: ()
        self.on_faults_applied: Callable[[FaultsApplied], None] = lambda message: None
        self.on_worker_ready: Callable[[int], None] = lambda worker: None  # Assign applied
        self._request_ids = itertools.count(1)
        self._watchdog: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------

    def initialize(self) -> None:
        """Write every bank's starting values, once (a restarted worker keeps the bank's):
        before a state file restores them, else before the first Assign (`_banks_ready`)."""
        if self.initialized:
            return
        # Here, not at the top: numpy loads while the workers boot (`_banks_ready`).
        from farm.config.behaviours import initialize_shard

        for slot in self.slots:
            initialize_shard(slot.segment.buf, slot.shard, self.plan.templates)
            slot.segment.remap()
        self.initialized = True

    async def _banks_ready(self) -> None:
        """`initialize`, in a thread and once for all slots: the first workers' processes
        start meanwhile (the better part of their boot is loading their modules)."""
        if self._initializing is None:
            self._initializing = asyncio.ensure_future(asyncio.to_thread(self.initialize))
        await asyncio.shield(self._initializing)

    async def start(self) -> None:
        """Spawn every worker and wait until all are ready; raises BootError."""
        self._watchdog = asyncio.create_task(watchdog.watch(self))
        spawns = [asyncio.create_task(self._spawn(slot)) for slot in self.slots]
        self._tasks.update(spawns)
        # Shielded: a stop that cancels start() must not cut a spawn off halfway (a process
        # started in a thread, its sentinel never watched); each spawn sees `stopping` and
        # ends its worker itself.
        await asyncio.shield(asyncio.gather(*spawns))
        for unused in warm.discard():  # more were started than the plan has shards
            await asyncio.to_thread(unused.process.join, 5.0)
        while not all(slot.state is SlotState.READY for slot in self.slots):
            if self.fatal is not None:
                raise self.fatal
            self.changed.clear()
            await self.changed.wait()

    async def stop(self) -> None:
        """Ask every worker to stop, kill what is left after the grace period, free all."""
        self.stopping = True
        await processes.stop_workers(self.slots, self.options.stop_grace_s)
        for task in (self._watchdog, *self._tasks):
            if task is not None:
                task.cancel()
        for slot in self.slots:
            for sock in (*slot.sockets.values(), *slot.reserved.values()):
                sock.close()
            slot.segment.close()
            slot.counters.close()
            slot.journal.close()

    # -- spawning and exits ------------------------------------------------------------

    async def _spawn(self, slot: Slot) -> None:
        # The lock is held from the choice of sockets until Assign is written: a server
        # stopped or started meanwhile (farm.master.fleet.switch) is then told to the worker after
        # its Assign, never before, and never lost between the two.
        async with slot.sending:
            await self._spawn_locked(slot)

    async def _spawn_locked(self, slot: Slot) -> None:
        if self.stopping:
            return
        loop = asyncio.get_running_loop()
        # A worker `farm up` started before it planned (farm.master.supervision.warm), if one
        # is left: booted or nearly, it gets its sockets over the pipe after its Assign.
        booted = warm.take() if self.entry == WORKER_ENTRY else None
        if booted is not None:
            process, ours, theirs = booted.process, booted.ours, None
        else:
            process, ours, theirs = processes.new_process(self.context, self.entry, slot)
        slot.state, slot.process, slot.conn = SlotState.STARTING, process, ours
        slot.servers_up, slot.heartbeat, slot.failed = 0, None, {}
        slot.exited = asyncio.Event()
        slot.spawned_at, slot.stalled_at_spawn = time.monotonic(), self.stalled_s
        if theirs is not None:
            # Process.start writes the pickled process object to the child: off the loop, it
            # blocks.
            await asyncio.to_thread(process.start)
            theirs.close()
        try:
            await self._banks_ready()
        except BaseException:  # nothing would ever watch or end this process
            process.kill()
            await asyncio.to_thread(process.join, 2.0)
            raise
        if self.stopping:  # stop() began meanwhile: this worker has nothing to finish
            process.kill()
            await asyncio.to_thread(process.join, 2.0)
            slot.exited.set()
            return
        loop.add_reader(process.sentinel, self._on_exit, slot)
        slot.channel = Channel(
            loop,
            ours,
            lambda message, socks: self._on_message(slot, message, socks),
            lambda why: self._on_pipe_closed(slot, why),
        )
        assign = processes.assignment(
            slot,
            self.plan,
            heartbeat_interval_s=self.options.heartbeat_interval_s,
            origin=self.origin,
            faults=self.active_faults(slot.shard.worker),  # read under the lock: current
            log_level=self.options.log_level,
        )
        # Queued whole on the non-blocking pipe: whatever follows it (a Stop) follows it.
        with contextlib.suppress(OSError, PipeFull):  # the pipe's end says why
            slot.channel.send(assign)
            if theirs is None:  # a warm worker: its sockets next
                indices = tuple(slot.sockets)
                slot.channel.send(Listeners(indices=indices), [slot.sockets[i] for i in indices])
        log.debug(
            "worker %d spawned as pid %s",
            slot.shard.worker,
            process.pid,
            extra=tag("worker_spawned", worker=slot.shard.worker, pid=process.pid),
        )

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
        processes.forget_process(slot)
        slot.counters.reset_open_connections()  # its connections died with it
        slot.exited.set()
        if self.stopping:
            slot.state = SlotState.STOPPED
            exited = tag("worker_exited", worker=slot.shard.worker, pid=pid, exit_code=code)
            level = logging.DEBUG if code == 0 else logging.WARNING
            cause = watchdog.death_cause(code)
            log.log(
                level, "worker %d (pid %s) exited (%s)", slot.shard.worker, pid, cause, extra=exited
            )
            self._changed()
            return
        restart = watchdog.after_death(slot, pid, code, booted, self.options)
        if restart.failure is not None:
            self._fail(slot, restart.failure)
            return
        self._later(self._respawn(slot, restart.delay_s))
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

    def _on_pipe_closed(self, slot: Slot, why: BaseException | None) -> None:
        """The pipe ended. At end of file, or broken (the worker died), the sentinel reports
        the exit; a garbled or full pipe is the worker's failure: it is replaced, and
        `farm status` says why."""
        if self.stopping or slot.pid is None:
            return
        if isinstance(why, messages.ProtocolError):
            reason = f"pipe protocol error ({type(why).__name__}): {why}"
        elif isinstance(why, PipeFull):
            reason = f"it stopped reading its pipe: {why}"
        else:
            return
        watchdog.replace(slot, slot.pid, reason)

    def _on_message(self, slot: Slot, message: Message, socks: list[socket.socket]) -> None:
        for sock in socks:  # a worker passes the master none
            sock.close()
        if isinstance(message, Events):
            logs.worker_events(message)
            return  # nothing changed for anyone waiting on the supervisor
        if isinstance(message, FaultsApplied):
            self.on_faults_applied(message)
        elif isinstance(message, Ready):
            workerpipe.record(slot, message, time.monotonic(), self.stalled_s)
            self.on_worker_ready(slot.shard.worker)
            self._progress()
        elif workerpipe.record(slot, message, time.monotonic(), self.stalled_s):
            self._progress()
        self._changed()

    def _changed(self) -> None:
        self.changed.set()

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.servers_up(), self.plan.servers_total)

    # -- queries -----------------------------------------------------------------------

    def servers_up(self) -> int:
        live = (SlotState.READY, SlotState.STARTING)
        return sum(slot.servers_up for slot in self.slots if slot.state in live)

    def servers_ready(self) -> int:
        return sum(slot.servers_up for slot in self.slots if slot.state is SlotState.READY)

    def servers_stopped(self) -> int:
        """Servers stopped through the API (farm.master.fleet.switch): offline on purpose."""
        return sum(len(slot.stopped) for slot in self.slots)

    def update_worker(self, worker_index: int, message: Message) -> bool:
        """Queue `message` for a worker, after its Assign; False when no worker has its
        Assign now (the next Assign carries the news). Never blocks: a worker that stops
        reading is replaced (`_on_pipe_closed`)."""
        slot = self.slots[worker_index]
        if slot.channel is None or slot.process is None or self.stopping:
            return False
        try:
            slot.channel.send(message)
        except (OSError, PipeFull):  # dying: the next worker gets the news with its Assign
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
        return workerpipe.ask(slot, self._request_ids, make, socks)

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
