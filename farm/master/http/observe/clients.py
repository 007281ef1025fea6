"""The routes that say what the system under test did: its clients and their polling.

    GET /api/v1/clients?server=NAME     one row a client (with `server`: that server's
                                        clients only, each with its polls in detail)
    GET /api/v1/report?since=60&fleet=F per client and fleet: polled, never polled,
                                        intervals, writes; behaviour around ended faults

Part of the control API (farm.master.http.app assembles it); the figures are
farm.master.observe's, asked of the workers when a request comes (never otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

from pydantic import BaseModel, Field

from farm.master.faults.entry import EndedFault
from farm.master.fleet.inventory import Inventory
from farm.master.http.routes import Call, NotFound, Route, Strict
from farm.master.http.values import locate
from farm.master.observe.clients import client_rows
from farm.master.observe.gather import gather
from farm.master.observe.report import report
from farm.master.supervision.supervisor import Supervisor


class ClientsQuery(Strict):
    server: str | None = Field(
        None, description="Only this server's clients, each with its polls in detail"
    )


class PollRow(BaseModel):
    server: str
    unit: int
    function_code: int
    address: int
    count: int
    requests: int
    last_s: float = Field(description="The last interval between two of these requests")
    p50_s: float = Field(description="Median interval over its last 32")
    p99_s: float
    max_gap_s: float = Field(description="The largest interval ever")
    seen_s_ago: float = Field(description="Seconds since its last poll")


class ClientRow(BaseModel):
    client: str = Field(description="The client's address (its reconnections are the same)")
    servers: list[str] = Field(description="Servers it polls (a read it repeats)")
    requests_per_s: float = Field(description="Its polling rate now, over every server")
    poll_p50_s: float = Field(description="The median of its polls' median intervals")
    poll_p99_s: float = Field(description="The 99th percentile of its polls' p99 intervals")
    connections: int = Field(description="Connections it made")
    exceptions: int = Field(description="Exception answers it received")
    requests: dict[int, int] = Field(description="Requests by function code")
    writes: int
    stale: list[str] = Field(description="Servers it polled before and not for 3 intervals")
    polls: list[PollRow] = Field(description="Its polls in detail (with `server` only)")


class ClientsAnswer(BaseModel):
    clients: list[ClientRow]


def client_routes(supervisor: Supervisor, inventory: Inventory) -> list[Route]:
    async def list_clients(call: Call) -> ClientsAnswer:
        query = call.query_as(ClientsQuery)
        if query.server is not None:
            locate(inventory, query.server)  # 404 for a name it does not know
        found = await gather(supervisor)
        if query.server is not None:
            found = [each for each in found if each.server == query.server]
        rows = client_rows(found, time.monotonic(), detail=query.server is not None)
        return ClientsAnswer(clients=[ClientRow.model_validate(asdict(row)) for row in rows])

    return [
        Route(
            method="GET",
            path="/api/v1/clients",
            handler=list_clients,
            summary="The system under test's clients: what each polls, how often, what it "
            "stopped polling",
            query=ClientsQuery,
            response=ClientsAnswer,
            errors=(404,),
            tag="observe",
        )
    ]


class ReportQuery(Strict):
    since: float = Field(60.0, gt=0, description="The window, in seconds back from now")
    fleet: str | None = Field(None, description="Only this fleet")


class NamesModel(BaseModel):
    count: int
    names: list[str] = Field(description="The first 20, in the farm's order")


class IntervalsModel(BaseModel):
    usual_s: float = Field(description="The interval it keeps most of the time")
    p50_s: float
    p99_s: float
    max_s: float = Field(
        description="The largest gap between two of its polls of a server that ended in the window"
    )


class ClientFleetModel(BaseModel):
    client: str
    fleet: str
    servers: int = Field(description="Servers in the fleet")
    polled: NamesModel
    never_polled: NamesModel
    intervals: IntervalsModel
    writes: int


class FleetCoverageModel(BaseModel):
    fleet: str
    servers: int
    polled: int = Field(description="Servers some client polled in the window")
    never_polled: NamesModel = Field(description="Servers no client polled in the window")


class RecoveryModel(BaseModel):
    client: str
    recovered: int = Field(description="Servers it polled again after the fault ended")
    not_recovered: NamesModel = Field(description="Servers it polled before and not since")
    p50_s: float = Field(description="Time from the fault's end to its first poll again")
    p99_s: float
    max_s: float
    attempts_per_s: float | None = Field(
        description="Its connection attempts per second to the servers while they were "
        "offline (null: not counted; the farm counts them with CAP_NET_RAW)"
    )


class FaultBehaviourModel(BaseModel):
    id: int
    kind: str
    servers: int
    lasted_s: float
    ended_s_ago: float
    clients: list[RecoveryModel]


class ReportAnswer(BaseModel):
    since_s: float
    clients: list[ClientFleetModel] = Field(description="One entry per client and fleet")
    fleets: list[FleetCoverageModel]
    faults: list[FaultBehaviourModel] = Field(description="Faults that ended in the window")


def report_routes(
    supervisor: Supervisor,
    inventory: Inventory,
    ended: Callable[[], Sequence[EndedFault]],
    attempts: Callable[[int, str], float | None],
) -> list[Route]:
    async def get_report(call: Call) -> ReportAnswer:
        query = call.query_as(ReportQuery)
        fleets: dict[str, list[str]] = {}
        for server in inventory.servers.values():
            fleets.setdefault(server.spec.fleet, []).append(server.name)
        if query.fleet is not None:
            if query.fleet not in fleets:
                raise NotFound(f"no fleet named {query.fleet!r}; `farm servers` lists them")
            fleets = {query.fleet: fleets[query.fleet]}
        found = await gather(supervisor)
        built = report(found, fleets, ended(), attempts, time.monotonic(), query.since)
        return ReportAnswer.model_validate(asdict(built))

    return [
        Route(
            method="GET",
            path="/api/v1/report",
            handler=get_report,
            summary="Per client and fleet: servers polled and never polled, poll intervals, "
            "writes; how each client behaved around the faults that ended",
            query=ReportQuery,
            response=ReportAnswer,
            errors=(404,),
            tag="observe",
        )
    ]
