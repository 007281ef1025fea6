"""The fleet view's HTTP side: the page and its files, its live stream, one server's counters.

Sits at the end of the data flow (... fleetview -> pages -> the browser), on the control
API's application and through its route mechanism (farm.master.http.routes), so the OpenAPI
document lists these routes too:

    GET /                                 the page (farm/master/fleetview/web/index.html)
    GET /web/{file}                       its script modules and style sheet
    GET /api/v1/view/stream               the live stream (text/event-stream;
    farm.master.fleetview.view)
    GET /api/v1/servers/{name}/counters   what one server counted: requests by function code,
                                          exceptions by code, connections, bytes, requests/s,
                                          latency p50/p99 from its duration histogram
    GET /api/v1/servers/{name}/history    its last five minutes: requests/s, errors/s and
                                          latency every 5 s (farm.master.fleetview.history)

Everything else the page shows or does (a server's units and points, faults, writes) it asks
of the control API's own endpoints, from the browser, as any other client would. The files
ship inside the package (no CDN, no build step) and are read once, when the app is built.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web
from pydantic import BaseModel, Field

from farm.config.plan import ServerSpec
from farm.ipc.stats import (
    BYTES_RECEIVED,
    BYTES_SENT,
    CONNECTIONS_ACCEPTED,
    CONNECTIONS_OPEN,
    EXCEPTION_CODES,
    EXCEPTIONS,
    FUNCTION_CODES,
    MALFORMED_FRAMES,
    REQUESTS,
    SERVER_SLOTS,
)
from farm.master.fleetview.history import History, percentiles
from farm.master.fleetview.stream import (
    MAX_SUBSCRIBERS,
    STALL_S,
    TooManySubscribers,
    drop,
    pump,
    unsent_bytes,
)
from farm.master.fleetview.view import FleetView
from farm.master.http.routes import Call, NotFound, Route, Strict, Unavailable, add_routes
from farm.master.http.servers import ServerPath

CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# The page loads nothing from elsewhere and runs no inline script.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class WebFile(Strict):
    file: str = Field(description="A file of the page: app.js, app.css, ...")


class ServerCounters(BaseModel):
    name: str
    address: str
    fleet: str
    template: str
    worker: int
    state: str | None = Field(
        description="up, erroring, faulted or offline, as the fleet view shows it; "
        "null while no page is open"
    )
    requests_per_s: float | None = Field(
        description="Over the fleet view's window (3 s); null while no page is open"
    )
    requests: dict[str, int] = Field(description="By function code ('other' for the rest)")
    exceptions: dict[str, int] = Field(description="Exception responses by exception code")
    connections_open: int
    connections_accepted: int
    bytes_received: int
    bytes_sent: int
    malformed_frames: int
    latency_p50_s: float | None = Field(
        description="Median time a request took since the farm started (from its histogram)"
    )
    latency_p99_s: float | None = Field(
        description="99th percentile of the same; null before its first request"
    )


class ServerHistory(BaseModel):
    interval_s: float = Field(description="Seconds between two samples")
    requests_per_s: list[float] = Field(description="Oldest first, up to five minutes")
    errors_per_s: list[float] = Field(description="Exception responses and malformed frames")
    latency_s: list[float | None] = Field(
        description="Mean time a request took in each interval; null: no request"
    )


def web_files(token_required: bool) -> dict[str, tuple[bytes, str]]:
    """Every file of farm/master/fleetview/web: name -> (content, content type)."""
    folder = resources.files("farm.master.fleetview").joinpath("web")
    files = {}
    for entry in folder.iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if entry.is_file() and suffix in CONTENT_TYPES:
            files[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    # The page asks for the token before its first change when the farm has one.
    page, content_type = files["index.html"]
    flag = b"true" if token_required else b"false"
    files["index.html"] = (page.replace(b"{{token_required}}", flag), content_type)
    return files


def add_view(
    app: web.Application, view: FleetView, token_required: bool, stall_s: float = STALL_S
) -> None:
    """Serve the fleet view on `app`; its streams end when the app shuts down, or when one
    has not drained for `stall_s` seconds. The history samples from when the app starts to
    when it is cleaned up."""
    history = History(view.supervisor)
    add_routes(app, view_routes(view, web_files(token_required), history, stall_s))

    async def on_startup(app: web.Application) -> None:
        history.start()

    async def on_shutdown(app: web.Application) -> None:
        view.close()

    async def on_cleanup(app: web.Application) -> None:
        await history.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)


def view_routes(
    view: FleetView,
    files: dict[str, tuple[bytes, str]],
    history: History,
    stall_s: float = STALL_S,
) -> list[Route]:
    def send(name: str) -> web.Response:
        body, content_type = files[name]
        return web.Response(body=body, content_type=content_type, headers=HEADERS)

    async def get_page(call: Call) -> web.Response:
        return send("index.html")

    async def get_web_file(call: Call) -> web.Response:
        name = call.path_as(WebFile).file
        if name not in files or name == "index.html":
            raise NotFound(f"no file /web/{name}")
        return send(name)

    async def get_view_stream(call: Call) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        try:
            subscription = view.subscribe()
        except TooManySubscribers as exc:
            raise Unavailable(
                f"{MAX_SUBSCRIBERS} fleet view streams are open already; close a page"
            ) from exc
        try:
            await response.prepare(call.request)
            transport = call.request.transport
            drained = await pump(
                subscription, response.write, lambda: unsent_bytes(transport), stall_s
            )
            if not drained and transport is not None:
                drop(transport)  # a client that does not read: its descriptor back now
        except ConnectionResetError:
            pass  # the page went away
        finally:
            view.unsubscribe(subscription)
        return response

    async def get_server_counters(call: Call) -> ServerCounters:
        slot, spec = located(view, call.path_as(ServerPath).name)
        return counters(view, slot, spec)

    async def get_server_history(call: Call) -> ServerHistory:
        slot, spec = located(view, call.path_as(ServerPath).name)
        return ServerHistory(**history.of(slot, spec.stats_index))

    return [
        Route(
            method="GET",
            path="/",
            handler=get_page,
            summary="The fleet view: every server live, one click to a device",
            content_type="text/html",
            tag="page",
        ),
        Route(
            method="GET",
            path="/web/{file}",
            handler=get_web_file,
            summary="The page's script modules (text/javascript) and style sheet (text/css)",
            path_model=WebFile,
            errors=(404,),
            content_type="text/*",
            tag="page",
        ),
        Route(
            method="GET",
            path="/api/v1/view/stream",
            handler=get_view_stream,
            summary="The page's live feed: server-sent events layout, snapshot, then a tick "
            "twice a second with the cells that changed and the farm's totals",
            description="See farm/master/fleetview/view.py for the events' fields. At most "
            f"{MAX_SUBSCRIBERS} streams at once (503 past it); a stream that has not drained "
            f"for `farm up --view-stall-timeout` seconds (default {STALL_S:g}) is closed.",
            content_type="text/event-stream",
            errors=(503,),
            tag="page",
        ),
        Route(
            method="GET",
            path="/api/v1/servers/{name}/counters",
            handler=get_server_counters,
            summary="What one server counted: requests by function code, exceptions by code, "
            "connections, bytes, requests/s",
            path_model=ServerPath,
            response=ServerCounters,
            errors=(404,),
            tag="servers",
        ),
        Route(
            method="GET",
            path="/api/v1/servers/{name}/history",
            handler=get_server_history,
            summary="One server's last five minutes: requests/s, errors/s and latency, a "
            "sample every 5 s (kept by the master whether a page is open or not)",
            path_model=ServerPath,
            response=ServerHistory,
            errors=(404,),
            tag="servers",
        ),
    ]


def located(view: FleetView, name: str) -> tuple[int, ServerSpec]:
    """The slot number and spec of the server called `name`, as the supervisor has it now
    (the view's places are as of its last tick: a scaled fleet may have moved or removed
    the server since); NotFound if there is none."""
    slots = view.supervisor.slots
    place = view.places.get(name)
    if place is not None and place.slot < len(slots):
        servers = slots[place.slot].shard.servers
        if place.position < len(servers) and servers[place.position].name == name:
            return place.slot, servers[place.position]
    for number, slot in enumerate(slots):
        for spec in slot.shard.servers:
            if spec.name == name:
                return number, spec
    raise NotFound(f"no server named {name!r}; `farm servers` lists them")


def counters(view: FleetView, number: int, spec: ServerSpec) -> ServerCounters:
    slot = view.supervisor.slots[number]
    name = spec.name
    try:
        values = slot.counters.server(spec.stats_index).tolist()
    except ValueError:  # the farm is stopping
        values = [0] * SERVER_SLOTS
    requests = {str(code): values[REQUESTS + i] for i, code in enumerate(FUNCTION_CODES)}
    requests["other"] = values[REQUESTS + len(FUNCTION_CODES)]
    exceptions = {str(code): values[EXCEPTIONS + i] for i, code in enumerate(EXCEPTION_CODES)}
    exceptions["other"] = values[EXCEPTIONS + len(EXCEPTION_CODES)]
    p50, p99 = percentiles(values, (0.5, 0.99))
    return ServerCounters(
        name=name,
        address=f"[{spec.host}]:{spec.port}" if ":" in spec.host else spec.address,
        fleet=spec.fleet,
        template=spec.template,
        worker=slot.shard.worker,
        state=view.state(name),
        requests_per_s=view.rate(name),
        requests={code: n for code, n in requests.items() if n},
        exceptions={code: n for code, n in exceptions.items() if n},
        connections_open=values[CONNECTIONS_OPEN],
        connections_accepted=values[CONNECTIONS_ACCEPTED],
        bytes_received=values[BYTES_RECEIVED],
        bytes_sent=values[BYTES_SENT],
        malformed_frames=values[MALFORMED_FRAMES],
        latency_p50_s=p50,
        latency_p99_s=p99,
    )
