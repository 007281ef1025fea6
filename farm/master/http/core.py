"""The control API's first part: what it serves from the moment it listens, and the door
to the rest.

A farm's API listens while its workers boot, and what a client asks first is whether the
farm is up: `GET /api/v1/status`, `GET /api/v1/ready` (and `POST /api/v1/shutdown`, to stop
it meanwhile). Those answer from the supervisor alone, through this module, which imports
aiohttp and numpy and none of the rest (pydantic, prometheus_client, the fault kinds'
models, the fleet view: about 0.35 s of a start's CPU). Every other path reaches the rest
through `Later`, one resource at the root of the router, resolved last: the first request
for one (or the farm being ready, farm.master.run) loads the rest once, and the request is
then routed in the rest's application as if it had been there from the start (its routes,
its answers, this application's middlewares in front). A request that comes before the
rest is loaded waits for it; none is refused for it.

`status` and `readiness` are what farm.master.http.app documents and serves in a full
application (tests build one at once); this module's handlers answer the same JSON.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt
from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_urldispatcher import AbstractResource, AbstractRoute
from yarl import URL

from farm import __version__
from farm.errors import PortBusyError
from farm.files import BODY_BYTES
from farm.ipc.stats import EXCEPTIONS, HEADER_SLOTS, REQUESTS, SERVER_SLOTS, ShardCounters
from farm.master.http.access import Hosts, guard
from farm.master.supervision.supervisor import Supervisor

if TYPE_CHECKING:
    from aiohttp.web_urldispatcher import _InfoDict

Summary = Callable[[], dict[str, Any] | None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


def readiness(supervisor: Supervisor) -> dict[str, Any]:
    """Ready means every server up: a probe should not send traffic to a half-started farm.

    Servers stopped through the API (or by an offline fault) are offline on purpose and do
    not count: a test that takes a device down must not take the whole farm out of its
    Service's endpoints. `error` says why not ready (absent when ready).
    """
    total, ready = supervisor.plan.servers_total, supervisor.servers_ready()
    wanted = total - supervisor.servers_stopped()
    if supervisor.stopping:
        error: str | None = "stopping"
    elif ready < wanted:
        error = f"{ready} of {wanted} servers up"
    else:
        error = None
    answer: dict[str, Any] = {"ready": error is None, "servers_ready": ready}
    answer["servers_total"] = total
    if error is not None:
        answer["error"] = error
    return answer


def server_slots(counters: ShardCounters) -> npt.NDArray[np.uint64]:
    """A shard's counters, a row of `SERVER_SLOTS` per counters index
    (`ServerSpec.stats_index`), read in place from the memory the master owns. Raises
    ValueError once a stopping farm has released it."""
    n = counters.servers
    slots = np.frombuffer(counters.slots, np.uint64, count=HEADER_SLOTS + n * SERVER_SLOTS)
    return slots[HEADER_SLOTS:].reshape(n, SERVER_SLOTS)


def requests_answered(counters: ShardCounters) -> int:
    """Requests a shard's servers answered so far, summed here from the memory the master
    owns (a worker summing them for its heartbeat touched every page of its counters, idle
    servers' too); 0 once a stopping farm has released it."""
    try:
        table = server_slots(counters)
    except ValueError:
        return 0
    return int(table[:, REQUESTS:EXCEPTIONS].sum(dtype=np.int64))


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
                "requests": requests_answered(slot.counters),
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
        "ready": readiness(supervisor)["ready"],
        "workers": workers,
    }


def json_errors() -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return web.json_response(
                {"error": f"{exc.reason}: {request.method} {request.path}"}, status=exc.status
            )

    return middleware


def repeated_query(request: web.Request) -> str | None:
    """The first query key given more than once, which every route refuses (400)."""
    query = request.query
    repeated = sorted({key for key in query if len(query.getall(key)) > 1})
    return repeated[0] if repeated else None


def refusing_repeats(handler: Handler) -> Handler:
    """`handler`, refusing a repeated query key as every route of the API does."""

    async def checked(request: web.Request) -> web.StreamResponse:
        key = repeated_query(request)
        if key is not None:
            return web.json_response(
                {"error": f"query '{key}' is given more than once; give it once"}, status=400
            )
        return await handler(request)

    checked.__name__ = handler.__name__
    return checked


@dataclass(frozen=True, slots=True, kw_only=True)
class Farm:
    """What the first routes answer from: the supervisor, how to stop the farm, and the
    parts of the status the rest fills in once loaded (None meanwhile: no scenario can have
    been given to a player that does not exist yet)."""

    supervisor: Supervisor
    request_stop: Callable[[], None]
    metrics_urls: tuple[str, ...] = ()
    scenario: Summary = lambda: None
    state: Summary = lambda: None


