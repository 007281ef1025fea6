"""The control API: JSON over HTTP on the master (aiohttp), 127.0.0.1 by default.

Sits near the end of the data flow (... metrics -> api -> cli): the CLI is a client of it
(farm.client). This module assembles the app from route tables (farm.master.http.routes), each
route declaring the models that validate it and generate GET /api/v1/openapi.json. Errors
are JSON `{"error": "..."}` with a message that says what to fix. Every mutating request
(any method but GET and HEAD, on any path) passes farm.master.http.access first: no foreign
`Origin` (403), a JSON body (415), and the token when the farm has one (401).

    GET  /api/v1/status         farm totals and one entry per worker
    GET  /api/v1/ready          200 when every server is up, 503 before (for probes)
    GET  /api/v1/servers...     servers, values, stop/start (farm.master.http.servers, values),
                                writes (farm.master.http.observe.journal)
    GET  /api/v1/clients        what the clients polled, how often (http.observe.clients)
    GET  /api/v1/report         per client and fleet, and around faults (same)
    GET  /api/v1/servers/{name}/trace   a live trace of one server (http.observe.trace)
    POST /api/v1/shutdown       stop the farm gracefully
    GET  /api/v1/targets        every device as a SCADA imports it (farm.master.http.targets)
    GET  /api/v1/live           200 while the master runs and workers heartbeat (master.probes)
    GET  /api/v1/openapi.json   the OpenAPI 3.1 document of every route here
    GET  /metrics               Prometheus text format, or OpenMetrics when asked (also alone
                                on `--metrics-port`)
    GET  /                      the fleet view, a live page (farm.master.fleetview.pages, fleetview)

`GET /api/v1/status` also lists `metrics_urls`, where the farm serves /metrics (the separate
metrics listener first): `farm prometheus-config` builds its scrape config from them.

A farm serves status, ready and shutdown from farm.master.http.core as soon as its API
listens, and the rest (`rest_app`, built by farm.master.wiring) once loaded: at ready, or at
the first request for it, which waits meanwhile. `build_app` builds both parts at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from farm.files import BODY_BYTES
from farm.master.faults.table import FaultTable
from farm.master.fleet.inventory import Inventory
from farm.master.fleet.scale import Scaler
from farm.master.fleet.switch import Switch
from farm.master.fleetview.pages import add_view
from farm.master.fleetview.stream import STALL_S
from farm.master.fleetview.view import FleetView, ViewSources
from farm.master.http.access import Hosts
from farm.master.http.core import (
    Farm,
    Handler,
    first_app,
    first_handlers,
    status,
)
from farm.master.http.faults import fault_routes
from farm.master.http.fleets import fleet_routes
from farm.master.http.observe.clients import client_routes, report_routes
from farm.master.http.observe.journal import journal_routes
from farm.master.http.observe.trace import trace_routes
from farm.master.http.openapi import openapi_route
from farm.master.http.probes import live_route
from farm.master.http.routes import Call, Route, add_routes, document
from farm.master.http.scenario import scenario_routes
from farm.master.http.servers import server_routes
from farm.master.http.targets import targets_route
from farm.master.http.values import value_routes
from farm.master.metrics.servers import (
    CONTENT_TYPE,
    OPENMETRICS_CONTENT_TYPE,
    FarmMetrics,
    openmetrics,
)
from farm.master.observe.attempts import ConnectAttempts
from farm.master.observe.tallies import ClientTallies
from farm.master.scenario.player import ScenarioPlayer
from farm.master.scenario.steps import StepActions
from farm.master.supervision.supervisor import Supervisor

__all__ = ["build_app", "rest_app", "status"]  # status: for tests


class Readiness(BaseModel):
    """GET /api/v1/ready: 200 with ready true, or 503 with ready false and why in `error`
    (farm.master.http.core.readiness)."""

    ready: bool
    servers_ready: int
    servers_total: int
    error: str | None = None


def first_routes(handlers: dict[tuple[str, str], Handler]) -> list[Route]:
    """The OpenAPI entries of farm.master.http.core's routes (served there, not here)."""

    def call(method: str, path: str) -> Callable[[Call], Any]:
        handler = handlers[(method, path)]

        async def answer(call: Call) -> web.StreamResponse:
            return await handler(call.request)

        answer.__name__ = handler.__name__
        return answer

    return [
        Route(
            method="GET",
            path="/api/v1/status",
            handler=call("GET", "/api/v1/status"),
            summary="Farm totals, one entry per worker, and where /metrics is served",
        ),
        Route(
            method="GET",
            path="/api/v1/ready",
            handler=call("GET", "/api/v1/ready"),
            summary="200 when every server is up; 503 before, while a worker restarts, or stopping",
            response=Readiness,
            errors=(503,),
        ),
        Route(
            method="POST",
            path="/api/v1/shutdown",
            handler=call("POST", "/api/v1/shutdown"),
            summary="Stop the farm gracefully (answers at once)",
        ),
    ]


def metrics_route(
    supervisor: Supervisor,
    faults: FaultTable | None = None,
    scenario: ScenarioPlayer | None = None,
    clients: ClientTallies | None = None,
) -> Route:
    metrics = FarmMetrics(supervisor, faults, scenario, clients)

    async def get_metrics(call: Call) -> web.Response:
        wanted = openmetrics(call.request.headers.get("Accept", ""))
        # Off the loop: a big farm's scrape takes a while, and heartbeats must keep flowing.
        body = await asyncio.to_thread(metrics.render, wanted)
        kind = OPENMETRICS_CONTENT_TYPE if wanted else CONTENT_TYPE
        return web.Response(body=body, headers={"Content-Type": kind})

    return Route(
        method="GET",
        path="/metrics",
        handler=get_metrics,
        summary="Every server's and worker's counters, Prometheus text format",
        description="OpenMetrics 1.0.0 when the Accept header asks for "
        "application/openmetrics-text (as Prometheus does), else the text format 0.0.4.",
        content_type="text/plain",
        tag="meta",
    )


