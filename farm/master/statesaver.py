"""Saving a running farm's banks: what differs from the starting values, found fast.

Beside farm.master.state (which owns the file format) in the master. `StateSaver` reads each
shard's bank segment straight from its file in /dev/shm (`pread`, which neither maps the
pages nor allocates those nobody wrote) while the workers serve: no message, no pause.
Descriptors held from the start keep the segments readable after the supervisor has
unlinked them, so the last save runs after every worker stopped. `StateKeeper` saves every
interval (in a thread) and at the stop.

A segment is compared region by region (one table of one unit of every server of a
template block, side by side: farm.config.plan's layout) against one server's starting
image, in numpy; points whose value is a function of time alone are masked out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from farm.config import codec
from farm.config.behaviours import initialize_shard
from farm.config.plan import (
    DIAGNOSTICS_BYTES,
    TABLE_ORDER,
    Block,
    Plan,
    ServerSpec,
    Shard,
    device_bytes,
    file_offset,
    files_bytes,
    point_offset,
    table_bytes,
    table_offset,
    tables_bytes,
)
from farm.config.templates import DeviceTemplate
from farm.master import logs
from farm.master.state import (
    FILES,
    Record,
    encode,
    fleet_digest,
    segment_path,
    write_atomically,
)

_STATEFUL = frozenset({"counter", "random_walk"})  # behaviours that carry on from the bank
_MERGE_GAP = 8  # changed bytes this close together are saved as one run
_CHUNK_BYTES = 8 * 1024 * 1024  # how much of a segment is compared at a time

Bytes = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class _Region:
    """One area (a unit's table, or the file records) of every slot of a block, side by side."""

    offset: int  # in the segment
    servers: tuple[int | None, ...]  # ServerSpec.index by slot (None: a free slot)
    unit: int
    table: int  # index in TABLE_ORDER, or FILES
    width: int  # bytes per server
    image: Bytes  # one server's memory at start (farm.config.plan's layout for one slot)
    care: npt.NDArray[np.bool_] | None  # where a difference counts (None: everywhere)
    start: int  # where this area is in `image`

    @property
    def base(self) -> Bytes:
        return self.image[self.start : self.start + self.width]

    @property
    def mask(self) -> npt.NDArray[np.bool_] | None:
        return None if self.care is None else self.care[self.start : self.start + self.width]


class StateSaver:
    """Saves a running farm's banks to its state file; holds the segments open."""

    def __init__(self, path: Path, plan: Plan, segments: dict[int, str]) -> None:
        self.lock = threading.Lock()  # a save cut off by a stop may still run in its thread
        self.path = path
        self.plan = plan
        self.fleet = fleet_digest(plan)
        self.regions = {
            shard.worker: list(_regions(shard, plan.templates)) for shard in plan.shards
        }
        # Open now: the descriptors keep the segments readable once the supervisor unlinks them.
        self.files = {
            worker: os.open(segment_path(name), os.O_RDONLY) for worker, name in segments.items()
        }

    def close(self) -> None:
        for fd in self.files.values():
            os.close(fd)
        self.files = {}

    def save(self) -> tuple[int, int]:
        """Write the state file atomically; returns (records, bytes of the file)."""
        with self.lock:
            return self._save()

    def _save(self) -> tuple[int, int]:
        records = [record for worker in self.files for record in self._diff(worker)]
        content = encode(self.fleet, self.plan.servers_total, records)
        write_atomically(self.path, content)
        return len(records), len(content)

    def _diff(self, worker: int) -> Iterator[Record]:
        fd = self.files[worker]
        for region in self.regions[worker]:
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


def _regions(shard: Shard, templates: dict[str, DeviceTemplate]) -> Iterator[_Region]:
    """A shard's segment as regions, in the layout farm.config.plan gives it: per block, each
    table of each unit for every slot side by side, then (past the diagnostics) every slot's
    file records."""
    for block in shard.blocks:
        template = templates[block.template]
        slots: list[int | None] = [None] * block.capacity  # a free slot holds no server
        for spec in shard.servers:
            if spec.block_offset == block.offset:
                slots[spec.slot] = spec.index
        servers = tuple(slots)
        base, care = _starting_image(template)
        offset = block.offset
        for unit_number, unit in enumerate(template.units):
            for table_number, table in enumerate(TABLE_ORDER):
                width = table_bytes(unit, table)
                start = table_offset(_lone(template), template, unit.unit_id, table)
                yield _Region(offset, servers, unit_number, table_number, width, base, care, start)
                offset += block.capacity * width
        width = files_bytes(template)
        if width:
            start = file_offset(_lone(template), template, template.files[0].number)
            offset = block.offset + block.capacity * (tables_bytes(template) + DIAGNOSTICS_BYTES)
            yield _Region(offset, servers, 0, FILES, width, base, care, start)


def _lone(template: DeviceTemplate) -> ServerSpec:
    """A server alone in its block: its segment offsets are its device image's offsets."""
    return ServerSpec(
        index=0,
        name="",
        fleet="",
        host="",
        port=0,
        template=template.name,
        seed=0,
        block_offset=0,
        block_capacity=1,
        slot=0,
        stats_index=0,
    )


def _starting_image(template: DeviceTemplate) -> tuple[Bytes, npt.NDArray[np.bool_] | None]:
    """One server's memory as the master writes it at start, and where changes count."""
    spec = _lone(template)
    size = device_bytes(template)
    image = bytearray(size)
    block = Block(template=template.name, offset=0, capacity=1, size=size, first_stats=0)
    alone = Shard(worker=0, servers=(spec,), blocks=(block,))
    initialize_shard(memoryview(image), alone, {template.name: template})
    care = np.ones(size, dtype=np.bool_)
    for point in template.points:
        if point.behaviour.live and point.behaviour.kind not in _STATEFUL:
            start = point_offset(spec, template, point)
            care[start : start + codec.byte_width(point)] = False
    return np.frombuffer(bytes(image), dtype=np.uint8), (None if care.all() else care)


class StateKeeper:
    """`farm up --state FILE`: saves every `interval_s` while the farm runs, and at the stop."""

    def __init__(self, saver: StateSaver, interval_s: float) -> None:
        self.saver = saver
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

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

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self._save(logging.DEBUG, "state saved")

    async def _save(self, level: int, what: str) -> None:
        began = time.monotonic()
        try:
            records, size = await asyncio.to_thread(self.saver.save)
        except OSError as exc:
            logs.event(
                logging.ERROR,
                "state_save_failed",
                f"cannot save the state to {self.saver.path}: {exc.strerror or exc}",
                file=str(self.saver.path),
            )
            return
        took = time.monotonic() - began
        logs.event(
            level,
            "state_saved",
            f"{what} to {self.saver.path}: {records} changed ranges, {size} bytes, "
            f"in {took * 1000:.0f} ms",
            file=str(self.saver.path),
            records=records,
            bytes=size,
            seconds=round(took, 3),
        )
