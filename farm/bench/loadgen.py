"""The load generator's engine: one process's share of `farm bench`, in one uvloop loop.

Not part of the farm's data flow: `farm bench` is a Modbus master that a test engineer
points at a farm (or at anything that speaks Modbus TCP); farm.bench.command parses the command
line, fans the load out over processes and reports. Here, one `Connection` (our own
`asyncio.Protocol`) per TCP connection writes raw MBAP frames and matches responses to
requests by transaction id, so the generator costs a few microseconds per request.

Closed loop (`rate` None): every connection keeps `depth` requests in flight, sending the
next as soon as a response arrives, like a SCADA master polling as fast as it can. Open loop:
requests are scheduled at `rate` per second whatever the answers, round-robin over the
connections, and a latency is measured from the scheduled time, so a slow server is not
hidden by a generator that waits for it; a request whose connection already has `depth` in
flight, or is down, is shed (counted, not sent).

Every run is bounded: it stops sending at `duration_s` or after `max_requests`, waits at
most `timeout_s` for what is in flight, and closes. A request unanswered after `timeout_s`
counts as a timeout and its connection is closed and reopened, as a master does.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from farm.bench.connection import Connection, Tally
from farm.bench.latency import Histogram
from farm.bench.transports import ClientTls, connection_class
from farm.modbus import mbap, rtu

TICK_S = 0.02
PROGRESS_EVERY_S = 0.25
RECONNECT_AFTER_S = 0.1


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSpec:
    """One process's share of a run."""

    targets: tuple[tuple[str, int], ...]  # one per connection
    pdus: tuple[bytes, ...]  # the request cycle (function-code mix), by transaction id
    unit: int = 1
    depth: int = 1
    rate: float | None = None  # requests/s for this process; None = closed loop
    duration_s: float = 10.0
    max_requests: int = 10_000_000
    timeout_s: float = 1.0
    connect_timeout_s: float = 5.0
    transport: str = "tcp"  # tcp, rtu-over-tcp, udp, tls (farm.bench.transports)
    tls: ClientTls | None = None
    # Per connection, a (unit, PDU) of its own instead of `unit` and `pdus`: a farm's
    # servers of different templates each read their template's first point. () = none.
    reads: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Cycle:
    """The requests one connection sends in turn, prepared: each frame after the
    transaction id (MBAP), each whole RTU frame, and the function code each answer has."""

    function_codes: list[int]
    tails: list[bytes]
    rtu_frames: list[bytes]

    @classmethod
    def of(cls, unit: int, pdus: tuple[bytes, ...]) -> Cycle:
        return cls(
            function_codes=[pdu[0] for pdu in pdus],
            tails=[mbap.tail(unit, pdu) for pdu in pdus],
            rtu_frames=[rtu.frame(unit, pdu) for pdu in pdus],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """Counts so far, for the live display."""

    sent: int
    responses: int
    exceptions: int
    timeouts: int
    errors: int
    elapsed_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadResult:
    """What one process did in its window (from the first request to the end of drain)."""

    connections: int
    connected: int
    sent: int
    responses: int
    exceptions: dict[int, int]
    timeouts: int
    connection_errors: int
    lost: int  # in flight when a connection dropped
    unexpected: int  # responses matching no request, or of the wrong function code
    shed: int
    tls_refused: int  # connections the TLS handshake refused (tally.refused_tls)
    tls_reason: str
    histogram: Histogram
    window_s: float
    cpu_s: float


class Run:
    """The state of one process's run."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.tally = Tally()
        self.budget = spec.max_requests
        self.closed_loop = spec.rate is None
        self.sending = False
        common = Cycle.of(spec.unit, spec.pdus)
        cycles = {read: Cycle.of(read[0], (read[1],)) for read in set(spec.reads)}
        self.ssl_context = (spec.tls or ClientTls()).context() if spec.transport == "tls" else None
        kind = connection_class(spec.transport)
        rng = random.Random(len(spec.targets))
        self.connections = [kind(self, target, rng.randrange(65536)) for target in spec.targets]
        for number, connection in enumerate(self.connections):
            connection.cycle = cycles[spec.reads[number]] if spec.reads else common
        self.idle = asyncio.Event()
        self.last_response = 0.0

    def on_idle(self) -> None:
        if not self.sending and not any(c.inflight for c in self.connections):
            self.idle.set()

    async def connect(self, connection: Connection) -> bool:
        try:
            await connection.open(self.spec.connect_timeout_s)
        except (OSError, TimeoutError) as error:
            self.tally.connection_errors += 1
            if isinstance(error, ssl.SSLError):
                self.tally.refused_tls(error)
            connection.close()  # made, then cut off by the timeout: nothing must use it
            connection.transport = None
            connection.down_since = time.perf_counter()
            return False
        return True

    def snapshot(self, began: float) -> Snapshot:
        t = self.tally
        return Snapshot(
            sent=t.sent,
            responses=t.responses,
            exceptions=t.exceptions_total,
            timeouts=t.timeouts,
            errors=t.connection_errors + t.lost + t.unexpected,
            elapsed_s=time.perf_counter() - began,
        )

    def expire(self, now: float) -> None:
        """Count requests older than the timeout; drop and reopen their connection."""
        limit = now - self.spec.timeout_s
        for connection in self.connections:
            if connection.inflight and next(iter(connection.inflight.values())) < limit:
                self.tally.timeouts += len(connection.inflight)
                connection.inflight.clear()
                connection.close()

    def pace(self, elapsed: float, began: float, scheduled: int, turn: int) -> tuple[int, int]:
        """Open loop: send what is due after `elapsed` s; returns (scheduled, next connection)."""
        assert self.spec.rate is not None
        elapsed = min(elapsed, self.spec.duration_s)
        due = min(int(elapsed * self.spec.rate), self.spec.max_requests) - scheduled
        batches: dict[int, list[float]] = {}
        count = len(self.connections)
        for k in range(scheduled, scheduled + due):
            start = began + k / self.spec.rate
            connection = self.connections[turn]
            pending = len(connection.inflight) + len(batches.get(turn, ()))
            if not connection.writable or pending >= self.spec.depth:
                self.tally.shed += 1
            else:
                batches.setdefault(turn, []).append(start)
            turn = (turn + 1) % count
        for index, starts in batches.items():
            self.connections[index].deliver(starts)
        return scheduled + max(due, 0), turn


async def run_load(
    spec: LoadSpec,
    on_progress: Callable[[Snapshot], None] | None = None,
    wait_for_go: Callable[[int], Awaitable[None]] | None = None,
) -> LoadResult:
    """Connect, (wait for the go), load, drain, close; always returns within its bounds."""
    run = Run(spec)
    results = await asyncio.gather(*(run.connect(c) for c in run.connections))
    if wait_for_go is not None:
        await wait_for_go(sum(results))
    cpu_before, began = time.process_time(), time.perf_counter()
    deadline = began + spec.duration_s
    run.sending = True
    if run.closed_loop:
        for connection in run.connections:
            connection.fill(began)
    scheduled, turn, next_progress, next_scan = 0, 0, began, began
    # Timeouts and reconnections are found by a scan of every connection: not at every
    # 1 ms tick of the open loop, which with 10,000 connections would be all the CPU it has.
    scan_every = min(TICK_S, spec.timeout_s / 10)
    reconnecting: set[asyncio.Task[bool]] = set()
    while True:
        now = time.perf_counter()
        if not run.closed_loop:
            scheduled, turn = run.pace(now - began, began, scheduled, turn)
        if now >= deadline or run.budget <= 0 or scheduled >= spec.max_requests:
            break
        if now >= next_scan:
            next_scan = now + scan_every
            run.expire(now)
            _reconnect_down(run, now, reconnecting)
        if on_progress is not None and now >= next_progress:
            on_progress(run.snapshot(began))
            next_progress = now + PROGRESS_EVERY_S
        await asyncio.sleep(0.001 if not run.closed_loop else TICK_S)
    stopped = time.perf_counter()
    run.sending = False
    run.on_idle()
    try:
        await asyncio.wait_for(run.idle.wait(), spec.timeout_s)
    except TimeoutError:
        run.expire(time.perf_counter() + spec.timeout_s)
    window_s = max(stopped, run.last_response) - began
    cpu_s = time.process_time() - cpu_before
    for task in reconnecting:
        task.cancel()
    await asyncio.gather(*reconnecting, return_exceptions=True)
    for connection in run.connections:
        connection.close()
    await asyncio.sleep(0)
    if on_progress is not None:
        on_progress(run.snapshot(began))
    return _result(run, sum(results), window_s, cpu_s)


def _reconnect_down(run: Run, now: float, reconnecting: set[asyncio.Task[bool]]) -> None:
    for connection in run.connections:
        if connection.transport is None and now - connection.down_since > RECONNECT_AFTER_S:
            connection.down_since = now + run.spec.connect_timeout_s  # one attempt at a time
            task = asyncio.create_task(_reconnect(run, connection))
            reconnecting.add(task)
            task.add_done_callback(reconnecting.discard)


async def _reconnect(run: Run, connection: Connection) -> bool:
    connected = await run.connect(connection)
    if connected and run.closed_loop and run.sending:
        connection.fill(time.perf_counter())
    return connected


def _result(run: Run, connected: int, window_s: float, cpu_s: float) -> LoadResult:
    t = run.tally
    return LoadResult(
        connections=len(run.connections),
        connected=connected,
        sent=t.sent,
        responses=t.responses,
        exceptions=dict(t.exceptions),
        timeouts=t.timeouts,
        connection_errors=t.connection_errors,
        lost=t.lost,
        unexpected=t.unexpected,
        shed=t.shed,
        tls_refused=t.tls_refused,
        tls_reason=t.tls_reason,
        histogram=Histogram.from_dense(t.dense, t.max_us),
        window_s=window_s,
        cpu_s=cpu_s,
    )
