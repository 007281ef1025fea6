"""A slot: one shard of the plan and the worker process hosting it now.

Sits under farm.master.supervision.supervisor, which alone spawns, replaces and stops a slot's
worker
and moves it between states. The rest of the master reads slots: their shard, banks and
counters (inventory, metrics, fleetview, switch, scale) and their worker's heartbeat.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from farm.config.plan import Shard
from farm.ipc.banks import Segment
from farm.ipc.channel import Channel
from farm.ipc.journal import ShardJournal
from farm.ipc.messages import Connection, Heartbeat, Reply, ServerFailed
from farm.ipc.stats import ShardCounters


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


@dataclass(eq=False)
class Slot:
    """One shard and the worker process currently hosting it."""

    shard: Shard
    segment: Segment
    counters: ShardCounters
    journal: ShardJournal  # every server's writes (farm.ipc.journal), read when asked
    # Server index -> the master's copy of its listening socket; a server stopped through
    # the API (farm.master.fleet.switch) has none, and a worker spawned meanwhile does not serve it.
    sockets: dict[int, socket.socket]
    # Server index -> a bound, non-listening socket keeping a stopped server's port
    # (farm.master.supervision.listeners.reserve); never handed to a worker.
    reserved: dict[int, socket.socket] = field(default_factory=dict)
    state: SlotState = SlotState.STARTING
    process: WorkerProcess | None = None
    conn: Connection | None = None
    channel: Channel | None = None  # the pipe on the master's loop (`conn` owns the pipe)
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
    last_failure: str | None = None  # why its last worker was replaced, as `farm status` says
    replaced_pid: int | None = None  # the worker the watchdog killed last (last_failure: why)
    stopped: set[str] = field(default_factory=set)  # names of servers stopped through the API
    replies: dict[int, asyncio.Future[Reply | None]] = field(default_factory=dict)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    sending: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def pid(self) -> int | None:
        # None while Process.start is still running in its thread, too.
        pid = None if self.process is None else self.process.pid
        return None if pid is None else int(pid)
