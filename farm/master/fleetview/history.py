"""The last five minutes of every server, kept in the master for the page's small charts.

Beside the fleet view (farm.master.fleetview.pages serves it as
`GET /api/v1/servers/{name}/history`). Every `interval_s` (5 s) one task reads each shard's
shared-memory counters (farm.ipc.stats) with a few numpy column sums, as the fleet view does,
and keeps per server what happened since the last read: requests, errors (exception
responses and malformed frames) and the time its requests took. `SAMPLES` (60) of them make
five minutes; memory is 12 bytes per server per sample (7 MB at 10,000 servers), and a read of
10,000 servers' counters takes about a millisecond, so it runs whether a page is open or not:
a page opened after an outage still shows it.

Rows are by (slot, counters index): a server keeps its counters index whoever joins or
leaves its shard (farm.config.plan), and a shard that grows gets wider rows, zeros before.
Counters live in memory the master owns, so a worker's restart does not reset them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from farm.ipc.stats import (
    DURATION,
    DURATION_BOUNDS_S,
    DURATION_SUM_NS,
    HEADER_SLOTS,
    SERVER_SLOTS,
    ShardCounters,
)
from farm.master.fleetview.view import read_counters
from farm.master.supervision.supervisor import Supervisor

INTERVAL_S = 5.0
SAMPLES = 60  # five minutes
Row = npt.NDArray[np.float32]


@dataclass(slots=True)
class ShardHistory:
    """One slot's ring of samples: `requests`, `errors`, `seconds` (the time requests took),
    each (SAMPLES, servers), and the counters as they were at the last read."""

    requests: Row
    errors: Row
    seconds: Row
    last: npt.NDArray[np.int64]  # (3, servers): requests, errors, duration in ns

    @classmethod
    def empty(cls, servers: int) -> ShardHistory:
        def ring() -> Row:
            return np.zeros((SAMPLES, servers), dtype=np.float32)

        return cls(ring(), ring(), ring(), np.zeros((3, servers), dtype=np.int64))

    def widened(self, servers: int) -> ShardHistory:
        grown = ShardHistory.empty(servers)
        width = self.requests.shape[1]
        grown.requests[:, :width] = self.requests
        grown.errors[:, :width] = self.errors
        grown.seconds[:, :width] = self.seconds
        grown.last[:, :width] = self.last
        return grown


def read_totals(counters: ShardCounters) -> npt.NDArray[np.int64]:
    """(3, servers): requests, errors and the durations' sum in ns, by counters index."""
    requests, errors = read_counters(counters)
    n = counters.servers
    slots = np.frombuffer(counters.slots, dtype=np.uint64, count=HEADER_SLOTS + n * SERVER_SLOTS)
    durations = slots[HEADER_SLOTS:].reshape(n, SERVER_SLOTS)[:, DURATION_SUM_NS]
    return np.stack([requests, errors, durations.astype(np.int64)])


class History:
    """Five minutes of every server of a supervisor's farm, one sample every `interval_s`."""

    def __init__(
        self,
        supervisor: Supervisor,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.supervisor = supervisor
        self.interval_s = interval_s
        self.clock = clock
        self.shards: dict[int, ShardHistory] = {}
        self.head = 0  # the ring's next row
        self.filled = 0  # rows written so far, up to SAMPLES
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.sample()  # the baseline: the first interval's differences start here
        self.filled = 0
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        next_at = self.clock()
        while True:
            next_at += self.interval_s
            await asyncio.sleep(max(0.0, next_at - self.clock()))
            self.sample()

    def sample(self) -> None:
        """Read every shard's counters; what changed since the last read is the new row."""
        for number, slot in enumerate(self.supervisor.slots):
            try:
                now = read_totals(slot.counters)
            except ValueError:  # the farm is stopping and has released the segment
                continue
            shard = self.shards.get(number)
            if shard is None or shard.last.shape[1] < now.shape[1]:
                width = 0 if shard is None else shard.last.shape[1]
                shard = (shard or ShardHistory.empty(0)).widened(now.shape[1])
                shard.last[:, width:] = now[:, width:]  # newcomers: nothing to compare with yet
                self.shards[number] = shard
            delta = np.maximum(now - shard.last[:, : now.shape[1]], 0)
            shard.requests[self.head, : now.shape[1]] = delta[0]
            shard.errors[self.head, : now.shape[1]] = delta[1]
            shard.seconds[self.head, : now.shape[1]] = delta[2] / 1e9
            shard.last[:, : now.shape[1]] = now
        self.head = (self.head + 1) % SAMPLES
        self.filled = min(self.filled + 1, SAMPLES)

    def of(self, slot: int, stats_index: int) -> dict[str, Any]:
        """One server's samples, oldest first: requests/s, errors/s and the mean time a
        request took in each interval (None when it had no request)."""
        shard = self.shards.get(slot)
        order = [(self.head - self.filled + i) % SAMPLES for i in range(self.filled)]
        if shard is None or stats_index >= shard.requests.shape[1]:
            requests = errors = seconds = np.zeros(len(order), dtype=np.float32)
        else:
            requests = shard.requests[order, stats_index]
            errors = shard.errors[order, stats_index]
            seconds = shard.seconds[order, stats_index]
        per_s = 1.0 / self.interval_s
        return {
            "interval_s": self.interval_s,
            "requests_per_s": [round(float(n) * per_s, 2) for n in requests],
            "errors_per_s": [round(float(n) * per_s, 2) for n in errors],
            "latency_s": [
                round(float(s) / float(n), 6) if n else None
                for n, s in zip(requests, seconds, strict=True)
            ],
        }


def percentiles(values: list[int], quantiles: tuple[float, ...]) -> list[float | None]:
    """Quantiles of a server's duration histogram (farm.ipc.stats: DURATION slots, not
    cumulative), as Prometheus's histogram_quantile reads them: linear within a bucket; the
    last bucket (above every bound) answers its lower bound. None without requests."""
    counts = values[DURATION : DURATION + len(DURATION_BOUNDS_S) + 1]
    total = sum(counts)
    answers: list[float | None] = []
    for quantile in quantiles:
        if not total:
            answers.append(None)
            continue
        rank, seen, lower = quantile * total, 0, 0.0
        for index, count in enumerate(counts):
            if index == len(DURATION_BOUNDS_S):
                answers.append(lower)
                break
            upper = DURATION_BOUNDS_S[index]
            if seen + count >= rank and count:
                answers.append(lower + (upper - lower) * (rank - seen) / count)
                break
            seen, lower = seen + count, upper
    return answers
