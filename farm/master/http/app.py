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
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import BaseModel

from farm import __version__
from farm.files import BODY_BYTES
from farm.ipc.stats import ShardCounters
from farm.master.faults.table import FaultTable
from farm.master.fleet.inventory import Inventory
from farm.master.fleet.scale import Scaler
from farm.master.fleet.switch import Switch
from farm.master.fleetview.pages import add_view
from farm.master.fleetview.stream import STALL_S
from farm.master.fleetview.view import FleetView, ViewSources, read_counters
from farm.master.http.access import Hosts, guard
from farm.master.http.faults import fault_routes
from farm.master.http.fleets import fleet_routes
from farm.master.http.observe.clients import client_routes, report_routes
from farm.master.http.observe.journal import journal_routes
from farm.master.http.observe.trace import trace_routes
from farm.master.http.openapi import openapi_route
from farm.master.http.probes import live_route
from farm.master.http.routes import Call, Route, add_routes
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

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Readiness(BaseModel):
    """GET /api/v1/ready: 200 with ready true, or 503 with ready false and why in `error`."""

    ready: bool
    servers_ready: int
    servers_total: int
    error: str | None = None


def readiness(supervisor: Supervisor) -> Readiness:
    """Ready means every server up: a probe should not send traffic to a half-started farm.

    Servers stopped through the API (or by an offline fault) are offline on purpose and do
    not count: a test that takes a device down must not take the whole farm out of its
    Service's endpoints.
    """
    total, ready = supervisor.plan.servers_total, supervisor.servers_ready()
    wanted = total - supervisor.servers_stopped()
    if supervisor.stopping:
        error: str | None = "stopping"
    elif ready < wanted:
        error = f"{ready} of {wanted} servers up"
    else:
        error = None
    return Readiness(ready=error is None, servers_ready=ready, servers_total=total, error=error)


def _requests(counters: ShardCounters) -> int:
    """Requests a shard's servers answered so far, summed here from the memory the master
    owns (a worker summing them for its heartbeat touched every page of its counters, idle
    servers' too); 0 once a stopping farm has released it."""
    try:
        return int(read_counters(counters)[0].sum())
    except ValueError:
        return 0


def status(supervisor: Supervisor) -> dict[str, Any]:
    now = time.monotonic()
    workers = []
    for slot in supervisor.slots:
        beat = slot.heartbeat
        workers.append(
            {
                "worker": slot.shard.worker,
                "pid": slot.pid,
                "state": slot.state,
                "servers": len(slot.shard.servers),
                "servers_up": slot.servers_up,
                "servers_failed": len(slot.failed),
                "heartbeat_age_s": round(now - slot.last_heartbeat, 3) if beat else None,
                "restarts": slot.restarts,
                "last_failure": slot.last_failure,  # why its last worker was replaced
                "connections": beat.connections if beat else 0,
                "requests": _requests(slot.counters),
                "loop_lag_s": round(beat.loop_lag_s, 4) if beat else None,
                "cpu_s": round(beat.cpu_s, 3) if beat else None,
                "rss_bytes": beat.rss_bytes if beat else None,
            }
        )
    return {
        "version": __version__,
        # The master's process: `farm down` on the same host waits for it to be gone, which
        # is when every port is released (the API is the first thing the stop closes).
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - supervisor.origin, 3),
        # Which part of the fleet this farm serves (farm.config.shards): index `index` of
        # `count` shards, fleet servers start..stop-1 of fleet_total.
        "shard": supervisor.plan.fleet_slice.as_json(),
        "servers_total": supervisor.plan.servers_total,
        "servers_ready": supervisor.servers_ready(),
        "servers_stopped": supervisor.servers_stopped(),
        "stopping": supervisor.stopping,
        # What GET /api/v1/ready answers 200 for: the readiness probes' condition.
        "ready": readiness(supervisor).ready,
        "workers": workers,
    }


