"""Routes for the servers of a farm: list with filters, one in detail, stop and start.

    GET  /api/v1/servers                  ?fleet=&name=GLOB&worker=&state=up|offline|faulted
                                          &limit=&offset=     (filters, then a page)
    GET  /api/v1/servers/{name}           address, worker, template, units, points with their
                                          engineering values, active faults, connections
    POST /api/v1/servers/{name}/stop      port closed everywhere, connections dropped
    POST /api/v1/servers/{name}/start     bound again, served with the values it had

Part of the control API (farm.master.http.app assembles it); stop and start are
farm.master.fleet.switch's, values farm.master.http.values'.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from farm.master.fleet.inventory import Filters, Inventory, Located, State
from farm.master.fleet.switch import CannotStart, Switch
from farm.master.http.routes import Call, Conflict, Route, Strict
from farm.master.http.values import PointValue, locate, point_value


class ServersQuery(Strict):
    fleet: str | None = Field(None, description="Only servers of this fleet")
    name: str | None = Field(None, description="Only names matching this glob ('plc-*')")
    worker: int | None = Field(None, ge=0, description="Only servers hosted by this worker")
    state: State | None = Field(
        None,
        description="up: serving; offline: not serving (stopped, failed, or its worker "
        "restarting); faulted: a fault is active on it (serving or not)",
    )
    limit: int | None = Field(None, ge=1, description="At most this many (default: all)")
    offset: int = Field(0, ge=0, description="Skip this many of those that match")


class ServerPath(Strict):
    name: str = Field(description="The server's name, as `farm servers` lists it")


class ServerSummary(BaseModel):
    name: str
    address: str = Field(description="HOST:PORT ([HOST]:PORT for IPv6)")
    fleet: str
    template: str
    transport: str = Field(description="tcp, rtu-over-tcp, udp or tls")
    worker: int
    up: bool = Field(description="Its worker serves it now")
    state: State = Field(description="offline if not serving, faulted if a fault is on, else up")
    stopped: bool = Field(description="Stopped through the API (or an offline fault)")
    error: str | None = Field(None, description="Why it failed to start, if it did")


class ServerPage(BaseModel):
    servers: list[ServerSummary]
    total: int = Field(description="Servers matching the filters, over all pages")
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last")


class UnitInfo(BaseModel):
    unit_id: int
    coils: int
    discrete_inputs: int
    holding_registers: int
    input_registers: int


class ServerDetail(ServerSummary):
    connections: int = Field(description="Client connections open now")
    units: list[UnitInfo]
    points: list[PointValue]
    faults: list[dict[str, Any]] = Field(description="Faults active on it")


class Switched(BaseModel):
    name: str
    changed: bool = Field(description="false: it was already in that state")
    up: bool
    state: State


def server_routes(inventory: Inventory, switch: Switch) -> list[Route]:
    def find(call: Call) -> Located:
        return locate(inventory, call.path_as(ServerPath).name)

    async def list_servers(call: Call) -> ServerPage:
        query = call.query_as(ServersQuery)
        chosen = inventory.select(
            Filters(fleet=query.fleet, name=query.name, worker=query.worker, state=query.state)
        )
        end = len(chosen) if query.limit is None else query.offset + query.limit
        page = chosen[query.offset : end]
        return ServerPage(
            servers=[summary(inventory, server) for server in page],
            total=len(chosen),
            offset=query.offset,
            next_offset=end if end < len(chosen) else None,
        )

    async def get_server(call: Call) -> ServerDetail:
        server = find(call)
        units = [
            UnitInfo(
                unit_id=unit.unit_id,
                coils=unit.coils,
                discrete_inputs=unit.discrete_inputs,
                holding_registers=unit.holding_registers,
                input_registers=unit.input_registers,
            )
            for unit in server.template.units
        ]
        banks = server.banks()
        return ServerDetail(
            **summary(inventory, server).model_dump(),
            connections=server.connections(),
            units=units,
            points=[
                point_value(server, point, banks, inventory.overlay)
                for point in server.template.points
            ],
            faults=inventory.faults(server.name),
        )

    async def stop_server(call: Call) -> Switched:
        server = find(call)
        done = await switch.stop(server.name)
        return switched(inventory, server, done.changed)

    async def start_server(call: Call) -> Switched:
        server = find(call)
        try:
            done = await switch.start(server.name)
        except CannotStart as error:
            raise Conflict(str(error)) from error
        return switched(inventory, server, done.changed)

    base = "/api/v1/servers"
    return [
        Route(
            method="GET",
            path=base,
            handler=list_servers,
            summary="Servers, filtered by fleet, name glob, worker or state, a page at a time",
            query=ServersQuery,
            response=ServerPage,
            tag="servers",
        ),
        Route(
            method="GET",
            path=base + "/{name}",
            handler=get_server,
            summary="One server: address, worker, units, points with values, faults, connections",
            path_model=ServerPath,
            response=ServerDetail,
            errors=(404,),
            tag="servers",
        ),
        Route(
            method="POST",
            path=base + "/{name}/stop",
            handler=stop_server,
            summary="Take a server offline: its port closes (connections refused, open ones "
            "dropped); values stay",
            path_model=ServerPath,
            response=Switched,
            errors=(404,),
            tag="servers",
        ),
        Route(
            method="POST",
            path=base + "/{name}/start",
            handler=start_server,
            summary="Bring a stopped server back on its address, with the values it had",
            description="409 if another program took its port meanwhile (it stays stopped).",
            path_model=ServerPath,
            response=Switched,
            errors=(404, 409),
            tag="servers",
        ),
    ]


def summary(inventory: Inventory, server: Located) -> ServerSummary:
    spec = server.spec
    return ServerSummary(
        name=spec.name,
        address=f"[{spec.host}]:{spec.port}" if ":" in spec.host else spec.address,
        fleet=spec.fleet,
        template=spec.template,
        transport=spec.transport,
        worker=server.slot.shard.worker,
        up=server.up,
        state=inventory.state(server),
        stopped=server.stopped,
        error=server.error,
    )


def switched(inventory: Inventory, server: Located, changed: bool) -> Switched:
    return Switched(name=server.name, changed=changed, up=server.up, state=inventory.state(server))
