"""What a worker says about the clients of its servers when the master asks (a `Control`
of op `CLIENTS`, answered by a `Reply` carrying `ServerClients`; of op `TALLY`, answered by
`ClientTally`s for /metrics): plain frozen dataclasses that the pipe's MessagePack encodes
field by field (farm.ipc.messages).

Times are seconds on the host's monotonic clock (CLOCK_MONOTONIC, one per host), so the
master can set them against its own (a fault's end, "now").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

READ_CODES = (1, 2, 3, 4, 23)  # what a poll is: a read repeated (23's reading half)
STALE_INTERVALS = 3  # a poll not seen for this many of its usual intervals has stopped
# An interval histogram's bucket i holds the intervals in (GROWTH**(i-1), GROWTH**i] seconds:
# buckets ~4.4 % wide, so that the workers' histograms add up and a quantile read from the
# sum is within ~2.2 % of the interval (farm.master.observe.tallies).
GROWTH = 2 ** (1 / 16)
SHORTEST_S = 1e-6


def interval_bucket(seconds: float) -> int:
    return math.ceil(math.log(max(seconds, SHORTEST_S), GROWTH))


def bucket_seconds(index: int) -> float:
    """The middle of bucket `index` (geometric: the bounds are powers of GROWTH)."""
    return float(GROWTH ** (index - 0.5))


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
    # Pairs, flat (ten times faster through the pipe than a tuple of pairs): when an interval
    # ended, the interval; each later one smaller, so the largest in any recent window is the
    # first that ended in it (`largest_since`). The oldest dropped past GAPS_KEPT.
    gaps: tuple[float, ...] = ()

    def largest_since(self, start: float) -> float:
        """The largest interval that ended at or after `start` (0: none)."""
        ends = self.gaps[::2]
        return next((self.gaps[2 * i + 1] for i, ended in enumerate(ends) if ended >= start), 0.0)


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


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientTally:
    """One client address over a worker's servers, for /metrics (a `Control` of op TALLY):
    what it did since the worker's previous tally, and how it polls now."""

    host: str  # "": the worker's clients past MAX_TALLIED (farm.worker.observe.tally), summed
    requests: int  # since the previous tally
    connections: int  # since the previous tally
    exceptions: int  # exception answers sent to it, since the previous tally
    servers: int  # that it polls (a read not stale: farm.master.observe.clients.is_stale)
    stale: int  # that it polled and stopped polling (every read of theirs stale)
    p50: dict[int, int]  # interval bucket -> its live polls whose median interval is there
    p99: dict[int, int]  # the same for each poll's 99th percentile