def _json_errors() -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return web.json_response(
                {"error": f"{exc.reason}: {request.method} {request.path}"}, status=exc.status
            )

    return middleware


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


def build_metrics_app(
    supervisor: Supervisor,
    faults: FaultTable | None = None,
    scenario: ScenarioPlayer | None = None,
    hosts: Hosts | None = None,
    clients: ClientTallies | None = None,
) -> web.Application:
    """The separate metrics listener (`--metrics-port`): /metrics and nothing else."""
    app = web.Application(
        middlewares=[_json_errors(), guard(None, hosts)], client_max_size=BODY_BYTES
    )
    add_routes(app, [metrics_route(supervisor, faults, scenario, clients)])
    return app


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
    """The control API; `routes` are more routes to serve (and document) beside the farm's.
    `hosts`: the Host names it answers to (farm.master.http.access); `state`: how the state
    file's saves go, for GET /api/v1/status (None: no state file); `view_stall_s`: how long
    a fleet view stream may go undrained before it is closed; `clients`: the per-client
    summary /metrics shows (farm.master.observe.tallies; None: no client families)."""
    inventory = inventory or Inventory(supervisor)
    switch = switch or Switch(supervisor)
    faults = faults or FaultTable(supervisor, switch)
    scaler = scaler or Scaler(supervisor, (inventory.refresh, switch.refresh, faults.refresh))
    scenario = scenario or ScenarioPlayer(
        StepActions(faults, switch, inventory, scaler.scale, scaler.counts),
        supervisor.plan.fleets,
        supervisor.plan.templates,
    )
    # Bodies past files.BODY_BYTES are refused with 413 before they are read.
    app = web.Application(
        middlewares=[_json_errors(), guard(token, hosts)], client_max_size=BODY_BYTES
    )

    async def get_status(call: Call) -> web.Response:
        return web.json_response(
            {
                **status(supervisor),
                "metrics_urls": list(metrics_urls),
                "scenario": scenario.summary(),
                "state": state(),
            }
        )

    async def get_ready(call: Call) -> web.Response:
        body = readiness(supervisor)
        return web.Response(
            text=body.model_dump_json(exclude_none=True),
            content_type="application/json",
            status=200 if body.ready else 503,
        )

    async def shutdown(call: Call) -> web.Response:
        request_stop()
        return web.json_response({"stopping": True})

    farm_routes = [
        Route(
            method="GET",
            path="/api/v1/status",
            handler=get_status,
            summary="Farm totals, one entry per worker, and where /metrics is served",
        ),
        Route(
            method="GET",
            path="/api/v1/ready",
            handler=get_ready,
            summary="200 when every server is up; 503 before, while a worker restarts, or stopping",
            response=Readiness,
            errors=(503,),
        ),
        Route(
            method="POST",
            path="/api/v1/shutdown",
            handler=shutdown,
            summary="Stop the farm gracefully (answers at once)",
        ),
    ]
    add_routes(app, farm_routes)
    add_routes(app, server_routes(inventory, switch))
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
    add_routes(app, scenario_routes(scenario))
    add_routes(app, [targets_route(supervisor), live_route(supervisor)])
    add_routes(app, fleet_routes(scaler))
    add_routes(app, routes)
    view = FleetView(supervisor, sources=view_sources(faults, scenario))
    add_view(app, view, bool(token), view_stall_s)
    metrics = metrics_route(supervisor, faults, scenario, clients)
    add_routes(app, [metrics, openapi_route(token_required=bool(token))])
    return app


def view_sources(faults: FaultTable, scenario: ScenarioPlayer) -> ViewSources:
    """What the fleet view shows of the fault table (who is faulted, by which kinds, how many
    faults) and of the scenario (the step it is at)."""
    return ViewSources(
        faulted=lambda: faults.on_server.keys(),
        fault_kinds=faults.kinds_by_server,
        faults_active=lambda: sum(faults.active_by_kind().values()),
        scenario=scenario.on_page,
    )
