"""Saving a running farm's banks: what differs from the starting values, found fast.

Beside farm.master.state.statefile (which owns the file format) in the master. `StateSaver` reads
each
shard's bank segment straight from its file in /dev/shm (`pread`, which neither maps the
pages nor allocates those nobody wrote) while the workers serve: no message, no pause.
Descriptors held from the start keep the segments readable after the supervisor has
unlinked them, so the last save runs after every worker stopped (a scale grows a segment
in place: the same descriptor reads it whole). Each save takes the farm as it runs now (the
supervisor's plan, which `farm scale` replaces): the servers a scale added are saved, those
it removed are not, and the header says each fleet's count. `StateKeeper` saves every
interval (in a thread) and at the stop.

A segment is compared region by region (one table of one unit of every server of a
template block, side by side: farm.config.plan's layout) against one server's starting
image, in numpy; points whose value is a function of time alone are masked out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from farm.config.plan import Plan
from farm.ipc.banks import segment_file
from farm.master import logs
from farm.master.state.layout import Layout, layout_of
from farm.master.state.marker import Marker, sidecar
from farm.master.state.statefile import Record, encode, write_atomically
from farm.words import counted

_MERGE_GAP = 8  # changed bytes this close together are saved as one run
_CHUNK_BYTES = 8 * 1024 * 1024  # how much of a segment is compared at a time


def state_size(records: int, data: int, file: int) -> str:
    """How much a save wrote or a restore read, in the same words for both."""
    return (
        f"{counted(records, 'changed range')} ({data} bytes of register data), "
        f"a file of {file} bytes"
    )


class StateSaver:
    """Saves a running farm's banks to its state file; holds the segments open.

    `current` gives the farm's plan as it is now (the supervisor's, which a scale replaces);
    `origin` is the digest of the plan the farm's config built (default: the plan at start).
    """

    def __init__(
        self,
        path: Path,
        current: Callable[[], Plan],
        segments: dict[int, str],
        origin: str | None = None,
    ) -> None:
        self.lock = threading.Lock()  # a save cut off by a stop may still run in its thread
        self.path = path
        self.current = current
        self.layout = layout_of(current())
        self.origin = origin or self.layout.fleet
        # Open now: the descriptors keep the segments readable once the supervisor unlinks them.
        self.files = {
            worker: os.open(segment_file(name), os.O_RDONLY) for worker, name in segments.items()
        }

    def close(self) -> None:
        for fd in self.files.values():
            os.close(fd)
        self.files = {}

    def save(self) -> tuple[int, int, int]:
        """Write the state file atomically; returns (records, bytes of bank data in them,
        bytes of the file)."""
        with self.lock:
            return self._save()

    def _save(self) -> tuple[int, int, int]:
        plan = self.current()  # one plan for the whole save: a scale replaces it, whole
        if plan.shards is not self.layout.shards:
            self.layout = layout_of(plan)
        now = self.layout
        records = [record for worker in self.files for record in self._diff(worker, now)]
        content = encode(
            records,
            fleet=now.fleet,
            origin=self.origin,
            fleets=now.fleets,
            servers=now.servers,
        )
        write_atomically(self.path, content)
        return len(records), sum(len(record.data) for record in records), len(content)

    def _diff(self, worker: int, layout: Layout) -> Iterator[Record]:
        fd = self.files[worker]
        for region in layout.regions.get(worker, ()):
            rows_per_chunk = max(1, _CHUNK_BYTES // max(region.width, 1))
            for first in range(0, len(region.servers), rows_per_chunk):
                count = min(rows_per_chunk, len(region.servers) - first)
                raw = os.pread(fd, count * region.width, region.offset + first * region.width)
                rows = np.frombuffer(raw, dtype=np.uint8).reshape(count, region.width)
                changed = rows != region.base
                mask = region.mask
                if mask is not None:
                    changed &= mask
                for row, start, end in _runs(np.flatnonzero(changed), region.width):
                    server = region.servers[first + row]
                    if server is None:
                        continue  # a free slot: nobody's state
                    offset = row * region.width
                    data = raw[offset + start : offset + end]
                    yield Record(server, region.unit, region.table, start, data)


def _describe_age(seconds: float | None) -> str:
    return "the start" if seconds is None else f"{seconds:.0f} s ago"


def _runs(flat: npt.NDArray[np.intp], width: int) -> Iterator[tuple[int, int, int]]:
    """Changed positions of a chunk of rows as (row, start, end) runs: a run never crosses
    into the next row, and changes closer than _MERGE_GAP make one run. Vectorized: a
    Python step per run, not per byte or per row."""
    if not flat.size:
        return
    rows = flat // width
    breaks = np.flatnonzero((np.diff(flat) > _MERGE_GAP) | (np.diff(rows) != 0))
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(flat) - 1]))
    columns = flat - rows * width
    firsts, lasts = columns[starts].tolist(), (columns[ends] + 1).tolist()
    yield from zip(rows[starts].tolist(), firsts, lasts, strict=True)


class StateKeeper:
    """`farm up --state FILE`: saves every `interval_s` while the farm runs, and at the stop."""

    def __init__(self, saver: StateSaver, interval_s: float) -> None:
        self.saver = saver
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._soon = asyncio.Event()
        self.marker = Marker(saver.path)
        self.failures = 0
        self.last_error: str | None = None
        self.last_good: float | None = None  # monotonic time of the last good save

    def summary(self) -> dict[str, Any]:
        """For GET /api/v1/status and `farm status`: how the saves go."""
        age = None if self.last_good is None else round(time.monotonic() - self.last_good, 1)
        return {
            "file": str(self.saver.path),
            "last_saved_age_s": age,
            "saves_failed": self.failures,
            "last_error": self.last_error,
        }

    def save_soon(self) -> None:
        """Save now rather than at the end of the interval (the farm was scaled: a kill -9
        before the next save would otherwise bring it back at its old size)."""
        self._soon.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._every_interval())

    async def finish(self) -> None:
        """The workers have stopped: the last save, then let go of the segments."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self._save(logging.INFO, "state saved")
        finally:
            self.saver.close()
            self.marker.close()

    async def _every_interval(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._soon.wait(), self.interval_s)
            self._soon.clear()
            await self._save(logging.DEBUG, "state saved")

    async def _save(self, level: int, what: str) -> None:
        began = time.monotonic()
        try:
            records, data, size = await asyncio.to_thread(self.saver.save)
        except OSError as exc:
            self._failed(exc.strerror or str(exc))
            return
        took = time.monotonic() - began
        self.last_good = time.monotonic()
        logs.event(
            level,
            "state_saved",
            f"{what} to {self.saver.path}: {state_size(records, data, size)}, "
            f"in {took * 1000:.0f} ms",
            file=str(self.saver.path),
            records=records,
            data_bytes=data,
            file_bytes=size,
            seconds=round(took, 3),
        )

    def _failed(self, reason: str) -> None:
        """A WARNING each time, never quiet: the file keeps the farm as of the last good save,
        the sidecar says so to the next start, and the farm's exit code will say so too."""
        self.failures += 1
        self.last_error = reason
        recorded = self.marker.failed(reason)
        since = None if self.last_good is None else time.monotonic() - self.last_good
        logs.event(
            logging.WARNING,
            "state_save_failed",
            f"cannot save the state to {self.saver.path}: {reason}; it holds the farm as of "
            f"{_describe_age(since)} ({self.failures} failed saves)"
            + ("" if recorded else f"; could not record this in {sidecar(self.saver.path)}"),
            file=str(self.saver.path),
            failures=self.failures,
        )
