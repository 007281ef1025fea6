"""Connection limits and timeouts: what keeps careless or hostile clients from knocking a
worker over.

Sits between a worker's servers and their connections (... worker -> limits -> connection).
Each server has a `ServerConnections` (its `ConnectionLimits` from the template, its open
connections oldest first); the worker has one `WorkerConnections` (every connection, the
worker-wide cap, the timer wheel, the event log).

- **Per device**: past `max` open connections a newcomer is refused (accepted and closed at
  once), or the oldest connection is closed to make room (`close_oldest`).
- **Per worker**: `cap` keeps the worker's connections inside its open-files limit, with room
  left for its listening sockets and its own files, so a flood to one device can never take
  away the descriptors other devices need to accept (an `accept` that fails with EMFILE stops
  a whole listener for a second).
- **Timeouts**, on one timer wheel per worker (farm.worker.limits.wheel). Idle: nothing received
  for `idle_timeout_s`. Frame: a frame begun and not finished for `frame_timeout_s` (a
  slowloris sending a byte at a time is not idle, but it never finishes a frame). A
  connection paused by backpressure is neither: its peer sends, we do not read.

Every close is counted by reason (farm.ipc.stats CLOSED + i) and said in the farm's log,
throttled per server (farm.worker.events).
"""

from __future__ import annotations

import asyncio
import logging

from farm.config.templates import ConnectionLimits, ConnectionPolicy
from farm.ipc.stats import (
    CLOSE_REASONS,
    CLOSED,
    CLOSED_FRAME_TIMEOUT,
    CLOSED_IDLE,
    CLOSED_MALFORMED,
    CLOSED_MAX_CONNECTIONS,
    CLOSED_OLDEST,
    CLOSED_WORKER_LIMIT,
)
from farm.worker.events import EventLog
from farm.worker.limits.wheel import NOT_SCHEDULED, Connection, TimerWheel


def _peer(connection: Connection) -> str:
    """The peer's "host:port", looked up once, when something needs to name it."""
    if not connection.peer and connection.transport is not None:
        peer = connection.transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            host, port = peer[0], peer[1]
            connection.peer = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return connection.peer or "?"


