"""A worker process: one uvloop loop hosting the servers of one shard.

Sits after the supervisor in the data flow (... supervisor -> worker -> engine -> banks).
The master spawns `run` with the shard's listening sockets (bound by the master, so a port
stays open while a worker is replaced) and one end of a duplex pipe; the shard itself
arrives as `Assign` on that pipe. The worker attaches the shard's bank segment, starts a
server per socket, says `Ready`, and then sends a `Heartbeat` from a task in its loop until
it is told to `Stop` or its pipe reaches end-of-file (the master is gone).

A server that fails to start is reported (`ServerFailed`) and the others carry on. A server
whose socket the master did not pass is stopped (farm.master.fleet.switch): its values still move,
and `Control(START_SERVER)` brings it back with a fresh socket (many servers in one message,
as an offline fault on a fleet needs); starting and stopping servers is
farm.worker.switch's, servers joining and leaving farm.worker.membership's. Signals belong to
the master: a worker ignores SIGINT, SIGHUP and SIGTERM (Ctrl-C, a closed terminal and a
service manager reach the whole process group) and is stopped through its pipe, which it
reads and writes without blocking its loop (farm.ipc.channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import uvloop

from farm import collector
from farm.config.faults.rules import FaultRule
from farm.config.plan import ServerSpec
from farm.config.templates import DeviceTemplate
from farm.ipc import messages
from farm.ipc.banks import (
    ReadOnlyMasks,
    Segment,
    read_only_masks,
    server_banks,
    server_diagnostics,
    server_files,
)
from farm.ipc.channel import Channel, PipeFull
from farm.ipc.journal import ShardJournal
from farm.ipc.messages import (
    AddServers,
    Assign,
    Connection,
    Control,
    Faults,
    FaultsApplied,
    Heartbeat,
    Listeners,
    Ready,
    RemoveServers,
    Reply,
    Stop,
)
from farm.ipc.spawn import EXIT_BOOT_FAILED, EXIT_PIPE_ERROR, FILES_RESERVED, connection_cap
from farm.ipc.stats import ShardCounters
from farm.openfiles import raise_open_files_limit, reserve_descriptors
from farm.worker import membership, switch
from farm.worker.engine import Device
from farm.worker.events import EventLog
from farm.worker.faults.book import FaultBook
from farm.worker.limits.guard import ServerConnections, WorkerConnections
from farm.worker.observe import clients, tally, trace
from farm.worker.observe.trace import Tracer
from farm.worker.transports.serving import Listener, Transports

if TYPE_CHECKING:  # a type alone: the ticker loads numpy, after the boot (`_tick`)
    from farm.worker.ticker import Ticker

ASSIGN_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 2.0
_PAGE = os.sysconf("SC_PAGE_SIZE")


def run(conn: Connection, sockets: dict[int, socket.socket] | None) -> None:
    """Process entry point (spawned by the supervisor). `sockets` None: a warm worker
    (farm.master.supervision.warm, forked), started before its shard was known; its listening
    sockets come over the pipe after its Assign (`Listeners`), and it waits for both as long
    as the master lives."""
    # The master stops its workers through their pipes, all at once, after draining: a
    # signal to the whole process group (Ctrl-C, a closed terminal, systemd's or
    # `kill -- -PGID`'s SIGTERM) must not end them first, nor look like a crash to restart.
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    raise_open_files_limit()
    if not conn.poll(None if sockets is None else ASSIGN_TIMEOUT_S):
        sys.exit(EXIT_BOOT_FAILED)
    try:
        assign = messages.receive(conn)
        if sockets is None and isinstance(assign, Assign):
            listeners = messages.receive(conn)
            if not isinstance(listeners, Listeners):
                raise messages.Garbled("no Listeners after the Assign of a warm worker")
            given = messages.receive_sockets(conn, len(listeners.indices))
            sockets = dict(zip(listeners.indices, given, strict=True))
    except (EOFError, OSError):
        sys.exit(EXIT_BOOT_FAILED)  # the master went away before Assign
    except messages.ProtocolError as exc:  # a master of another version, say: tell why
        print(f"farm worker: cannot read its Assign ({type(exc).__name__}): {exc}", file=sys.stderr)
        sys.exit(EXIT_BOOT_FAILED)
    if not isinstance(assign, Assign) or sockets is None:
        sys.exit(EXIT_BOOT_FAILED)  # a Stop that came before any Assign
    _name_process(f"farm-worker-{assign.worker}")
    # Room for a client connection to every server, while this process has one thread: its
    # loop then accepts them without the kernel stopping it to grow the table (an RCU grace
    # period each time the table doubles, once the ticker's thread runs: farm.openfiles).
    reserve_descriptors(2 * len(sockets) + FILES_RESERVED)
    worker = Worker(conn=conn, assign=assign, sockets=sockets)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(worker.serve())
    code = EXIT_PIPE_ERROR if worker.pipe_error else 0
    # Bank views into the shared segment are alive until the very end; letting the
    # interpreter finalize SharedMemory with them exported prints a BufferError per worker.
    # Nothing is left to flush but the standard streams.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _name_process(name: str) -> None:
    """The name `top`, `ps -e` and `pgrep` show (/proc/self/comm, 15 bytes at most): a
    worker's command line is its master's (forked) or multiprocess's (spawned), its name
    was "python"."""
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write(name[:15])


def _new_ticker(
    buf: memoryview, origin: float, servers: list[tuple[ServerSpec, DeviceTemplate]]
) -> Ticker:
    from farm.worker.ticker import ticker_over  # numpy: see Worker._tick

    return ticker_over(buf, origin, servers)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


@dataclass
class Worker:
    conn: Connection
    assign: Assign
    sockets: dict[int, socket.socket]
    # A server's number is its counters index (ServerSpec.stats_index): it never changes
    # while the server is in the shard, whoever joins or leaves (farm.worker.membership).
    specs: dict[int, ServerSpec] = field(default_factory=dict)  # by number
    servers: dict[int, Listener] = field(default_factory=dict)  # by number
    numbers: dict[str, int] = field(default_factory=dict)  # server name -> number
    stopped: set[int] = field(default_factory=set)  # told STOP_SERVER since (by number)
    connections: WorkerConnections | None = None
    events: EventLog | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    orphaned: bool = False  # the master is gone: stop at once
    loop_lag_s: float = 0.0
    segment: Segment | None = None
    counters: ShardCounters | None = None
    journal: ShardJournal | None = None  # None: the master keeps no journal (an old Assign)
    masks: dict[str, ReadOnlyMasks] = field(default_factory=dict)  # per template
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    devices: dict[int, Device] = field(default_factory=dict)  # built, by number
    traces: dict[int, Tracer] = field(default_factory=dict)  # servers traced now, by number
    faults: FaultBook = field(default_factory=FaultBook)
    transports: Transports | None = None
    ticker: Ticker | None = None
    channel: Channel = field(init=False)  # the pipe on the loop, from serve() on
    active: dict[int, tuple[FaultRule, tuple[int, ...]]] = field(default_factory=dict)  # by id
    pipe_error: bool = False  # the master's pipe was garbled: exit EXIT_PIPE_ERROR

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        # Kept on self: if it were collected when serve() returns, SharedMemory.__del__
        # would try to unmap memory that the banks still view.
        try:
            self.segment = Segment.attach(self.assign.segment)
            self.counters = ShardCounters.attach(self.assign.stats_segment)
            if self.assign.journal_segment:
                self.journal = ShardJournal.attach(
                    self.assign.journal_segment, self.assign.journal_writes
                )
        except OSError as exc:
            # Nothing a restart can fix: say why in one line and exit "could not boot".
            print(
                f"farm worker {self.assign.worker}: cannot attach its shared memory: {exc}",
                file=sys.stderr,
            )
            raise SystemExit(EXIT_BOOT_FAILED) from exc
        # A predecessor's open connections died with it: the master zeroed their gauges when
        # it reaped it, before spawning this worker. Not again here: that would touch every
        # page of the counters (680 bytes a server), which an idle server never does.
        self.specs = {spec.stats_index: spec for spec in self.assign.servers}
        self.numbers = {spec.name: spec.stats_index for spec in self.assign.servers}
        self.faults.template_of = self._template
        self.active = {rule.id: (rule, positions) for rule, positions in self.assign.faults}
        self.faults.replace(self.assign.faults, self.devices.get)
        self.channel = Channel(loop, self.conn, self._on_pipe, self._on_pipe_closed)
        self.events = events = EventLog(self.assign.worker, self.send, self.assign.log_level)
        self.connections = connections = self._connections(events)
        connections.wheel.start(loop)
        heartbeat = asyncio.create_task(self._heartbeats())
        failed = await switch.start_all(self)
        self.send(Ready(worker=self.assign.worker, servers_up=len(self.servers), failed=failed))
        collector.resume()  # a warm worker was forked with it paused (farm.collector)
        ticking = asyncio.create_task(self._tick())
        folding = asyncio.create_task(clients.fold_every(self.devices))
        await self.stopping.wait()
        await self._shutdown()
        connections.wheel.stop()
        for task in (heartbeat, ticking, folding):
            task.cancel()
        await asyncio.gather(heartbeat, ticking, folding, return_exceptions=True)
        if not self.orphaned:
            events.close()
            await self._flush()
        self.channel.close()

    def _connections(self, events: EventLog) -> WorkerConnections:
        """The worker's connections, capped to fit its open-files limit; says so in the log."""
        open_files = raise_open_files_limit()  # raised at start already: this reads it
        cap = connection_cap(open_files, len(self.specs))
        events.emit(
            logging.INFO,
            "worker_started",
            f"started (pid {os.getpid()}): "
            f"{len(self.assign.servers)} servers, room for {cap} connections",
            pid=os.getpid(),
            servers=len(self.assign.servers),
            connection_cap=cap,
            open_files=open_files or "unlimited",
        )
        return WorkerConnections(cap, events, servers=len(self.specs))

    def recap(self) -> None:
        """The shard grew or shrank: the connections' cap follows its listening sockets."""
        if self.connections is not None:
            cap = connection_cap(raise_open_files_limit(), len(self.specs))
            self.connections.resize(cap, len(self.specs))

    def guard(self, number: int, device: Device) -> ServerConnections:
        """The limits of the shard's `number`-th server, over its device's counters."""
        assert self.connections is not None
        spec = self.specs[number]
        limits = self.assign.templates[spec.template].connections
        return ServerConnections(spec.name, limits, device.counters, self.connections)

    def device(self, number: int) -> Device:
        """The device of server `number`, with views on its banks and counters."""
        assert self.segment is not None
        spec = self.specs[number]
        template = self.assign.templates[spec.template]
        if spec.template not in self.masks:
            self.masks[spec.template] = read_only_masks(template)
        buf = self.segment.buf
        banks = server_banks(buf, spec, template, self.masks[spec.template])
        counters = self.counters.server(spec.stats_index) if self.counters else None
        earlier = self.devices.get(number)  # the same server before a stop and start
        device = self.devices[number] = Device(
            spec.name,
            banks,
            template.identity,
            counters,
            block=server_diagnostics(buf, spec, template),
            files=server_files(buf, spec, template),
            fifos=[(fifo.unit_id, fifo.address) for fifo in template.fifos],
            exception_status_coil=template.exception_status_coil,
        )
        if self.journal is not None:
            device.keep_journal(self.journal.server(spec.stats_index))
        if earlier is not None:
            device.clients = earlier.clients  # its clients' history outlives an outage
        if number in self.traces:
            trace.start(device, self.traces[number])
        self.faults.attach(device, number)
        return device

    def count_tls_role(self, role: str | None) -> None:
        if self.counters is not None:
            self.counters.count_role(role)

    def _template(self, number: int) -> DeviceTemplate | None:
        spec = self.specs.get(number)
        return None if spec is None else self.assign.templates.get(spec.template)

    def tick_list(self) -> list[tuple[ServerSpec, DeviceTemplate]]:
        """Every server of the shard with its template, as the ticker moves them."""
        return [(spec, self.assign.templates[spec.template]) for spec in self.specs.values()]

    async def _tick(self) -> None:
        if self.ticker is None:
            # Made after Ready, in a thread (numpy is a quarter of a worker's imports): the
            # servers answer meanwhile, from the starting values the master wrote.
            assert self.segment is not None
            args = (self.segment.buf, self.assign.origin, self.tick_list())
            ticker = await asyncio.to_thread(_new_ticker, *args)
            if self.ticker is None:  # else servers joined or left meanwhile: a newer one
                self.ticker = ticker
        while True:
            # Read each time: servers joining or leaving replace it (farm.worker.membership).
            assert self.ticker is not None
            due = self.ticker.tick(time.monotonic())
            if due == float("inf"):
                return  # no live points
            await asyncio.sleep(max(0.01, due - time.monotonic()))

    async def _heartbeats(self) -> None:
        interval = self.assign.heartbeat_interval_s
        while True:
            if self.counters is not None:
                self.counters.record_cpu()
            self.send(
                Heartbeat(
                    worker=self.assign.worker,
                    servers_up=len(self.servers),
                    loop_lag_s=self.loop_lag_s,
                    cpu_s=time.process_time(),
                    rss_bytes=rss_bytes(),
                    connections=len(self.connections or ()),
                )
            )
            before = time.monotonic()
            await asyncio.sleep(interval)
            self.loop_lag_s = max(0.0, time.monotonic() - before - interval)

    def _on_pipe(self, message: messages.Message, socks: list[socket.socket]) -> None:
        if isinstance(message, Stop):
            self.stopping.set()
        elif isinstance(message, Control) and message.op == messages.START_SERVER:
            self._later(switch.start(self, message, socks))
        elif isinstance(message, Control) and message.op == messages.STOP_SERVER:
            switch.stop(self, message)
        elif isinstance(message, AddServers):
            self._later(membership.add(self, message, socks))
        elif isinstance(message, RemoveServers):
            membership.remove(self, message)
        elif isinstance(message, Faults):
            for fault_id in message.removed:
                self.active.pop(fault_id, None)
            self.active.update((rule.id, (rule, positions)) for rule, positions in message.added)
            self.faults.replace(tuple(self.active.values()), self.devices.get)
            self.send(FaultsApplied(worker=self.assign.worker, seq=message.seq))
        elif isinstance(message, Control) and message.op == messages.TRACE_START:
            self.send(trace.begin(message, self.numbers, self.devices, self.traces))
        elif isinstance(message, Control) and message.op == messages.TRACE_STOP:
            self.send(trace.end(message, self.numbers, self.devices, self.traces))
        elif isinstance(message, Control) and message.op == messages.TALLY:
            self._later(tally.answer(message.request_id, self.devices, self.send))
        elif isinstance(message, Control) and message.op == messages.CLIENTS:
            self.send(
                Reply(
                    request_id=message.request_id, ok=True, clients=clients.summaries(self.devices)
                )
            )
        elif isinstance(message, Control):
            self.reply(message, error=f"unknown op {message.op!r}")
        else:
            for sock in socks:
                sock.close()

    def _on_pipe_closed(self, why: BaseException | None) -> None:
        """The master is gone (end of file), or its pipe is garbled or broken: nothing to
        obey. A garbled pipe is said on stderr and in the exit code, never a quiet exit 0."""
        if isinstance(why, messages.ProtocolError):
            print(
                f"farm worker {self.assign.worker}: the master's pipe is garbled "
                f"({type(why).__name__}): {why}",
                file=sys.stderr,
            )
            self.pipe_error = True
        self.orphaned = True
        self.stopping.set()

    async def _flush(self) -> None:
        """Let the last messages (the stop's events) reach the master, briefly."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while self.channel.queued_bytes and not self.channel.closed:
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.01)

    def _later(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def reply(self, message: Control, error: str = "") -> None:
        self.send(
            Reply(
                request_id=message.request_id,
                ok=not error,
                result=len(self.servers),
                error=error,
            )
        )

    def keep(self, number: int, server: Listener) -> None:
        if number in self.stopped:  # a STOP came while the server was being created
            server.close()
        else:
            self.servers[number] = server

    def send(self, message: messages.Message) -> None:
        try:
            self.channel.send(message)
        except (OSError, PipeFull):  # the master is gone, or stopped reading for good
            self.orphaned = True
            self.stopping.set()

    async def _shutdown(self) -> None:
        """Stop accepting, let written responses drain, close every connection.

        With the master gone nobody waits for the drain: every connection is cut at once,
        so the worker exits (and its ports are free) within moments.
        """
        for server in self.servers.values():
            server.close()
        if self.connections is None:
            return
        self.connections.close_all(abort=self.orphaned)
        deadline = time.monotonic() + (0.2 if self.orphaned else DRAIN_TIMEOUT_S)
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
