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


def natural(name: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key that reads numbers as numbers: meter-9 before meter-10."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part
    )


def cell_layout(
    slots: Sequence[Slot],
) -> tuple[dict[str, Place], npt.NDArray[np.intp], dict[str, Any]]:
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
    places: dict[str, Place] = {}
    groups: list[dict[str, Any]] = []
    for cell, source in enumerate(ranked):
        spec, slot_index, position = shard_order[source]
        places[spec.name] = Place(cell=cell, slot=slot_index, position=position)
        if not groups or groups[-1]["fleet"] != spec.fleet:
            groups.append({"fleet": spec.fleet, "start": cell, "count": 0})
        groups[-1]["count"] += 1
    layout = {
        "cells": len(ranked),
        "names": [shard_order[i][0].name for i in ranked],
        "workers": [slots[shard_order[i][1]].shard.worker for i in ranked],
        "groups": groups,
    }
    return places, np.array(ranked, dtype=np.intp), layout
