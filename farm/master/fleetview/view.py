"""The fleet view's live stream: every server's state and request rate, sent as deltas to
every open page at once.

Sits beside metrics at the end of the data flow (... stats -> metrics, fleetview -> pages ->
the browser). One `FleetView` per farm runs one producer task, and only while a page is
open: every `interval_s` it reads each shard's shared-memory counters (farm.ipc.stats) with
a few numpy column sums, takes each server's request rate from the counter difference over
the last `window_s`, combines it with the supervisor's state into one byte per cell, and
publishes the cells whose byte changed, with the farm's totals, as one server-sent event.
Every subscriber is handed the same bytes: nothing is computed per page.

A cell's byte is `state << 3 | rate bucket`:
    state   0 up; 1 erroring (exception responses or malformed frames within the window);
            2 faulted (an active fault targets it); 3 offline (its worker is not ready,
            its port could not be bound, or it was stopped through the API)
    bucket  0 idle; then requests/s up to each of RATE_BOUNDS[1:]; the last, above them
Cells are numbered in display order (farm.master.fleetview.layout): by fleet, then by name.
A cell with a fault on also has a kinds mask: bit i set while a fault of the i-th kind of
`fault_kinds` (farm.config.faults.kinds, KIND_TABLE's order) is active on it; the page marks
the cell with that kind's letter. Masks travel sparse, as (cell, mask) pairs, so a farm
without faults pays nothing for them.

Events (text/event-stream; each `data:` line is one JSON object):
    layout    {"cells", "names", "workers" (each cell's), "groups": [{"fleet", "start",
               "count"}], "states", "rate_bounds", "interval_s", "fault_kinds": [{"kind",
               "mark", "family"}]}                                 first on every connection
    snapshot  {"seq", "codes": base64 of one byte per cell, "faults": [cell, mask, ...]
               (every cell whose mask is not 0), "totals"}                      then once
    tick      {"seq", "cells": [cell, code, ...], "faults": [cell, mask, ...] (the masks
               that changed, 0 when its faults ended), "totals"}         every interval
When a fleet is scaled (a slot's shard changes), the next tick sends a new layout and a
snapshot instead of a tick; deltas continue from there.
A page that falls `MAX_BACKLOG` events behind is dropped; its EventSource reconnects and
starts again from a layout and a snapshot (farm.master.fleetview.stream: each page's queue).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from farm.config.faults.kinds import KIND_TABLE
from farm.ipc.stats import (
    DURATION,
    EXCEPTIONS,
    MALFORMED_FRAMES,
    REQUESTS,
    ShardCounters,
)
from farm.master.fleetview.layout import cell_layout
from farm.master.fleetview.stream import (
    MAX_SUBSCRIBERS,
    Subscription,
    TooManySubscribers,
    sse,
)
from farm.master.http.core import server_slots
from farm.master.supervision.supervisor import Supervisor

STATES = ("up", "erroring", "faulted", "offline")
UP, ERRORING, FAULTED, OFFLINE = range(len(STATES))
RATE_BOUNDS = (0.0, 1.0, 10.0, 100.0, 1000.0)  # requests/s; a bucket holds rates <= its bound
Counts = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewSources:
    """What the view shows beside the supervisor's own state; each is optional, and a
    missing one shows on the page as 'not available' rather than as zero."""

    faulted: Callable[[], Collection[str]] | None = None  # servers an active fault targets
    # The kinds active on each faulted server, a bit mask over KIND_TABLE's order; the same
    # mapping object while nothing changed (FaultTable.kinds_by_server), so a tick can skip it.
    fault_kinds: Callable[[], Mapping[str, int]] | None = None
    faults_active: Callable[[], int] | None = None
    scenario: Callable[[], dict[str, Any] | None] | None = None  # the step a scenario is at


def pairs(cells: npt.NDArray[np.intp], values: npt.NDArray[Any]) -> list[int]:
    """[cell, value, cell, value, ...] for those cells: how deltas travel."""
    out = np.empty(2 * len(cells), dtype=np.int64)
    out[0::2], out[1::2] = cells, values[cells]
    return list(out.tolist())


def read_counters(counters: ShardCounters) -> tuple[Counts, Counts]:
    """Requests, and exception responses plus malformed frames, by counters index
    (`ServerSpec.stats_index`)."""
    table = server_slots(counters)
    requests = table[:, REQUESTS:EXCEPTIONS].sum(axis=1, dtype=np.int64)
    errors = table[:, EXCEPTIONS:DURATION].sum(axis=1, dtype=np.int64)
    errors += table[:, MALFORMED_FRAMES].astype(np.int64)
    return requests, errors


class FleetView:
    """The one producer of the fleet view's events for a supervisor's farm."""

    def __init__(
        self,
        supervisor: Supervisor,
        *,
        sources: ViewSources | None = None,
        interval_s: float = 0.5,
        window_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.supervisor = supervisor
        self.sources = sources or ViewSources()
        self.interval_s = interval_s
        self.clock = clock
        # (time, requests, errors) in shard order, oldest first: a tick's rates run from the
        # oldest, `window_s` before it.
        self.history: deque[tuple[float, Counts, Counts]] = deque(
            maxlen=max(1, round(window_s / interval_s))
        )
        self._lay_out()
        self.restarts = [slot.restarts for slot in supervisor.slots]  # as of the last tick
        self.seq = 0
        self.totals: dict[str, Any] = {}
        self.subscribers: set[Subscription] = set()
        self._snapshot: tuple[int, bytes] | None = None
        self._task: asyncio.Task[None] | None = None

    def _lay_out(self) -> None:
        """The cells for the servers each slot's shard holds now. A scaled fleet gives its
        slots new `Shard` objects (farm.master.fleet.scale), which is how a tick notices, as
        /metrics does (farm.master.metrics.series)."""
        slots = self.supervisor.slots
        self.shards = [slot.shard for slot in slots]
        self.sizes = [len(shard.servers) for shard in self.shards]
        # Each shard's servers' counters indexes, in the order of its servers.
        self.stats = [
            np.array([s.stats_index for s in shard.servers], dtype=np.int64)
            for shard in self.shards
        ]
        self.places, self.order, layout = cell_layout(slots)
        # `retry`: how soon a dropped page's EventSource comes back, in ms.
        layout.update(
            states=list(STATES),
            rate_bounds=list(RATE_BOUNDS),
            interval_s=self.interval_s,
            fault_kinds=[
                {"kind": kind.name, "mark": kind.mark, "family": kind.family} for kind in KIND_TABLE
            ],
        )
        self.layout_event = b"retry: 1000\n" + sse("layout", layout)
        self.codes = np.zeros(len(self.order), dtype=np.uint8)
        self.rates = np.zeros(len(self.order), dtype=np.float64)
        self.masks = np.zeros(len(self.order), dtype=np.uint32)
        self.masks_from: Mapping[str, int] | None = None  # what self.masks were made of
        # Counts in the old shard order cannot be subtracted from the new: rates start over.
        self.history.clear()

    # -- subscribers -------------------------------------------------------------------

    def subscribe(self) -> Subscription:
        """A new page: its queue starts with the layout and a snapshot of every cell.

        Raises TooManySubscribers past MAX_SUBSCRIBERS open pages."""
        if len(self.subscribers) >= MAX_SUBSCRIBERS:
            raise TooManySubscribers
        if self._task is None:
            self.history.clear()  # counts from before the pause would smear the rates
            self.tick()
            self._task = asyncio.create_task(self._run())
        subscription = Subscription()
        subscription.push(self.layout_event)
        subscription.push(self.snapshot())
        self.subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.close()
        self.subscribers.discard(subscription)

    def close(self) -> None:
        """The farm is stopping: end every stream so the HTTP server can stop at once."""
        for subscription in self.subscribers:
            subscription.close()
        self.subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def stop(self) -> None:
        task = self._task
        self.close()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def snapshot(self) -> bytes:
        if self._snapshot is None or self._snapshot[0] != self.seq:
            codes = base64.b64encode(self.codes.tobytes()).decode()
            data = {
                "seq": self.seq,
                "codes": codes,
                "faults": pairs(np.flatnonzero(self.masks), self.masks),
                "totals": self.totals,
            }
            self._snapshot = (self.seq, sse("snapshot", data))
        return self._snapshot[1]

    async def _run(self) -> None:
        next_at = self.clock()
        try:
            while self.subscribers:
                next_at += self.interval_s
                await asyncio.sleep(max(0.0, next_at - self.clock()))
                event = self.tick()
                for subscription in list(self.subscribers):
                    subscription.push(event)
                    if subscription.closed:
                        self.subscribers.discard(subscription)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    # -- one tick ----------------------------------------------------------------------

    def tick(self) -> bytes:
        """Read every counter once; the event carrying what changed since the last tick."""
        relaid = any(
            slot.shard is not shard
            for slot, shard in zip(self.supervisor.slots, self.shards, strict=True)
        )
        if relaid:
            self._lay_out()
        now = self.clock()
        requests, errors = self._read()
        if self.history:
            then, requests_then, errors_then = self.history[0]
            seconds = max(now - then, 1e-6)
            made = np.maximum(requests - requests_then, 0)
            failed = np.maximum(errors - errors_then, 0)
        else:
            seconds, made, failed = 1.0, np.zeros_like(requests), np.zeros_like(errors)
        self.history.append((now, requests, errors))
        rates = (made / seconds)[self.order]
        states = self._states(failed[self.order])
        codes = (states << 3) | np.searchsorted(RATE_BOUNDS, rates).astype(np.uint8)
        cells = pairs(np.flatnonzero(codes != self.codes), codes)
        masks = self._masks()
        faults = pairs(np.flatnonzero(masks != self.masks), masks)
        self.codes, self.rates, self.masks, self.seq = codes, rates, masks, self.seq + 1
        self.totals = self._totals(now, float(made.sum()) / seconds, float(failed.sum()) / seconds)
        if relaid:  # every page starts again from the new layout, as on connecting
            return self.layout_event + self.snapshot()
        data = {"seq": self.seq, "cells": cells, "faults": faults, "totals": self.totals}
        return sse("tick", data)

    def _masks(self) -> npt.NDArray[np.uint32]:
        """Each cell's kinds mask; the last tick's when the source's mapping is the same."""
        if self.sources.fault_kinds is None:
            return self.masks
        by_name = self.sources.fault_kinds()
        if by_name is self.masks_from:
            return self.masks
        masks = np.zeros(len(self.order), dtype=np.uint32)
        cells = self.places.cells
        for name, mask in by_name.items():
            cell = cells.get(name)
            if cell is not None:
                masks[cell] = mask
        self.masks_from = by_name
        return masks

    def _read(self) -> tuple[Counts, Counts]:
        requests, errors = [], []
        for slot, size, stats in zip(self.supervisor.slots, self.sizes, self.stats, strict=True):
            try:
                made, failed = read_counters(slot.counters)
            except ValueError:  # the farm is stopping and has released the segment
                made, failed = np.zeros(size, np.int64), np.zeros(size, np.int64)
            else:
                made, failed = made[stats], failed[stats]
            requests.append(made)
            errors.append(failed)
        return np.concatenate(requests), np.concatenate(errors)

    def _states(self, failed: Counts) -> npt.NDArray[np.uint8]:
        states = np.where(failed > 0, ERRORING, UP).astype(np.uint8)
        states[self._cells(self.sources.faulted)] = FAULTED
        # A worker replaced since the last tick shows down for one tick even if its successor
        # is already ready: an outage shorter than a tick must not go unseen.
        slots = self.supervisor.slots
        restarts = [slot.restarts for slot in slots]
        ready = [
            slot.state == "ready" and count == seen
            for slot, count, seen in zip(slots, restarts, self.restarts, strict=True)
        ]
        self.restarts = restarts
        states[np.repeat(np.logical_not(ready), self.sizes)[self.order]] = OFFLINE
        # Ports that could not be bound, and servers stopped through the API.
        down = [name for slot in slots for names in (slot.failed, slot.stopped) for name in names]
        states[self._cells(lambda: down)] = OFFLINE
        return states

    def _cells(self, names: Callable[[], Collection[str]] | None) -> list[int]:
        if names is None:
            return []
        cells = self.places.cells
        return [cells[name] for name in names() if name in cells]

    def _totals(self, now: float, requests_per_s: float, errors_per_s: float) -> dict[str, Any]:
        sup, sources = self.supervisor, self.sources
        workers = [
            {
                "worker": slot.shard.worker,
                "pid": slot.pid,
                "state": slot.state,
                "servers": len(slot.shard.servers),
                "heartbeat_age_s": round(now - slot.last_heartbeat, 2)
                if slot.last_heartbeat
                else None,
                "restarts": slot.restarts,
            }
            for slot in sup.slots
        ]
        return {
            "servers_ready": sup.servers_ready(),
            "servers_total": sup.plan.servers_total,
            "requests_per_s": round(requests_per_s, 1),
            "exceptions_per_s": round(errors_per_s, 1),
            "workers": workers,
            "faults_active": None if sources.faults_active is None else sources.faults_active(),
            "scenario": None if sources.scenario is None else sources.scenario(),
            "stopping": sup.stopping,
        }

    # -- one server --------------------------------------------------------------------

    def rate(self, name: str) -> float | None:
        """A server's requests/s over the window, while the view runs."""
        if self._task is None or name not in self.places:
            return None
        return round(float(self.rates[self.places.cells[name]]), 2)

    def state(self, name: str) -> str | None:
        """A server's state as the page shows it, while the view runs."""
        if self._task is None or name not in self.places:
            return None
        return STATES[int(self.codes[self.places.cells[name]]) >> 3]