def metrics_rest(services: Services) -> web.Application:
    """/metrics alone, for the metrics listener's `Later` (its middlewares are there)."""
    app = web.Application()
    add_routes(
        app,
        [metrics_route(services.supervisor, services.faults, services.scenario, services.clients)],
    )
    return app


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """What the routes past farm.master.http.core's serve (farm.master.wiring builds them)."""

    supervisor: Supervisor
    inventory: Inventory
    switch: Switch
    faults: FaultTable
    scenario: ScenarioPlayer
    scaler: Scaler
    clients: ClientTallies | None = None


def build_app(
    supervisor: Supervisor,
    request_stop: Callable[[], None],
    token: str | None,
    metrics_urls: tuple[str, ...] = (),
    inventory: Inventory | None = None,
    switch: Switch | None = None,
    routes: Sequence[Route] = (),
    faults: FaultTable | None = None,
    scenario: ScenarioPlayer | None = None,
    scaler: Scaler | None = None,
    hosts: Hosts | None = None,
    state: Callable[[], dict[str, Any] | None] = lambda: None,
    view_stall_s: float = STALL_S,
    clients: ClientTallies | None = None,
) -> web.Application:
    """The control API with every route at once; `routes` are more routes to serve (and
    document) beside the farm's. `hosts`: the Host names it answers to
    (farm.master.http.access); `state`: how the state file's saves go, for GET
    /api/v1/status (None: no state file); `view_stall_s`: how long a fleet view stream may
    go undrained before it is closed; `clients`: the per-client summary /metrics shows
    (farm.master.observe.tallies; None: no client families). A farm serves the same routes
    in two parts (farm.master.http.core's first, then `rest_app`'s, loaded later)."""
    inventory = inventory or Inventory(supervisor)
    switch = switch or Switch(supervisor)
    faults = faults or FaultTable(supervisor, switch)
    scaler = scaler or Scaler(supervisor, (inventory.refresh, switch.refresh, faults.refresh))
    scenario = scenario or ScenarioPlayer(
        StepActions(faults, switch, inventory, scaler.scale, scaler.counts),
        supervisor.plan.fleets,
        supervisor.plan.templates,
    )
    services = Services(
        supervisor=supervisor,
        inventory=inventory,
        switch=switch,
        faults=faults,
        scenario=scenario,
        scaler=scaler,
        clients=clients,
    )
    farm = Farm(
        supervisor=supervisor,
        request_stop=request_stop,
        metrics_urls=metrics_urls,
        scenario=scenario.summary,
        state=state,
    )
    handlers = first_handlers(farm)
    app = first_app(token, hosts, handlers)
    add_rest(app, handlers, services, bool(token), view_stall_s, routes)
    return app


def rest_app(
    handlers: dict[tuple[str, str], Handler],
    services: Services,
    token_required: bool,
    view_stall_s: float = STALL_S,
) -> web.Application:
    """Every route but `handlers`' (which it documents), for a `Later` of
    farm.master.http.core: the application in front of it has the middlewares."""
    app = web.Application(client_max_size=BODY_BYTES)
    add_rest(app, handlers, services, token_required, view_stall_s)
    return app


def add_rest(
    app: web.Application,
    handlers: dict[tuple[str, str], Handler],
    services: Services,
    token_required: bool,
    view_stall_s: float = STALL_S,
    routes: Sequence[Route] = (),
) -> None:
    supervisor, inventory, faults = services.supervisor, services.inventory, services.faults
    document(app, first_routes(handlers))
    add_routes(app, server_routes(inventory, services.switch))
    add_routes(app, value_routes(inventory))
    add_routes(app, journal_routes(inventory))
    add_routes(app, client_routes(supervisor, inventory))
    add_routes(app, trace_routes(supervisor, inventory))
    attempts = ConnectAttempts()
    faults.on_down = lambda fault: attempts.watch(
        fault.id, [(faults.specs[name].host, faults.specs[name].port) for name in fault.servers]
    )
    faults.on_up = lambda fault: attempts.unwatch(fault.id)
    add_routes(app, report_routes(supervisor, inventory, lambda: faults.ended, attempts.rate))
    add_routes(app, fault_routes(faults))
    add_routes(app, scenario_routes(services.scenario))
    add_routes(app, [targets_route(supervisor), live_route(supervisor)])
    add_routes(app, fleet_routes(services.scaler))
    add_routes(app, routes)
    view = FleetView(supervisor, sources=view_sources(faults, services.scenario))
    add_view(app, view, token_required, view_stall_s)
    metrics = metrics_route(supervisor, faults, services.scenario, services.clients)
    add_routes(app, [metrics, openapi_route(token_required=token_required)])


def view_sources(faults: FaultTable, scenario: ScenarioPlayer) -> ViewSources:
    """What the fleet view shows of the fault table (who is faulted, by which kinds, how many
    faults) and of the scenario (the step it is at)."""
    return ViewSources(
        faulted=lambda: faults.on_server.keys(),
        fault_kinds=faults.kinds_by_server,
        faults_active=lambda: sum(faults.active_by_kind().values()),
        scenario=scenario.on_page,
    )
