"""The write journal's route: what was written to a server, by whom, and what it held before.

    GET /api/v1/servers/{name}/writes?after=SEQ&limit=N   {"writes": [...], "next": SEQ}

Part of the control API (farm.master.http.app assembles it). The journal lives in the
shard's shared memory (farm.ipc.journal); the master reads it only here, when asked. Each
write names the points it covers wholly with their values after it, so a test can wait for
"setpoint = 42" without knowing the register map (farm.pytest_plugin's `wait_for_write`).
"""

from __future__ import annotations

import math
import struct

from pydantic import BaseModel, Field

from farm.config import codec
from farm.config.templates import DeviceTemplate, Table
from farm.ipc.journal import Write
from farm.master.fleet.inventory import BROADCAST_TCP_UNIT, Inventory
from farm.master.http.routes import Call, Route, Strict
from farm.master.http.servers import ServerPath
from farm.master.http.values import locate

MAX_WRITES = 1000


class WritesQuery(Strict):
    after: int = Field(0, ge=0, description="Only writes with a greater sequence number")
    limit: int = Field(MAX_WRITES, ge=1, le=MAX_WRITES, description="At most this many")


class WriteEntry(BaseModel):
    seq: int = Field(description="The write's number on this server, from 1")
    time: float = Field(description="Wall clock, seconds since the epoch")
    monotonic: float = Field(description="The host's monotonic clock, seconds (for ordering)")
    client: str = Field(description="HOST:PORT of the client that wrote, or 'farm'")
    source: str = Field(description="tcp, rtu-over-tcp, udp, tls, or farm (API, scenario, page)")
    farm: bool = Field(description="Made by the farm itself (API, scenario, page)")
    unit: int
    function_code: int = Field(description="5, 6, 15, 16, 21, 22 or 23; 0 for the farm's writes")
    table: str = Field(
        description="coils, discrete_inputs, holding_registers, input_registers, or "
        "file_records (FC 21: `address` is the first record of `file`)"
    )
    address: int
    file: int | None = Field(None, description="The file number of an FC 21 write")
    values: list[int] = Field(description="What was written, one entry per coil or register")
    previous: list[int] = Field(description="What those addresses held before")
    points: dict[str, int | float | str] = Field(
        description="The points the write covers wholly, with their values after it"
    )


class WritePage(BaseModel):
    writes: list[WriteEntry]
    next: int = Field(description="Pass as `after` to get only newer writes")


def journal_routes(inventory: Inventory) -> list[Route]:
    async def list_writes(call: Call) -> WritePage:
        server = locate(inventory, call.path_as(ServerPath).name)
        query = call.query_as(WritesQuery)
        found = [write for write in server.journal().writes() if write.seq > query.after]
        page = found[: query.limit]
        entries = [entry(write, server.template) for write in page]
        return WritePage(writes=entries, next=page[-1].seq if page else query.after)

    return [
        Route(
            method="GET",
            path="/api/v1/servers/{name}/writes",
            handler=list_writes,
            summary="The server's write journal: every write a client or the farm made, "
            "oldest first, with the values before",
            description="A bounded ring per server: the oldest writes make room for new ones.",
            path_model=ServerPath,
            query=WritesQuery,
            response=WritePage,
            errors=(404,),
            tag="servers",
        )
    ]


def entry(write: Write, template: DeviceTemplate) -> WriteEntry:
    return WriteEntry(
        seq=write.seq,
        time=write.time,
        monotonic=write.monotonic,
        client=write.client,
        source=write.source,
        farm=write.source == "farm",
        unit=write.unit,
        function_code=write.function_code,
        table=write.table,
        address=write.address,
        file=write.file,
        values=list(write.values),
        previous=list(write.previous),
        points=points_written(write, template),
    )


def points_written(write: Write, template: DeviceTemplate) -> dict[str, int | float | str]:
    """The template's points inside the write's range, with their values after it."""
    if write.file is not None:  # a file's records hold no points
        return {}
    table, start = Table(write.table), write.address
    unit = write.unit
    if unit == BROADCAST_TCP_UNIT and template.units:
        unit = template.units[0].unit_id
    end = start + len(write.values)
    if table.is_bits:
        data = bytes(write.values)
    else:
        data = struct.pack(f">{len(write.values)}H", *write.values)
    width = 1 if table.is_bits else 2
    found: dict[str, int | float | str] = {}
    for point in template.points:
        if point.table is not table or point.unit_id != unit:
            continue
        if point.address < start or point.address + point.width > end:
            continue
        first = width * (point.address - start)
        value = codec.decode_one(point, data[first : first + width * point.width])
        if isinstance(value, float) and value.is_integer():
            found[point.name] = int(value)
        elif isinstance(value, float) and not math.isfinite(value):
            found[point.name] = str(value)
        else:
            found[point.name] = value
    return found
