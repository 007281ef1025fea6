"""The routes that say what the system under test did: its clients and their polling.

    GET /api/v1/clients?server=NAME     one row a client (with `server`: that server's
                                        clients only, each with its polls in detail)

Part of the control API (farm.master.http.app assembles it); the figures are
farm.master.observe's, asked of the workers when a request comes (never otherwise).
"""

from __future__ import annotations

import time
from dataclasses import asdict

from pydantic import BaseModel, Field

from farm.master.fleet.inventory import Inventory
from farm.master.http.routes import Call, Route, Strict
from farm.master.observe.clients import client_rows
from farm.master.observe.gather import gather
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
            inventory.locate(query.server)  # 404 for a name it does not know
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
