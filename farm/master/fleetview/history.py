"""The last five minutes of every server, kept in the master for the page's small charts.

Beside the fleet view (farm.master.fleetview.pages serves it as
`GET /api/v1/servers/{name}/history`). Every `interval_s` (5 s) one task reads each shard's
shared-memory counters (farm.ipc.stats) with a few numpy column sums, as the fleet view does,
and keeps per server what happened since the last read: requests, errors (exception
responses and malformed frames) and the time its requests took. `SAMPLES` (60) of them make
five minutes. A read of 10,000 servers' counters takes about a millisecond, so it runs whether
a page is open or not: a page opened after an outage still shows it.

A sample keeps only the servers that did something in its interval (their counters indexes,
then 12 bytes each), or every server when most did: an idle server costs nothing but its last
counters (24 bytes), where a row for every server cost 7 MB at 10,000 servers after five
minutes, idle or not.

Samples are by (slot, counters index): a server keeps its counters index whoever joins or
leaves its shard (farm.config.plan); one past a sample's end had nothing then.
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
    ShardCounters,
)
from farm.master.fleetview.view import read_counters
from farm.master.http.core import server_slots
from farm.master.supervision.supervisor import Supervisor

INTERVAL_S = 5.0
SAMPLES = 60  # five minutes
DENSE_SHARE = 0.75  # a sample busier than this keeps every server (no indexes to store)
Row = npt.NDArray[np.float32]
NOTHING = np.zeros(3, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Sample:
    """One interval of one slot: per server its requests, errors and the seconds its requests
    took (`values`, (3, n)), for the counters indexes in `indexes` (sorted), or for indexes
    0..n-1 when `indexes` is None."""

    values: Row
    indexes: npt.NDArray[np.int32] | None = None

    @classmethod
    def of(cls, delta: npt.NDArray[np.int64]) -> Sample:
        """The sample of `delta` ((3, servers): requests, errors, duration in ns)."""
        exact = delta.astype(np.float64)
        exact[2] /= 1e9
        values = exact.astype(np.float32)
        busy = np.flatnonzero(delta.any(axis=0))
        if len(busy) > DENSE_SHARE * delta.shape[1]:
            return cls(values)
        return cls(np.ascontiguousarray(values[:, busy]), busy.astype(np.int32))

    def at(self, stats_index: int) -> Row:
        """(requests, errors, seconds) of one counters index; zeros if it did nothing."""
        if self.indexes is None:
            return self.values[:, stats_index] if stats_index < self.values.shape[1] else NOTHING
        place = int(np.searchsorted(self.indexes, stats_index))
        if place < len(self.indexes) and self.indexes[place] == stats_index:
            return self.values[:, place]
        return NOTHING


@dataclass(slots=True)
class ShardHistory:
    """One slot's ring of `SAMPLES` samples (None: not taken yet), and the counters as they
    were at the last read."""

    samples: list[Sample | None]
    last: npt.NDArray[np.int64]  # (3, servers): requests, errors, duration in ns

    @classmethod
    def empty(cls) -> ShardHistory:
        return cls([None] * SAMPLES, np.zeros((3, 0), dtype=np.int64))


def read_totals(counters: ShardCounters) -> npt.NDArray[np.int64]:
    """(3, servers): requests, errors and the durations' sum in ns, by counters index."""
    requests, errors = read_counters(counters)
    durations = server_slots(counters)[:, DURATION_SUM_NS]
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
        # The baseline is the counters as the farm created them (zeros): the first interval
        # also counts what was served before the history started (it starts with the API's
        # rest, which a farm loads once its servers are up: farm.master.api).
        for number, slot in enumerate(self.supervisor.slots):
            try:
                width = read_totals(slot.counters).shape[1]
            except ValueError:  # the farm is stopping and has released the segment
                continue
            self.shards[number] = ShardHistory([None] * SAMPLES, np.zeros((3, width), np.int64))
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
            shard = self.shards.setdefault(number, ShardHistory.empty())
            width = shard.last.shape[1]
            if width < now.shape[1]:  # the shard grew
                grown = now.copy()  # newcomers: nothing to compare with yet
                grown[:, :width] = shard.last
                shard.last = grown
            delta = np.maximum(now - shard.last[:, : now.shape[1]], 0)
            shard.samples[self.head] = Sample.of(delta)
            shard.last[:, : now.shape[1]] = now
        self.head = (self.head + 1) % SAMPLES
        self.filled = min(self.filled + 1, SAMPLES)

    def of(self, slot: int, stats_index: int) -> dict[str, Any]:
        """One server's samples, oldest first: requests/s, errors/s and the mean time a
        request took in each interval (None when it had no request)."""
        shard = self.shards.get(slot)
        order = [(self.head - self.filled + i) % SAMPLES for i in range(self.filled)]
        samples = [shard.samples[i] if shard is not None else None for i in order]
        rows = [NOTHING if sample is None else sample.at(stats_index) for sample in samples]
        requests = [row[0] for row in rows]
        errors = [row[1] for row in rows]
        seconds = [row[2] for row in rows]
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
    last bucket (above every bound) answers its lower bound, to 3 significant digits (an
    estimate from buckets: 0.000213, not 0.00021250000000000002). None without requests."""
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
                answers.append(float(f"{lower + (upper - lower) * (rank - seen) / count:.3g}"))
                break
            seen, lower = seen + count, upper
    return answers
