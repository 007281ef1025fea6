"""Restoring a state file at start: the plan at the size it was saved at, then the banks.

Beside farm.master.state.statefile (which owns the file format) in the master, on the start path:
`farm up --state FILE` builds its plan through `sized_plan` (a fleet scaled while it ran
comes back at its size, before anything is bound), and farm.master.run writes the checked
records into the new banks with `restore` before any worker starts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from farm.config.plan import Plan
from farm.errors import ConfigError, StateFileError
from farm.ipc.banks import segment_file
from farm.master.state.statefile import (
    Snapshot,
    area_offset,
    fleet_counts,
    fleet_digest,
    ranked,
    read,
)


def sized_plan(path: Path, plan: Plan, rebuild: Callable[[dict[str, int]], Plan]) -> Plan:
    """`plan` (what the config builds) at the size the state file was saved at, when that
    file was saved by a farm started from the same config and scaled since; else `plan`.

    `rebuild` builds the config's plan at given counts of its fleets. Raises StateFileError
    (one line) for an unreadable or corrupt file; a foreign one is left to `load`.
    """
    found = read(path)
    if found is None or not plan.fleets:  # a shard of a fleet cannot scale
        return plan
    header, _ = found
    expected, counts = fleet_digest(plan), header.get("fleets")
    if header.get("fleet") == expected or header.get("origin") != expected:
        return plan  # the config's own size, or another fleet (refused by `load`)
    if not isinstance(counts, dict) or set(counts) != set(fleet_counts(plan)):
        return plan
    sizes = {name: count for name, count in counts.items() if type(count) is int and count >= 0}
    if len(sizes) != len(counts):
        return plan
    try:
        return rebuild(sizes)
    except ConfigError as exc:
        raise StateFileError(
            f"state file {path} holds fleets scaled to {_sizes(sizes)}, which this config "
            f"cannot start: {exc}; refusing it"
        ) from exc


def _sizes(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def restore(snapshot: Snapshot, plan: Plan, segments: dict[int, str]) -> int:
    """Write a checked snapshot into the banks (before any worker starts); returns bytes.

    `segments` maps a shard's worker number to its bank segment's name.
    """
    workers = {spec.index: shard.worker for shard in plan.shards for spec in shard.servers}
    specs = ranked(plan)
    written = 0
    with _opened(segments, os.O_RDWR) as files:
        for record in snapshot.records:
            spec = specs[record.server]
            start = area_offset(spec, plan.templates[spec.template], record.unit, record.table)
            os.pwrite(files[workers[spec.index]], record.data, start + record.offset)
            written += len(record.data)
    return written


@contextlib.contextmanager
def _opened(segments: dict[int, str], flags: int) -> Iterator[dict[int, int]]:
    files: dict[int, int] = {}
    try:
        for worker, name in segments.items():
            files[worker] = os.open(segment_file(name), flags)
        yield files
    finally:
        for fd in files.values():
            os.close(fd)
