"""Where each server's state lies in a running farm's bank segments, for farm.master.state.saver.

Beside farm.master.state.statefile in the master. A shard's segment (farm.config.plan's layout) is
cut into regions: one table of one unit (or the file records) of every slot of a template
block, side by side, each with one server's starting image to compare it against and a
mask of the points whose value is a function of time alone (those are not state). Worked out
once per plan: again only after a scale has replaced the plan's shards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

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
from farm.master.state.statefile import FILES, fleet_counts, fleet_digest, ranked

_STATEFUL = frozenset({"counter", "random_walk"})  # behaviours that carry on from the bank

Bytes = npt.NDArray[np.uint8]
Image = tuple[Bytes, npt.NDArray[np.bool_] | None]  # a starting image, and where changes count


@dataclass(frozen=True, slots=True)
class Region:
    """One area (a unit's table, or the file records) of every slot of a block, side by side."""

    offset: int  # in the segment
    servers: tuple[int | None, ...]  # by slot, the server's rank by name (None: a free slot)
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


@dataclass(frozen=True, slots=True)
class Layout:
    """What a save needs to know of the farm as it runs, worked out once per plan."""

    shards: tuple[Shard, ...]  # the plan's, to tell when a scale replaced them
    fleet: str  # its digest
    fleets: dict[str, int]  # each fleet's count
    servers: int
    regions: dict[int, list[Region]]  # by worker


def layout_of(plan: Plan) -> Layout:
    ranks = {spec.index: rank for rank, spec in enumerate(ranked(plan))}
    images: dict[str, Image] = {}
    return Layout(
        shards=plan.shards,
        fleet=fleet_digest(plan),
        fleets=fleet_counts(plan),
        servers=plan.servers_total,
        regions={
            shard.worker: list(_regions(shard, plan.templates, ranks, images))
            for shard in plan.shards
        },
    )


def _regions(
    shard: Shard,
    templates: dict[str, DeviceTemplate],
    ranks: dict[int, int],
    images: dict[str, Image],
) -> Iterator[Region]:
    """A shard's segment as regions, in the layout farm.config.plan gives it: per block, each
    table of each unit for every slot side by side, then (past the diagnostics) every slot's
    file records. `ranks`: each server's rank by name; `images`: starting images by template,
    filled as they are first needed."""
    slots: dict[int, list[int | None]] = {
        block.offset: [None] * block.capacity for block in shard.blocks
    }  # a free slot holds no server
    for spec in shard.servers:
        slots[spec.block_offset][spec.slot] = ranks[spec.index]
    for block in shard.blocks:
        template = templates[block.template]
        servers = tuple(slots[block.offset])
        if template.name not in images:
            images[template.name] = _starting_image(template)
        base, care = images[template.name]
        offset = block.offset
        for unit_number, unit in enumerate(template.units):
            for table_number, table in enumerate(TABLE_ORDER):
                width = table_bytes(unit, table)
                start = table_offset(_lone(template), template, unit.unit_id, table)
                yield Region(offset, servers, unit_number, table_number, width, base, care, start)
                offset += block.capacity * width
        width = files_bytes(template)
        if width:
            start = file_offset(_lone(template), template, template.files[0].number)
            offset = block.offset + block.capacity * (tables_bytes(template) + DIAGNOSTICS_BYTES)
            yield Region(offset, servers, 0, FILES, width, base, care, start)


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
