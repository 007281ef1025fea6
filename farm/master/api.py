"""The control API: JSON over HTTP on the master (aiohttp), 127.0.0.1 by default.

Sits near the end of the data flow (... metrics -> api -> cli): the CLI's `farm status` and
`farm down` are clients of it. Errors are JSON `{"error": "..."}` with a message that says
what to fix. Mutating endpoints (POST) require `Authorization: Bearer TOKEN` when the farm
was started with a token.

    GET  /api/v1/status     farm totals and one entry per worker
    GET  /api/v1/servers    every server: name, address, worker, up
    POST /api/v1/shutdown   stop the farm gracefully
    GET  /metrics           Prometheus text format (also alone on `--metrics-port`)

`GET /api/v1/status` also lists `metrics_urls`, where the farm serves /metrics (the separate
metrics listener first): `farm prometheus-config` builds its scrape config from them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from farm import __version__
from farm.master.metrics import CONTENT_TYPE, FarmMetrics
from farm.master.supervisor import Supervisor

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
                "connections": beat.connections if beat else 0,
                "requests": beat.requests if beat else 0,
                "loop_lag_s": round(beat.loop_lag_s, 4) if beat else None,
                "cpu_s": round(beat.cpu_s, 3) if beat else None,
                "rss_bytes": beat.rss_bytes if beat else None,
            }
        )
    return {
        "version": __version__,
        "uptime_s": round(time.monotonic() - supervisor.origin, 3),
        "servers_total": supervisor.plan.servers_total,
        "servers_ready": supervisor.servers_ready(),
        "stopping": supervisor.stopping,
        "workers": workers,
    }


def servers(supervisor: Supervisor) -> list[dict[str, Any]]:
    rows = []
    for slot in supervisor.slots:
        for spec in slot.shard.servers:
            rows.append(
                {
                    "name": spec.name,
                    "address": spec.address,
                    "template": spec.template,
                    "worker": slot.shard.worker,
                    "up": slot.state == "ready" and spec.name not in slot.failed,
                    "error": slot.failed[spec.name].reason if spec.name in slot.failed else None,
                }
            )
    rows.sort(key=lambda row: str(row["name"]))
    return rows


def _json_errors(token: str | None) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        authorized = request.headers.get("Authorization", "") == f"Bearer {token}"
        if token and request.method != "GET" and not authorized:
            return web.json_response(
                {
                    "error": "this farm needs a token: send 'Authorization: Bearer TOKEN' "
                    "(farm CLI: --api-token or FARM_API_TOKEN)"
                },
                status=401,
            )
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return web.json_response(
                {"error": f"{exc.reason}: {request.method} {request.path}"}, status=exc.status
            )

    return middleware


def metrics_handler(supervisor: Supervisor) -> Handler:
    metrics = FarmMetrics(supervisor)

    async def get_metrics(request: web.Request) -> web.Response:
        # Off the loop: a big farm's scrape takes a while, and heartbeats must keep flowing.
        body = await asyncio.to_thread(metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return get_metrics


def build_metrics_app(supervisor: Supervisor) -> web.Application:
    """The separate metrics listener (`--metrics-port`): /metrics and nothing else."""
    app = web.Application(middlewares=[_json_errors(None)])
    app.router.add_get("/metrics", metrics_handler(supervisor))
    return app


def build_app(
    supervisor: Supervisor,
    request_stop: Callable[[], None],
    token: str | None,
    metrics_urls: tuple[str, ...] = (),
) -> web.Application:
    app = web.Application(middlewares=[_json_errors(token)])

    async def get_status(request: web.Request) -> web.Response:
        return web.json_response({**status(supervisor), "metrics_urls": list(metrics_urls)})

    async def get_servers(request: web.Request) -> web.Response:
        return web.json_response({"servers": servers(supervisor)})

    async def post_shutdown(request: web.Request) -> web.Response:
        request_stop()
        return web.json_response({"stopping": True})

    app.router.add_get("/api/v1/status", get_status)
    app.router.add_get("/api/v1/servers", get_servers)
    app.router.add_post("/api/v1/shutdown", post_shutdown)
    app.router.add_get("/metrics", metrics_handler(supervisor))
    return app
