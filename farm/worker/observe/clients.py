"""Who polls a server, what and how often: per client address (at most MAX_CLIENTS a server,
the least recently seen dropped and counted), its connections, requests by function code,
the exceptions it received, and for each request it repeats (unit, FC, address, count) its
poll intervals.

The engine's side is kept small (farm.worker.engine `Device.answer`): a request equal to the
one its connection sent last (a poller's usual case) costs a bytes comparison and a list
append of the read's arrival time; another one a dict lookup by (unit, first five PDU bytes)
(`Caller.seen`). Every FOLD_EVERY_S the worker folds the arrivals into intervals (`fold`):
the last WINDOW are kept for the percentiles, the largest ever, and gaps far past the usual
interval as outages (the time a client took to come back after a fault). Nothing else runs
until the master asks (`summary`). Memory: nothing for a server nobody connects to; a
polled request keeps WINDOW integers and the arrivals of the last FOLD_EVERY_S.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from itertools import pairwise
from operator import sub
from time import monotonic_ns, perf_counter_ns
from typing import TYPE_CHECKING

from farm.ipc.polling import READ_CODES, ClientSummary, Outage, PollSummary, ServerClients

if TYPE_CHECKING:
    from farm.worker.engine import Device

MAX_CLIENTS = 64
MAX_KEYS = 256  # requests a client repeats, per server; past that, counted by code only
FOLD_EVERY_S = 1.0  # how often the worker folds arrivals into intervals
WINDOW = 64  # intervals the percentiles look at
OUTAGE_FACTOR = 3  # a gap this many times the usual interval is an outage
MIN_OUTAGE_NS = 500_000_000  # and at least this long
OUTAGES = 8  # kept per request
GAPS_KEPT = 16  # a request's decreasing largest intervals (PollSummary.gaps), newest kept
CONNECTS = 16  # connection times kept per client
Key = tuple[int, bytes]  # unit id, the request's function code, address and count


class ClientStats:
    """One client address of one server."""

    __slots__ = (
        "began",
        "connected",
        "connections",
        "exceptions",
        "folded",
        "gaps",
        "host",
        "max_gap",
        "other",
        "outages",
        "polls",
        "tail",
        "told",
        "usual",
        "window",
    )

    def __init__(self, host: str) -> None:
        self.host = host
        self.connections = 0
        self.exceptions = 0
        self.connected: deque[int] = deque(maxlen=CONNECTS)
        self.polls: dict[Key, list[int]] = {}  # arrival times (perf_counter ns), oldest first
        self.folded: dict[Key, int] = {}  # arrivals folded away
        self.window: dict[Key, list[int]] = {}  # the intervals folded last
        self.max_gap: dict[Key, int] = {}
        self.outages: dict[Key, deque[tuple[int, int]]] = {}
        self.other: dict[int, int] = {}  # requests past MAX_KEYS, by function code
        self.began: dict[Key, int] = {}  # each request's first arrival
        self.usual: dict[Key, int] = {}  # the median interval at the last fold
        self.tail: dict[Key, int] = {}  # the 99th percentile at the last fold
        # Per request, when it ended and the interval, flat (no tuple a fold: less for the
        # garbage collector): each interval smaller than the one before it, so the first that
        # ended in a window is the window's largest (PollSummary.gaps).
        self.gaps: dict[Key, list[int]] = {}
        # Requests, connections and exceptions already told in a tally (farm.worker.observe.tally).
        self.told = (0, 0, 0)

    def requests(self) -> int:
        """Requests it sent this server, in all."""
        counted = sum(self.folded.values()) + sum(self.other.values())
        return counted + sum(map(len, self.polls.values()))

    def first(self, key: Key, now: int) -> list[int] | None:
        """A request not seen before from this client: its list of arrivals (None: past
        MAX_KEYS, counted by function code only)."""
        if len(self.polls) < MAX_KEYS:
            times: list[int] = []
            self.polls[key] = times
            self.began[key] = now
            return times
        code = key[1][0]
        self.other[code] = self.other.get(code, 0) + 1
        return None

    def fold_all(self) -> None:
        for key, times in self.polls.items():
            if len(times) > 1:
                self.fold(key, times)

    def fold(self, key: Key, times: list[int]) -> None:
        """Turn all but the last arrival into intervals: per request a subtraction and a
        comparison, in C; the median of the last WINDOW sorts at most WINDOW."""
        gaps = list(map(sub, times[1:], times))
        window = self.window[key] = (self.window.get(key, []) + gaps)[-WINDOW:]
        ordered = sorted(window)
        usual = self.usual.get(key) or ordered[len(ordered) // 2]
        largest = max(gaps)
        push_gaps(self.gaps.setdefault(key, []), times, gaps, largest)
        if largest > OUTAGE_FACTOR * usual and largest > MIN_OUTAGE_NS:
            outages = self.outages.setdefault(key, deque(maxlen=OUTAGES))
            for earlier, gap in zip(times, gaps, strict=False):
                if gap > OUTAGE_FACTOR * usual and gap > MIN_OUTAGE_NS:
                    outages.append((earlier, gap))
        self.usual[key] = ordered[len(ordered) // 2]
        self.tail[key] = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        if largest > self.max_gap.get(key, 0):
            self.max_gap[key] = largest
        self.folded[key] = self.folded.get(key, 0) + len(gaps)
        del times[:-1]

    def summary(self, to_monotonic: int) -> ClientSummary:
        self.fold_all()
        requests: dict[int, int] = dict(self.other)
        polls = []
        for key, times in self.polls.items():
            if not times:
                continue
            unit, pdu = key
            code = pdu[0]
            count = self.folded.get(key, 0) + len(times)
            requests[code] = requests.get(code, 0) + count
            if code in READ_CODES and len(pdu) >= 5:
                polls.append(self._poll(key, unit, pdu, times, count, to_monotonic))
        return ClientSummary(
            host=self.host,
            connections=self.connections,
            exceptions=self.exceptions,
            requests=requests,
            polls=tuple(polls),
            connected=tuple((at + to_monotonic) / 1e9 for at in self.connected),
        )

    def _poll(
        self, key: Key, unit: int, pdu: bytes, times: list[int], count: int, shift: int
    ) -> PollSummary:
        recent = [later - earlier for earlier, later in pairwise(times)]
        intervals = (self.window.get(key, []) + recent)[-WINDOW:]
        ordered = sorted(intervals)
        outages = list(self.outages.get(key, ()))
        usual = ordered[len(ordered) // 2] if ordered else 0
        for earlier, gap in zip(times, recent, strict=False):
            if gap > OUTAGE_FACTOR * usual and gap > MIN_OUTAGE_NS:
                outages.append((earlier, gap))
        first = self.began.get(key, times[0])
        gaps = list(self.gaps.get(key, ()))
        for later, gap in zip(times[1:], recent, strict=False):  # exact: a summary is rare
            push_gap(gaps, later, gap)
        return PollSummary(
            unit=unit,
            function_code=pdu[0],
            address=(pdu[1] << 8) | pdu[2],
            count=(pdu[3] << 8) | pdu[4],
            requests=count,
            first_seen=(first + shift) / 1e9,
            last_seen=(times[-1] + shift) / 1e9,
            last_s=intervals[-1] / 1e9 if intervals else 0.0,
            p50_s=_quantile(ordered, 0.5),
            p99_s=_quantile(ordered, 0.99),
            max_gap_s=max(self.max_gap.get(key, 0), *recent, 0) / 1e9,
            rate=len(ordered) * 1e9 / sum(ordered) if ordered and sum(ordered) else 0.0,
            outages=tuple(
                Outage(began=(began + shift) / 1e9, ended=(began + gap + shift) / 1e9)
                for began, gap in outages
            ),
            gaps=tuple(
                ((ended + shift) / 1e9, gap / 1e9)
                for ended, gap in zip(gaps[::2], gaps[1::2], strict=True)
            ),
        )


def push_gaps(kept: list[int], times: list[int], gaps: list[int], largest: int) -> None:
    """Add a fold's intervals `gaps` (between `times`) to a request's decreasing largest
    ones (ClientStats.gaps): its largest and its last, each having pushed out the older ones
    not larger. Two pushes a fold, not one an interval (a fold is once a second): an
    interval between those two and smaller than the last is not kept, so a window that
    begins within a second after a fold's largest may miss its largest by that second."""
    at = gaps.index(largest)
    push_gap(kept, times[at + 1], largest)
    if at + 1 < len(gaps):
        push_gap(kept, times[-1], gaps[-1])


def push_gap(kept: list[int], ended: int, gap: int) -> None:
    while kept and kept[-1] <= gap:
        del kept[-2:]
    kept += (ended, gap)
    if len(kept) > 2 * GAPS_KEPT:
        del kept[:2]


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

    def fold(self) -> None:
        for client in self.clients.values():
            client.fold_all()

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
        for device in list(devices.values()):
            if device.clients is not None:
                device.clients.fold()


def summaries(devices: Mapping[int, Device]) -> tuple[ServerClients, ...]:
    """What the clients of every server that has had one did (the answer to CLIENTS)."""
    return tuple(
        device.clients.summary(device.name)
        for device in devices.values()
        if device.clients is not None
    )
