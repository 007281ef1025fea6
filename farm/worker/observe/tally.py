"""Per client address, over all of a worker's servers, for the master's /metrics (the answer
to a `Control` of op TALLY, every few seconds: farm.master.observe.tallies): the requests,
connections and exceptions since the previous tally, the servers it polls and those it
stopped polling, and histograms of its polls' intervals (farm.ipc.polling.interval_bucket).

Nothing on the request path: a tally reads what farm.worker.observe.clients keeps anyway
(each poll's median and 99th percentile as last sorted: farm.worker.observe.polls), one
pass over the clients of every server that has had one. At most MAX_TALLIED addresses a
tally, the busiest; the others are summed into the address "" (a scan from many addresses
stays a few numbers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import TYPE_CHECKING

from farm.ipc.messages import Reply
from farm.ipc.polling import READ_CODES, STALE_INTERVALS, ClientTally, interval_bucket
from farm.worker.observe.clients import ClientStats

if TYPE_CHECKING:
    from farm.worker.engine import Device

MAX_TALLIED = 256
CHUNK = 500  # servers between two turns of the loop
SHORTEST_NS = 1_000_000  # as farm.master.observe.clients.is_stale: an interval of 1 ms at least


@dataclass
class _Sum:
    requests: int = 0
    connections: int = 0
    exceptions: int = 0
    servers: int = 0
    stale: int = 0
    p50: dict[int, int] = field(default_factory=dict)
    p99: dict[int, int] = field(default_factory=dict)

    def add(self, other: _Sum) -> None:
        self.requests += other.requests
        self.connections += other.connections
        self.exceptions += other.exceptions
        self.servers += other.servers
        self.stale += other.stale
        for mine, theirs in ((self.p50, other.p50), (self.p99, other.p99)):
            for bucket, count in theirs.items():
                mine[bucket] = mine.get(bucket, 0) + count

    def tally(self, host: str) -> ClientTally:
        return ClientTally(
            host=host,
            requests=self.requests,
            connections=self.connections,
            exceptions=self.exceptions,
            servers=self.servers,
            stale=self.stale,
            p50=self.p50,
            p99=self.p99,
        )


async def answer(
    request_id: int, devices: Mapping[int, Device], send: Callable[[Reply], None]
) -> None:
    """Answer the master's TALLY."""
    send(Reply(request_id=request_id, ok=True, tallies=await tally(devices)))


async def tally(devices: Mapping[int, Device]) -> tuple[ClientTally, ...]:
    """Every client address of the worker's servers, since the previous tally; the loop
    answers requests between every CHUNK servers (a tally of 10,000 polled servers takes
    tens of ms)."""
    now = perf_counter_ns()
    hosts: dict[str, _Sum] = {}
    for number, device in enumerate(list(devices.values())):
        if number % CHUNK == CHUNK - 1:
            await asyncio.sleep(0)
        if device.clients is None:
            continue
        for client in device.clients.clients.values():
            total = hosts.get(client.host)
            if total is None:
                total = hosts[client.host] = _Sum()
            _one(client, total, now)
    busiest = sorted(hosts.items(), key=lambda item: -item[1].requests)
    kept = [total.tally(host) for host, total in busiest[:MAX_TALLIED]]
    if len(busiest) > MAX_TALLIED:
        rest = _Sum()
        for _, total in busiest[MAX_TALLIED:]:
            rest.add(total)
        kept.append(rest.tally(""))
    return tuple(kept)


def _one(client: ClientStats, total: _Sum, now: int) -> None:
    """What one client did on one server, added to its address's `total`."""
    told = (client.requests(), client.connections, client.exceptions)
    total.requests += told[0] - client.told[0]
    total.connections += told[1] - client.told[1]
    total.exceptions += told[2] - client.told[2]
    client.told = told
    live = stale = False
    for key, times in client.polls.items():
        if not times or key[1][0] not in READ_CODES or len(key[1]) < 5:
            continue
        poll = client.state[key]
        if not poll.usual and len(times) > 1:
            poll.fold(times)  # a new poll, not folded yet (it waits for FOLD_AT arrivals)
        usual = poll.usual
        if not usual:  # read once: polled, no interval yet
            live = True
        elif now - times[-1] > STALE_INTERVALS * max(usual, SHORTEST_NS):
            stale = True
        else:
            live = True
            bucket = interval_bucket(usual / 1e9)
            total.p50[bucket] = total.p50.get(bucket, 0) + 1
            bucket = interval_bucket(poll.tail / 1e9)
            total.p99[bucket] = total.p99.get(bucket, 0) + 1
    total.servers += live
    total.stale += stale and not live
