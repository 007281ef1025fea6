"""Who may read and change a farm through its control API: one aiohttp middleware for every
route.

Part of the master's HTTP side (api builds the application with it). Every request, reading
too, first passes the Host check:

0. Host (421): a DNS-rebinding page reaches a farm on localhost under a name of its own
   (`Host: evil.example:9502`), and the browser then lets it read the answers. A request
   is served when its `Host` is the address it arrived at (`127.0.0.1:9502`,
   `10.0.0.5:9502`), `localhost` or any loopback address when it arrived on a loopback
   address, or a name given with `farm up --api-allow-host NAME` (`*`: any). A farm whose
   API has a token and listens on a non-loopback address takes any Host: it is reachable
   by whoever reaches the address, under whatever name (a container's published port, a
   Kubernetes or compose service name), and its token guards every change. An HTTP/1.0
   request with no Host comes from a program, not a browser, and passes.
   The separate metrics listener applies the same rule.

Reading (GET, HEAD) is then open; every other method changes something, and must pass
three checks, in order:

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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
READING = frozenset({"GET", "HEAD"})
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Hosts:
    """The Host names a farm answers to besides its own address (check 0 above)."""

    names: frozenset[str] = frozenset()  # `--api-allow-host`, lowercase
    any: bool = False  # `--api-allow-host '*'`, or a token on a non-loopback address

    @classmethod
    def of(cls, names: Iterable[str], token: bool, loopback_bind: bool) -> Hosts:
        given = frozenset(name.lower().rstrip(".") for name in names)
        return cls(given - {"*"}, "*" in given or (token and not loopback_bind))


def guard(token: str | None, hosts: Hosts | None = None) -> Middleware:
    """The middleware: every request passes the Host check; mutating requests then pass the
    origin, content-type and token checks."""
    expected = f"Bearer {token}".encode() if token else None
    hosts = hosts or Hosts()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        local = _local_address(request)
        if not host_allowed(host, local, hosts):
            return web.json_response({"error": _misdirected(host, local)}, status=421)
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


def host_allowed(host: str | None, local: tuple[IPAddress, int] | None, hosts: Hosts) -> bool:
    """Whether a request whose Host header is `host`, arriving at `local`, is served."""
    if host is None or hosts.any:
        return True
    try:
        name = (urlsplit(f"//{host}").hostname or "").rstrip(".")
    except ValueError:  # a port that is not a number
        return False
    if name in hosts.names:
        return True
    if not name or local is None:
        return False
    address = _unmapped(local[0])
    if name == "localhost":
        return address.is_loopback
    try:
        given = _unmapped(ipaddress.ip_address(name))
    except ValueError:  # a name: whatever it resolves to, it is not ours to trust
        return False
    return given == address or (given.is_loopback and address.is_loopback)


def _misdirected(host: str | None, local: tuple[IPAddress, int] | None) -> str:
    own = "this farm's address"
    if local is not None:
        address = _unmapped(local[0])
        shown = f"[{address}]" if address.version == 6 else str(address)
        own = f"http://{shown}:{local[1]}"
    return (
        f"Host {host!r} is not this farm's: call it as {own} (or localhost on a loopback "
        "address), or start the farm with --api-allow-host NAME for a name of your own"
    )


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
