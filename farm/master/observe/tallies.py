"""Per client address, for /metrics: what the workers tally (farm.worker.observe.tally),
asked every REFRESH_S from a task on the master's loop and kept here, so that a scrape reads
a finished summary (`series`) and asks no worker.

Bounded: the first MAX_NAMED addresses seen have series of their own; every other address
is summed into the client "other" (a scan from thousands of source addresses adds nothing
to the page). An address that sent nothing for FORGET_S gives its place up. The counters are
sums of what each tally says happened since the previous one, kept here: a worker's restart
or a client forgotten in a worker resets nothing, and a client's counts never go back.

Nothing waits on a worker: each answer is taken when it comes (a late one too); a worker
still silent from the previous round is not asked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from farm.ipc.messages import TALLY, Control, Reply
from farm.ipc.polling import ClientTally, bucket_seconds
from farm.master.supervision.slot import SlotState
from farm.master.supervision.supervisor import Supervisor

MAX_NAMED = 32
OTHER = "other"
REFRESH_S = 5.0
FORGET_S = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSeries:
    """One client's samples on /metrics."""

    client: str  # its address, or OTHER
    requests: int
    connections: int
    exceptions: int
    servers: int  # it polls now
    stale: int  # it polled, and stopped polling
    p50_s: float | None  # the median of its polls' median intervals (None: no interval yet)
    p99_s: float | None  # the 99th percentile of its polls' 99th percentiles


@dataclass
class _Now:
    servers: int = 0
    stale: int = 0
    p50: dict[int, int] = field(default_factory=dict)
    p99: dict[int, int] = field(default_factory=dict)


class ClientTallies:
    """Asks the workers of `supervisor` for their tallies; `series` is what they add up to."""

    def __init__(
        self,
        supervisor: Supervisor,
        refresh_s: float = REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.supervisor = supervisor
        self.refresh_s = refresh_s
        self.clock = clock
        self.named: dict[str, float] = {}  # address -> when it last sent a request
        self.totals: dict[str, list[int]] = {}  # client -> requests, connections, exceptions
        self.latest: dict[int, tuple[ClientTally, ...]] = {}  # worker -> its last tally
        self.waiting: set[int] = set()  # workers asked and not answered yet
        # Replaced whole, never changed: the scrape reads it from its own thread.
        self.series: tuple[ClientSeries, ...] = ()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            self.ask()

    def ask(self) -> None:
        """Ask every ready worker that is not still answering the previous round."""
        ready = set()
        for slot in self.supervisor.slots:
            if slot.state is not SlotState.READY:
                continue
            worker = slot.shard.worker
            ready.add(worker)
            if worker in self.waiting:
                continue
            self.waiting.add(worker)
            future = self.supervisor.ask(
                slot, lambda request_id: Control(request_id=request_id, op=TALLY, servers=())
            )
            future.add_done_callback(partial(self._answered, worker))
        for worker in [each for each in self.latest if each not in ready]:
            del self.latest[worker]  # being replaced: its successor's first tally shows them
        self._forget()
        self._publish()

    def _answered(self, worker: int, future: asyncio.Future[Reply | None]) -> None:
        self.waiting.discard(worker)
        if future.cancelled() or future.exception() is not None:
            return
        reply = future.result()
        if isinstance(reply, Reply) and reply.ok:
            self.take(worker, reply.tallies)

    def take(self, worker: int, tallies: tuple[ClientTally, ...]) -> None:
        """A worker's tally: its counts added, its view of now kept."""
        now = self.clock()
        for each in tallies:
            counts = self.totals.setdefault(self._name(each, now), [0, 0, 0])
            counts[0] += each.requests
            counts[1] += each.connections
            counts[2] += each.exceptions
        self.latest[worker] = tallies
        self._publish()

    def _name(self, tally: ClientTally, now: float) -> str:
        """The client label of an address: its own while it is one of the first MAX_NAMED."""
        host = tally.host
        if host in self.named:
            if tally.requests:
                self.named[host] = now
            return host
        if host and len(self.named) < MAX_NAMED and (tally.requests or tally.servers):
            self.named[host] = now
            return host
        return OTHER

    def _forget(self) -> None:
        now = self.clock()
        for host, seen in list(self.named.items()):
            if now - seen > FORGET_S:
                del self.named[host]
                self.totals.pop(host, None)

    def _publish(self) -> None:
        current: dict[str, _Now] = {}
        for tallies in self.latest.values():
            for each in tallies:
                label = each.host if each.host in self.named else OTHER
                now = current.setdefault(label, _Now())
                now.servers += each.servers
                now.stale += each.stale
                _merge(now.p50, each.p50)
                _merge(now.p99, each.p99)
        series = []
        for label in sorted({*self.totals, *current}):
            counts = self.totals.get(label, [0, 0, 0])
            now = current.get(label, _Now())
            series.append(
                ClientSeries(
                    client=label,
                    requests=counts[0],
                    connections=counts[1],
                    exceptions=counts[2],
                    servers=now.servers,
                    stale=now.stale,
                    p50_s=quantile(now.p50, 0.5),
                    p99_s=quantile(now.p99, 0.99),
                )
            )
        self.series = tuple(series)


def _merge(into: dict[int, int], counts: dict[int, int]) -> None:
    for bucket, count in counts.items():
        into[bucket] = into.get(bucket, 0) + count


def quantile(histogram: dict[int, int], q: float) -> float | None:
    """The `q` quantile of an interval histogram (farm.ipc.polling.interval_bucket), ranked
    as farm.master.observe.clients ranks its percentiles; None when it is empty."""
    total = sum(histogram.values())
    if not total:
        return None
    rank = min(total - 1, int(q * total))
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen > rank:
            return round(bucket_seconds(bucket), 6)
    return None  # not reached: the ranks end at total - 1
