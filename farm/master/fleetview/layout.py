"""The fleet view's cells: one per server, in the order the page draws them.

Used by farm.master.fleetview.view: cells are numbered by fleet (in order of first appearance in
the plan), then by name in natural order (meter-9 before meter-10), so each fleet is one
contiguous run of cells (a group the page draws under one heading) and a server is found by
eye where its name says, whichever worker hosts it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from farm.master.supervision.slot import Slot


@dataclass(frozen=True, slots=True)
class Place:
    """Where a server is: its cell, and its slot and position in the slot's shard."""

    cell: int
    slot: int
    position: int


@dataclass(frozen=True, slots=True)
class Places:
    """Every server's `Place`, by name: its cell in a dict, the rest in arrays by cell (an
    object per server cost 100 bytes a server, 1 MB at 10,000)."""

    cells: dict[str, int]
    slots: npt.NDArray[np.int32]  # by cell
    positions: npt.NDArray[np.int32]  # by cell

    def get(self, name: str) -> Place | None:
        cell = self.cells.get(name)
        if cell is None:
            return None
        return Place(cell=cell, slot=int(self.slots[cell]), position=int(self.positions[cell]))

    def __contains__(self, name: str) -> bool:
        return name in self.cells


def natural(name: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key that reads numbers as numbers: meter-9 before meter-10."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part
    )


def cell_layout(
    slots: Sequence[Slot],
) -> tuple[Places, npt.NDArray[np.intp], dict[str, Any]]:
    """Cells in display order: each server's place, the shard-order index of each cell (to
    reorder the counters' columns), and the layout the page draws."""
    shard_order = [
        (spec, slot_index, position)
        for slot_index, slot in enumerate(slots)
        for position, spec in enumerate(slot.shard.servers)
    ]
    fleets: dict[str, int] = {}
    for spec, _, _ in sorted(shard_order, key=lambda entry: entry[0].index):
        fleets.setdefault(spec.fleet, len(fleets))
    ranked = sorted(
        range(len(shard_order)),
        key=lambda i: (fleets[shard_order[i][0].fleet], natural(shard_order[i][0].name)),
    )
    cells: dict[str, int] = {}
    groups: list[dict[str, Any]] = []
    for cell, source in enumerate(ranked):
        spec = shard_order[source][0]
        cells[spec.name] = cell
        if not groups or groups[-1]["fleet"] != spec.fleet:
            groups.append({"fleet": spec.fleet, "start": cell, "count": 0})
        groups[-1]["count"] += 1
    layout = {
        "cells": len(ranked),
        "names": [shard_order[i][0].name for i in ranked],
        "workers": [slots[shard_order[i][1]].shard.worker for i in ranked],
        "groups": groups,
    }
    order = np.array(ranked, dtype=np.intp)
    places = Places(
        cells,
        np.array([entry[1] for entry in shard_order], dtype=np.int32)[order],
        np.array([entry[2] for entry in shard_order], dtype=np.int32)[order],
    )
    return places, order, layout
