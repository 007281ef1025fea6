"""The fleet view's cells: one per server, in the order the page draws them.

Used by farm.master.fleetview.view: cells are numbered by fleet (in order of first appearance in
the plan), then worker, then the server's index in the plan, so each fleet and worker is one
contiguous run of cells (a group the page draws under one heading).
"""

from __future__ import annotations

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
        key=lambda i: (
            fleets[shard_order[i][0].fleet],
            slots[shard_order[i][1]].shard.worker,
            shard_order[i][0].index,
        ),
    )
    places: dict[str, Place] = {}
    groups: list[dict[str, Any]] = []
    for cell, source in enumerate(ranked):
        spec, slot_index, position = shard_order[source]
        places[spec.name] = Place(cell=cell, slot=slot_index, position=position)
        worker = slots[slot_index].shard.worker
        if not groups or (groups[-1]["fleet"], groups[-1]["worker"]) != (spec.fleet, worker):
            groups.append({"fleet": spec.fleet, "worker": worker, "start": cell, "count": 0})
        groups[-1]["count"] += 1
    layout = {
        "cells": len(ranked),
        "names": [shard_order[i][0].name for i in ranked],
        "groups": groups,
    }
    return places, np.array(ranked, dtype=np.intp), layout