def first_handlers(farm: Farm) -> dict[tuple[str, str], Handler]:
    """(method, path) -> handler of the routes served from the start."""

    async def get_status(request: web.Request) -> web.Response:
        return web.json_response(
            {
                **status(farm.supervisor),
                "metrics_urls": list(farm.metrics_urls),
                "scenario": farm.scenario(),
                "state": farm.state(),
            }
        )

    async def get_ready(request: web.Request) -> web.Response:
        body = readiness(farm.supervisor)
        return web.Response(
            text=json.dumps(body, separators=(",", ":")),
            content_type="application/json",
            status=200 if body["ready"] else 503,
        )

    async def shutdown(request: web.Request) -> web.Response:
        farm.request_stop()
        return web.json_response({"stopping": True})

    return {
        ("GET", "/api/v1/status"): refusing_repeats(get_status),
        ("GET", "/api/v1/ready"): refusing_repeats(get_ready),
        ("POST", "/api/v1/shutdown"): refusing_repeats(shutdown),
    }


def first_app(
    token: str | None,
    hosts: Hosts | None,
    handlers: dict[tuple[str, str], Handler],
    later: Later | None = None,
) -> web.Application:
    """An application with every route's middlewares (farm.master.http.access), `handlers`,
    and `later` (the rest, loaded when first asked for) behind them."""
    # Bodies past files.BODY_BYTES are refused with 413 before they are read.
    app = web.Application(
        middlewares=[json_errors(), guard(token, hosts)], client_max_size=BODY_BYTES
    )
    for (method, path), handler in handlers.items():
        app.router.add_route(method, path, handler)
    if later is not None:
        app.router.register_resource(later)
        app.on_shutdown.append(later.shutdown)
        app.on_cleanup.append(later.cleanup)
    return app


Load = Callable[[], Awaitable[web.Application]]


class Later(AbstractResource):
    """Every path the application does not route itself, routed in another application
    that is loaded (once, by `load`) when the first such request comes or `loaded()` is
    first awaited. Registered at the router's root ("/"), which the router tries after every
    longer path, so the first routes never wait for it. The other application's signals
    (the fleet view's history and streams) run with this one's: started when it is loaded,
    shut down and cleaned up with this one."""

    def __init__(self, load: Load) -> None:
        super().__init__()
        self._load = load
        self.loaded = Once(self._start)

    async def _start(self) -> web.Application:
        app = await self._load()
        app.on_startup.freeze()
        await app.startup()
        app.freeze()
        return app

    async def _stopped(self) -> web.Application | None:
        """The loaded application, or None if this one stops before it is loaded (a load
        under way is cancelled)."""
        await self.loaded.cancel()
        return self.loaded.value

    async def shutdown(self, _: web.Application) -> None:
        app = await self._stopped()
        if app is not None:
            await app.shutdown()

    async def cleanup(self, _: web.Application) -> None:
        app = await self._stopped()
        if app is not None:
            await app.cleanup()

    async def resolve(self, request: web.Request) -> tuple[Any, set[str]]:
        # Shielded: a client that goes away must not cancel the load for the others.
        app = await asyncio.shield(self.loaded())
        match_info = await app.router.resolve(request)
        match_info.add_app(app)
        error = match_info.http_exception
        if error is None:
            return match_info, set()
        # Not there either: the outer router answers 404, or 405 with every allowed method.
        return None, set(getattr(error, "allowed_methods", ()))

    @property
    def canonical(self) -> str:
        return "/"

    def url_for(self, **kwargs: str) -> URL:
        raise RuntimeError("the routes loaded later have no URLs to build here")

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("the routes loaded later are served at the root only")

    def get_info(self) -> _InfoDict:
        return {}

    def raw_match(self, path: str) -> bool:
        return False

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[AbstractRoute]:
        return iter(())


class Once(Generic[T]):
    """`load` run once, by the first call; every call returns the same task."""

    def __init__(self, load: Callable[[], Awaitable[T]]) -> None:
        self._load = load
        self._task: asyncio.Task[T] | None = None

    def __call__(self) -> asyncio.Task[T]:
        if self._task is None:
            self._task = asyncio.ensure_future(self._load())
        return self._task

    @property
    def started(self) -> bool:
        return self._task is not None

    async def cancel(self) -> None:
        """Cancel a load under way and wait for it to end (nothing if none is under way)."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @property
    def value(self) -> T | None:
        """What `load` returned, None before (or if it failed)."""
        task = self._task
        if task is None or not task.done() or task.cancelled() or task.exception():
            return None
        return task.result()


def part_of(whole: Once[T], pick: Callable[[T], web.Application | None]) -> Load:
    """A `Later`'s load: the application `pick` takes from what `whole` loads (shielded: a
    `Later` that stops waiting must not cancel the load for the others)."""

    async def load() -> web.Application:
        app = pick(await asyncio.shield(whole()))
        assert app is not None, "the part was not built"
        return app

    return load


async def start_site(
    app: web.Application, host: str, port: int, option: str = "--api-port"
) -> web.AppRunner:
    """Serve `app` on host:port; raises PortBusyError."""
    # A client still connected must not hold the stop up for aiohttp's default 60 s.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        hint = ""
        if exc.errno == errno.EADDRINUSE and option == "--api-port":
            hint = (
                f" (a farm already running there? `farm status --api-port {port}` shows it, "
                f"`farm down --api-port {port}` stops it)"
            )
        raise PortBusyError(
            f"control API cannot listen on {host}:{port}: {exc.strerror or exc}; "
            f"pick another {option}{hint}"
        ) from exc
    return runner
