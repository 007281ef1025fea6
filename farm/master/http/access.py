"""Who may change a farm through its control API: one aiohttp middleware for every route.

Part of the master's HTTP side (api builds the application with it). Reading (GET, HEAD)
is open; every other method changes something, and must pass three checks, in order:

1. Origin (403): a browser adds `Origin` to a cross-site request. Without the check, any
   web page the user opens could `POST /api/v1/shutdown` to a farm on localhost (a form
   or `fetch` with no body is a CORS "simple request": the browser sends it without
   asking). A request with an `Origin` is accepted only from the farm's own origin:
   http://ADDRESS:PORT where the request arrived (so also right for port 0 and for a
   wildcard `--api-host`), or http://localhost:PORT when that address is a loopback one.
   A host *name* other than localhost is refused: a DNS-rebinding page would bring one.
   Programs (the farm CLI, curl, a user's test) send no Origin, and pass.
2. Content type (415): `application/json` only. A browser cannot send that cross-site
   without a preflight, which the check above refuses, so this closes the form-post path
   even for a browser that sends no Origin.
3. Token (401): when the farm was started with `--api-token`, `Authorization: Bearer
   TOKEN`, compared in constant time. The token is never logged nor echoed.

Every refusal is JSON `{"error": "..."}` saying what to do instead, and changes nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
READING = frozenset({"GET", "HEAD"})
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def guard(token: str | None) -> Middleware:
    """The middleware: mutating requests pass the origin, content-type and token checks."""
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in READING:
            return await handler(request)
        refusal = _refusal(request, expected)
        if refusal is not None:
            status, message = refusal
            return web.json_response({"error": message}, status=status)
        return await handler(request)

    return middleware


def _refusal(request: web.Request, expected: bytes | None) -> tuple[int, str] | None:
    """(status, message) when `request` may not change the farm; None when it may."""
    origin = request.headers.get("Origin")
    if origin is not None and not own_origin(origin, _local_address(request)):
        return 403, (
            f"cross-origin request refused: Origin {origin} is not this farm's own; "
            "call the API from a program (which sends no Origin) or from a page the farm serves"
        )
    if request.content_type != "application/json":
        return 415, (
            f"{request.method} {request.path} takes a JSON body: send it with "
            "'Content-Type: application/json' ({} when there is nothing to say)"
        )
    if expected is not None:
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected):
            return 401, (
                "this farm needs its token: send 'Authorization: Bearer TOKEN' "
                "(farm CLI: --api-token or FARM_API_TOKEN)"
            )
    return None


def _local_address(request: web.Request) -> tuple[IPAddress, int] | None:
    """The address and port the request arrived at (the API's own, as the client sees it)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        return None
    return ipaddress.ip_address(sockname[0].split("%")[0]), int(sockname[1])


def own_origin(origin: str, local: tuple[IPAddress, int] | None) -> bool:
    """True when `origin` is http://ADDRESS:PORT of `local` (or localhost on loopback)."""
    if local is None:
        return False
    address, port = _unmapped(local[0]), local[1]
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or 80
    except ValueError:  # "null", a port that is not a number
        return False
    if parts.scheme != "http" or not parts.hostname or origin_port != port:
        return False
    if parts.hostname == "localhost":
        return address.is_loopback
    try:
        return _unmapped(ipaddress.ip_address(parts.hostname)) == address
    except ValueError:  # a host name: whatever it resolves to, it is not ours to trust
        return False


def _unmapped(address: IPAddress) -> IPAddress:
    """An IPv4 client of a dual-stack socket arrives as ::ffff:a.b.c.d: compare it as IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
