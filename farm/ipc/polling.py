"""What a worker says about the clients of its servers when the master asks (a `Control`
of op `CLIENTS`, answered by a `Reply` carrying `ServerClients`): plain frozen dataclasses
that the pipe's MessagePack encodes field by field (farm.ipc.messages).

Times are seconds on the host's monotonic clock (CLOCK_MONOTONIC, one per host), so the
master can set them against its own (a fault's end, "now").
"""

from __future__ import annotations

from dataclasses import dataclass

READ_CODES = (1, 2, 3, 4, 23)  # what a poll is: a read repeated (23's reading half)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outage:
    """A gap in a client's polls of one request, well past its usual interval."""

    began: float  # the last poll before it
    ended: float  # the first poll after it


@dataclass(frozen=True, slots=True, kw_only=True)
class PollSummary:
    """One request a client repeats: (unit, function code, address, count)."""

    unit: int
    function_code: int
    address: int
    count: int
    requests: int
    first_seen: float
    last_seen: float
    last_s: float  # the last interval (0: polled once)
    p50_s: float  # over the last WINDOW intervals
    p99_s: float
    max_gap_s: float  # the largest interval ever
    rate: float  # polls per second, over the last intervals
    outages: tuple[Outage, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSummary:
    """One client (by address: its reconnections are the same client) of one server."""

    host: str
    connections: int
    exceptions: int  # exception answers it received
    requests: dict[int, int]  # by function code
    polls: tuple[PollSummary, ...]
    connected: tuple[float, ...] = ()  # when its last connections were made


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerClients:
    server: str
    clients: tuple[ClientSummary, ...]
    dropped: int = 0  # clients forgotten to keep at most MAX_CLIENTS
