"""Who polls a server, what and how often: per client address (at most MAX_CLIENTS a server,
the least recently seen dropped and counted), its connections, requests by function code,
the exceptions it received, and for each request it repeats (unit, FC, address, count) its
poll intervals.

The engine's side is kept small (farm.worker.engine `Device.answer`): a request equal to the
one its connection sent last (a poller's usual case) costs a bytes comparison and a list
append of the read's arrival time; another one a dict lookup by (unit, first five PDU bytes)
(`Caller.seen`). Every FOLD_EVERY_S the worker folds the arrivals into intervals (each
request's `Poll`, farm.worker.observe.polls; a request once FOLD_AT arrivals wait, or the
oldest is FOLD_AGE_NS old): the last WINDOW are kept for the percentiles,
the largest ever, and gaps far past the usual interval as outages (the time a client took
to come back after a fault). Nothing else runs until the master asks (`summary`, `tally`).
Memory: nothing for a server nobody connects to; a polled request keeps WINDOW integers and
its arrivals not folded yet (fewer than FOLD_AT, or those of the last FOLD_AGE_NS).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from itertools import pairwise
from time import monotonic_ns, perf_counter_ns
from typing import TYPE_CHECKING

from farm.ipc.polling import READ_CODES, ClientSummary, Outage, PollSummary, ServerClients
from farm.worker.observe.polls import MIN_OUTAGE_NS, OUTAGE_FACTOR, WINDOW, Poll, push_gap

if TYPE_CHECKING:
    from farm.worker.engine import Device

MAX_CLIENTS = 64
MAX_KEYS = 256  # requests a client repeats, per server; past that, counted by code only
FOLD_EVERY_S = 1.0  # how often the worker looks for arrivals to fold into intervals
# A request is folded once it has FOLD_AT arrivals, or its oldest is FOLD_AGE_NS old: a slow
# poller's few arrivals a second are folded together every few seconds, not one at a time
# (a fold costs about the same for 1 arrival as for 8).
FOLD_AT = 8
FOLD_AGE_NS = 5_000_000_000
CONNECTS = 16  # connection times kept per client
Key = tuple[int, bytes]  # unit id, the request's function code, address and count


class ClientStats:
    """One client address of one server."""

    __slots__ = (
        "connected",
        "connections",
        "exceptions",
        "host",
        "other",
        "polls",
        "state",
        "told",
    )

    def __init__(self, host: str) -> None:
        self.host = host
        self.connections = 0
        self.exceptions = 0
        self.connected: deque[int] = deque(maxlen=CONNECTS)
        self.polls: dict[Key, list[int]] = {}  # arrival times (perf_counter ns), oldest first
        self.state: dict[Key, Poll] = {}  # each request's intervals (farm.worker.observe.polls)
        self.other: dict[int, int] = {}  # requests past MAX_KEYS, by function code
        # Requests, connections and exceptions already told in a tally (farm.worker.observe.tally).
        self.told = (0, 0, 0)

    def requests(self) -> int:
        """Requests it sent this server, in all."""
        counted = sum(poll.folded for poll in self.state.values()) + sum(self.other.values())
        return counted + sum(map(len, self.polls.values()))

    def first(self, key: Key, now: int) -> list[int] | None:
        """A request not seen before from this client: its list of arrivals (None: past
        MAX_KEYS, counted by function code only)."""
        if len(self.polls) < MAX_KEYS:
            times: list[int] = []
            self.polls[key] = times
            self.state[key] = Poll(now)
            return times
        code = key[1][0]
        self.other[code] = self.other.get(code, 0) + 1
        return None

    def fold_all(self, before: int | None = None) -> None:
        """Fold every request's arrivals; with `before` (perf_counter ns), only those with
        FOLD_AT arrivals, or whose oldest came before it."""
        state = self.state
        for key, times in self.polls.items():
            if len(times) > 1 and (before is None or len(times) >= FOLD_AT or times[0] < before):
                state[key].fold(times)

    def summary(self, to_monotonic: int) -> ClientSummary:
        self.fold_all()
        requests: dict[int, int] = dict(self.other)
        polls = []
        for key, times in self.polls.items():
            if not times:
                continue
            unit, pdu = key
            code = pdu[0]
            state = self.state[key]
            count = state.folded + len(times)
            requests[code] = requests.get(code, 0) + count
            if code in READ_CODES and len(pdu) >= 5:
                polls.append(_poll(state, unit, pdu, times, count, to_monotonic))
        return ClientSummary(
            host=self.host,
            connections=self.connections,
            exceptions=self.exceptions,
            requests=requests,
            polls=tuple(polls),
            connected=tuple((at + to_monotonic) / 1e9 for at in self.connected),
        )


def _poll(
    state: Poll, unit: int, pdu: bytes, times: list[int], count: int, shift: int
) -> PollSummary:
    recent = [later - earlier for earlier, later in pairwise(times)]
    intervals = (state.window + recent)[-WINDOW:]
    ordered = sorted(intervals)
    outages = list(state.outages or ())
    usual = ordered[len(ordered) // 2] if ordered else 0
    for earlier, gap in zip(times, recent, strict=False):
        if gap > OUTAGE_FACTOR * usual and gap > MIN_OUTAGE_NS:
            outages.append((earlier, gap))
    gaps = list(state.gaps)
    for later, gap in zip(times[1:], recent, strict=False):  # exact: a summary is rare
        push_gap(gaps, later, gap)
    return PollSummary(
        unit=unit,
        function_code=pdu[0],
        address=(pdu[1] << 8) | pdu[2],
        count=(pdu[3] << 8) | pdu[4],
        requests=count,
        first_seen=(state.began + shift) / 1e9,
        last_seen=(times[-1] + shift) / 1e9,
        last_s=intervals[-1] / 1e9 if intervals else 0.0,
        p50_s=_quantile(ordered, 0.5),
        p99_s=_quantile(ordered, 0.99),
        max_gap_s=max(state.max_gap, *recent, 0) / 1e9,
        rate=len(ordered) * 1e9 / sum(ordered) if ordered and sum(ordered) else 0.0,
        outages=tuple(
            Outage(began=(began + shift) / 1e9, ended=(began + gap + shift) / 1e9)
            for began, gap in outages
        ),
        gaps=tuple(
            value / 1e9
            for ended, gap in zip(gaps[::2], gaps[1::2], strict=True)
            for value in (ended + shift, gap)
        ),
    )


def _quantile(ordered: list[int], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e9


class ClientBook:
    """The clients of one server, made when the first one connects."""

    __slots__ = ("clients", "dropped")

    def __init__(self) -> None:
        self.clients: dict[str, ClientStats] = {}
        self.dropped = 0

    def connected(self, host: str) -> ClientStats:
        """A connection (or a new UDP sender) from `host`."""
        client = self.clients.get(host)
        if client is None:
            if len(self.clients) >= MAX_CLIENTS:
                self._drop_one()
            client = self.clients[host] = ClientStats(host)
        client.connections += 1
        client.connected.append(perf_counter_ns())
        return client

    def _drop_one(self) -> None:
        def last_seen(client: ClientStats) -> int:
            seen = [times[-1] for times in client.polls.values()]
            return max([*seen, *client.connected, 0])

        oldest = min(self.clients.values(), key=last_seen)
        del self.clients[oldest.host]
        self.dropped += 1

    def fold(self, before: int | None = None) -> None:
        for client in self.clients.values():
            client.fold_all(before)

    def summary(self, server: str) -> ServerClients:
        # perf_counter is CLOCK_MONOTONIC on Linux; the shift keeps this right elsewhere too.
        to_monotonic = monotonic_ns() - perf_counter_ns()
        return ServerClients(
            server=server,
            clients=tuple(c.summary(to_monotonic) for c in self.clients.values()),
            dropped=self.dropped,
        )


async def fold_every(devices: Mapping[int, Device]) -> None:
    """The worker's task: fold every client's arrivals into intervals, every FOLD_EVERY_S."""
    while True:
        await asyncio.sleep(FOLD_EVERY_S)
        before = perf_counter_ns() - FOLD_AGE_NS
        for device in list(devices.values()):
            if device.clients is not None:
                device.clients.fold(before)


def summaries(devices: Mapping[int, Device]) -> tuple[ServerClients, ...]:
    """What the clients of every server that has had one did (the answer to CLIENTS)."""
    return tuple(
        device.clients.summary(device.name)
        for device in devices.values()
        if device.clients is not None
    )
