"""A live trace of one server: every request and its answer for a while, decoded.

    GET /api/v1/servers/{name}/trace?seconds=10&client=ADDR   {"records": [...], "server": ...}

Part of the control API (farm.master.http.app assembles it). The server's worker traces it
(farm.worker.observe.trace: nothing is paid while nobody traces) for `seconds`, then hands
the records over; the answer comes when the trace ends (the CLI asks a second at a time to
print as it goes). A request cut short (the client went away) ends the trace too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict

from pydantic import BaseModel, Field

from farm.ipc.messages import TRACE_START, TRACE_STOP, Control, Reply
from farm.master.fleet.inventory import Inventory
from farm.master.http.routes import Call, Conflict, Route, Strict
from farm.master.http.servers import ServerPath
from farm.master.http.values import locate
from farm.master.observe.decode import decode
from farm.master.supervision.supervisor import Supervisor

MAX_SECONDS = 60.0


class TraceQuery(Strict):
    seconds: float = Field(10.0, gt=0, le=MAX_SECONDS, description="How long to trace")
    client: str = Field("", description="Only this client's requests: HOST or HOST:PORT")


class TraceRecord(BaseModel):
    time: float = Field(description="Wall clock, seconds since the epoch, when it arrived")
    client: str
    transport: str
    unit: int
    function_code: int
    what: str = Field(description="'read holding_registers', 'write register', ...")
    address: int | None
    count: int | None
    values: list[int] = Field(description="Written by the request, or read by the answer")
    exception: int | None = Field(description="The exception code answered, if one was")
    latency_s: float = Field(description="From the request's arrival to its answer built")
    request: str = Field(description="The request PDU, hex")
    answer: str = Field(description="The answer PDU, hex; empty: no answer")


class TraceAnswer(BaseModel):
    server: str
    address: str = Field(description="HOST:PORT the server listens on")
    transport: str
    records: list[TraceRecord]


def trace_routes(supervisor: Supervisor, inventory: Inventory) -> list[Route]:
    async def trace_server(call: Call) -> TraceAnswer:
        server = locate(inventory, call.path_as(ServerPath).name)
        query = call.query_as(TraceQuery)
        names = (server.name,)

        def control(op: str) -> Callable[[int], Control]:
            return lambda request_id: Control(
                request_id=request_id, op=op, servers=names, client=query.client
            )

        started = await supervisor.ask(server.slot, control(TRACE_START))
        if not isinstance(started, Reply) or not started.ok:
            raise Conflict(f"{server.name} cannot be traced now (its worker is not running)")
        reply = None
        try:
            await asyncio.sleep(query.seconds)
        finally:
            reply = await supervisor.ask(server.slot, control(TRACE_STOP))
        traced = reply.traced if isinstance(reply, Reply) else ()
        spec = server.spec
        return TraceAnswer(
            server=server.name,
            address=spec.address,
            transport=spec.transport,
            records=[
                TraceRecord(
                    time=record.time,
                    client=record.client,
                    transport=record.source,
                    unit=record.unit,
                    **{
                        key: value
                        for key, value in asdict(decode(record.request, record.answer)).items()
                    },
                    latency_s=round(record.latency_s, 6),
                    request=record.request.hex(),
                    answer=record.answer.hex(),
                )
                for record in traced
            ],
        )

    return [
        Route(
            method="GET",
            path="/api/v1/servers/{name}/trace",
            handler=trace_server,
            summary="Trace a server for a while: every request and its answer, decoded",
            description="Answers when the trace ends (at most 60 s).",
            path_model=ServerPath,
            query=TraceQuery,
            response=TraceAnswer,
            errors=(404, 409),
            tag="observe",
        )
    ]
