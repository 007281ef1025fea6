"""The fleet view's HTTP side: the page and its files, its live stream, one server's counters.

Sits at the end of the data flow (... fleetview -> pages -> the browser), on the control
API's application and through its route mechanism (farm.master.http.routes), so the OpenAPI
document lists these routes too:

    GET /                                 the page (farm/master/fleetview/web/index.html)
    GET /web/{file}                       its script modules and style sheet
    GET /api/v1/view/stream               the live stream (text/event-stream;
    farm.master.fleetview.view)
    GET /api/v1/servers/{name}/counters   what one server counted: requests by function code,
                                          exceptions by code, connections, bytes, requests/s

Everything else the page shows or does (a server's units and points, faults, writes) it asks
of the control API's own endpoints, from the browser, as any other client would. The files
ship inside the package (no CDN, no build step) and are read once, when the app is built.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web
from pydantic import BaseModel, Field

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
from farm.master.fleetview.view import FleetView
from farm.master.http.routes import Call, NotFound, Route, Strict, add_routes
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


def add_view(app: web.Application, view: FleetView, token_required: bool) -> None:
    """Serve the fleet view on `app`; its streams end when the app shuts down."""
    add_routes(app, view_routes(view, web_files(token_required)))

    async def on_shutdown(app: web.Application) -> None:
        view.close()

    app.on_shutdown.append(on_shutdown)


def view_routes(view: FleetView, files: dict[str, tuple[bytes, str]]) -> list[Route]:
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
        await response.prepare(call.request)
        subscription = view.subscribe()
        try:
            while (event := await subscription.next()) is not None:
                await response.write(event)
        except ConnectionResetError:
            pass  # the page went away
        finally:
            view.unsubscribe(subscription)
        return response

    async def get_server_counters(call: Call) -> ServerCounters:
        name = call.path_as(ServerPath).name
        if name not in view.places:
            raise NotFound(f"no server named {name!r}; `farm servers` lists them")
        return counters(view, name)

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
            description="See farm/master/fleetview/view.py for the events' fields.",
            content_type="text/event-stream",
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
    ]


def counters(view: FleetView, name: str) -> ServerCounters:
    place = view.places[name]
    slot = view.supervisor.slots[place.slot]
    spec = slot.shard.servers[place.position]
    try:
        values = slot.counters.server(spec.stats_index).tolist()
    except ValueError:  # the farm is stopping
        values = [0] * SERVER_SLOTS
    requests = {str(code): values[REQUESTS + i] for i, code in enumerate(FUNCTION_CODES)}
    requests["other"] = values[REQUESTS + len(FUNCTION_CODES)]
    exceptions = {str(code): values[EXCEPTIONS + i] for i, code in enumerate(EXCEPTION_CODES)}
    exceptions["other"] = values[EXCEPTIONS + len(EXCEPTION_CODES)]
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
    )