class WorkerConnections:
    """Every connection of a worker, its cap, its timer wheel and its event log.

    At the cap, a device holding less than its fair share (the cap over the worker's
    servers) still gets in: the device holding the most gives up its oldest connection. So a
    flood, even to a device with no `max` of its own, never locks the others out.
    """

    def __init__(
        self, cap: int, events: EventLog, servers: int = 1, wheel: TimerWheel | None = None
    ) -> None:
        self.cap = cap
        self.fair_share = max(1, cap // max(1, servers))
        self.events = events
        self.wheel = wheel or TimerWheel()
        self.wheel.on_due = self._due
        self.live: set[Connection] = set()
        self.guards: dict[Connection, ServerConnections] = {}
        self.servers: list[ServerConnections] = []  # those that have had a connection

    def resize(self, cap: int, servers: int) -> None:
        """A new cap, for a shard of `servers` servers now (connections over it stay)."""
        self.cap = cap
        self.fair_share = max(1, cap // max(1, servers))

    def forget(self, names: set[str]) -> None:
        """These servers left the shard: close their connections and drop their books."""
        self.close_all(servers=names)
        self.servers = [server for server in self.servers if server.name not in names]

    def make_room(self) -> bool:
        """Close the oldest connection of the device that holds the most; False if none."""
        heaviest = max(self.servers, key=lambda server: len(server.open), default=None)
        if heaviest is None or not heaviest.open:
            return False
        heaviest.close(next(iter(heaviest.open)), CLOSED_WORKER_LIMIT, "to make room")
        return True

    def __len__(self) -> int:
        return len(self.live)

    def close_all(self, abort: bool = False, servers: set[str] | None = None) -> None:
        """Close every connection (`abort`: without a goodbye), or every one of `servers`."""
        if servers is None:
            connections = list(self.live)
        else:
            connections = [c for s in self.servers if s.name in servers for c in s.open]
        for connection in connections:
            if connection.transport is not None:
                if abort:
                    connection.transport.abort()
                else:
                    connection.transport.close()

    def _due(self, connection: Connection, now: int) -> None:
        guard = self.guards.get(connection)
        if guard is not None:
            guard.expire(connection, now)


class ServerConnections:
    """One server's connections and limits; the connection calls admit/release/malformed."""

    __slots__ = ("counters", "frame_ticks", "idle_ticks", "limits", "name", "open", "worker")

    def __init__(
        self, name: str, limits: ConnectionLimits, counters: memoryview, worker: WorkerConnections
    ) -> None:
        self.name = name
        self.limits = limits
        self.counters = counters
        self.worker = worker
        self.idle_ticks = worker.wheel.ticks(limits.idle_timeout_s)
        self.frame_ticks = worker.wheel.ticks(limits.frame_timeout_s)
        self.open: dict[Connection, None] = {}  # insertion order: oldest first
        worker.servers.append(self)

    @property
    def clock(self) -> TimerWheel:
        return self.worker.wheel

    def admit(self, connection: Connection) -> bool:
        """A new connection: keep it (True), or refuse it (closed, counted, False)."""
        worker = self.worker
        events = worker.events
        if events.debug:
            events.emit(
                logging.DEBUG,
                "connection_opened",
                f"connection from {_peer(connection)}",
                self.name,
            )
        if len(worker.live) >= worker.cap and (
            len(self.open) >= worker.fair_share or not worker.make_room()
        ):
            why = f"the worker holds {worker.cap}, this device {len(self.open)}"
            self._refuse(connection, CLOSED_WORKER_LIMIT, why)
            return False
        if len(self.open) >= self.limits.max:
            if self.limits.policy is ConnectionPolicy.REFUSE:
                self._refuse(connection, CLOSED_MAX_CONNECTIONS, f"{self.limits.max} already open")
                return False
            self.close(next(iter(self.open)), CLOSED_OLDEST, "to make room for a newer one")
        self.open[connection] = None
        worker.live.add(connection)
        worker.guards[connection] = self
        wheel = worker.wheel
        connection.seen = wheel.now
        if self.idle_ticks:
            wheel.schedule(connection, wheel.now + self.idle_ticks + 1)
        return True

    def release(self, connection: Connection) -> None:
        """The connection is gone (connection_lost)."""
        worker = self.worker
        self.open.pop(connection, None)
        worker.live.discard(connection)
        worker.guards.pop(connection, None)
        if worker.events.debug:
            worker.events.emit(
                logging.DEBUG,
                "connection_closed",
                f"connection from {connection.peer} closed",
                self.name,
            )

    def frame_started(self, connection: Connection) -> None:
        """The connection holds the start of a frame, not finished yet."""
        wheel = self.worker.wheel
        connection.partial_at = wheel.now
        if self.frame_ticks:
            wheel.schedule(connection, wheel.now + self.frame_ticks + 1)

    def malformed(self, connection: Connection, detail: str) -> None:
        """The connection closes itself; count it and say so (throttled)."""
        self.counters[CLOSED_MALFORMED] += 1
        peer = _peer(connection)
        self.worker.events.throttled(
            logging.WARNING,
            "malformed_frame",
            f"malformed frame from {peer} ({detail}); connection closed",
            self.name,
            peer=peer,
            detail=detail,
        )

    def expire(self, connection: Connection, now: int) -> None:
        """The wheel's call: close the connection if a deadline has passed, else refile it."""
        if connection.transport is None or connection not in self.open:
            return  # gone, or being closed already
        if connection.paused or connection.held:
            # Not idle and not stuck: its peer is sending and we are not reading (it does
            # not read our answers, or a fault holds them). Backpressure bounds what it
            # costs; look again later.
            later = max(self.idle_ticks, self.frame_ticks, 1)
            self.worker.wheel.schedule(connection, now + later)
            return
        upcoming = 0
        if self.idle_ticks:
            idle_due = connection.seen + self.idle_ticks + 1
            if now >= idle_due:
                why = f"nothing received for {self.limits.idle_timeout_s:g} s"
                self.close(connection, CLOSED_IDLE, why)
                return
            upcoming = idle_due
        if self.frame_ticks and connection.partial_at != NOT_SCHEDULED:
            frame_due = connection.partial_at + self.frame_ticks + 1
            if now >= frame_due:
                seconds = self.limits.frame_timeout_s
                self.close(
                    connection, CLOSED_FRAME_TIMEOUT, f"a frame unfinished after {seconds:g} s"
                )
                return
            upcoming = min(upcoming, frame_due) if upcoming else frame_due
        if upcoming:
            self.worker.wheel.schedule(connection, upcoming)

    def close(self, connection: Connection, reason: int, why: str) -> None:
        """Close a connection the farm no longer wants: counted, said, and gone at once."""
        self.open.pop(connection, None)
        self.worker.live.discard(connection)
        self.counters[reason] += 1
        transport = connection.transport
        peer = _peer(connection)
        name = CLOSE_REASONS[reason - CLOSED]
        self.worker.events.throttled(
            logging.INFO if reason == CLOSED_OLDEST else logging.WARNING,
            name,
            f"closed the connection from {peer}: {why}",
            self.name,
            peer=peer,
        )
        if transport is not None:
            _close(transport)

    def _refuse(self, connection: Connection, reason: int, why: str) -> None:
        self.counters[reason] += 1
        transport = connection.transport
        peer = _peer(connection)
        self.worker.events.throttled(
            logging.WARNING,
            "connection_limit",
            f"refused a connection from {peer}: {why}",
            self.name,
            peer=peer,
            reason=CLOSE_REASONS[reason - CLOSED],
        )
        if transport is not None:
            _close(transport)


def _close(transport: asyncio.Transport) -> None:
    """Close at once: with answers still unsent (a peer that does not read), a graceful close
    would wait for them forever and keep the descriptor."""
    if transport.get_write_buffer_size():
        transport.abort()
    else:
        transport.close()


def unlimited(name: str, counters: memoryview, events: EventLog | None = None) -> ServerConnections:
    """A server with no limits and a wheel that never ticks (tests, benchmarks in process)."""
    limits = ConnectionLimits(max=1 << 30, idle_timeout_s=0, frame_timeout_s=0)
    events = events or EventLog(worker=0, send=lambda message: None)
    return ServerConnections(name, limits, counters, WorkerConnections(1 << 30, events))
