"""The one client of a farm's control API: the CLI, `farm bench` and users' own tests use it.

    from farm.client import FarmClient
    client = FarmClient("http://127.0.0.1:9502", token=None)
    client.status()["servers_ready"]
    [s.name for s in client.servers() if s.up]

Only this module speaks HTTP to the API. Every failure reaches the caller as a `FarmError`:
`FarmUnreachable` when no farm answers (the one place that turns that into its line), and
`FarmAPIError` (with the HTTP status and the API's own message) when the farm refused a
call. The API's options (`--api-host`, `--api-port`, `--api-token`/FARM_API_TOKEN) are
declared here once, for every command that talks to a farm or serves one.
"""

from __future__ import annotations

import functools
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import click

from farm.errors import FarmError, FarmUnreachable

DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 9502
TIMEOUT_S = 10.0


class FarmAPIError(FarmError):
    """The farm answered, and refused the call (4xx) or failed it (5xx)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerInfo:
    """One server as the farm reports it."""

    name: str
    address: str  # HOST:PORT ([HOST]:PORT for IPv6)
    template: str
    worker: int
    up: bool
    error: str | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.address.rpartition(":")
        return host.strip("[]"), int(port)


class FarmClient:
    """A farm's control API at `url` (http://HOST:PORT), with the token mutating calls need."""

    def __init__(self, url: str, token: str | None = None, timeout: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def at(cls, host: str, port: int, token: str | None = None) -> FarmClient:
        netloc = f"[{host}]" if ":" in host else host
        return cls(f"http://{netloc}:{port}", token)

    @property
    def netloc(self) -> str:
        """HOST:PORT of the API, as the user would pass it to `--farm`."""
        return urlsplit(self.url).netloc

    # -- the API ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Farm totals, one entry per worker, and where the farm serves /metrics."""
        return dict(self.request("GET", "/api/v1/status"))

    def ready(self) -> bool:
        """True when every server is up (GET /api/v1/ready answers 200, else 503)."""
        try:
            self.request("GET", "/api/v1/ready")
        except FarmAPIError as error:
            if error.status == 503:
                return False
            raise
        return True

    def servers(self) -> list[ServerInfo]:
        rows = self.request("GET", "/api/v1/servers")["servers"]
        try:
            return [ServerInfo(**{k: row[k] for k in _SERVER_FIELDS if k in row}) for row in rows]
        except (TypeError, KeyError) as exc:
            raise FarmError(f"{self.url}/api/v1/servers does not list servers ({exc})") from exc

    def targets(self) -> list[tuple[str, int]]:
        """(host, port) of every server that is up: what a load generator connects to."""
        return [server.host_port for server in self.servers() if server.up]

    def shutdown(self) -> None:
        """Ask the farm to stop gracefully (returns at once; the farm stops meanwhile)."""
        self.request("POST", "/api/v1/shutdown", {})

    # -- the transport ---------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One call: JSON in, JSON out; every failure as a FarmError with one line."""
        url = self.url + path
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, method=method, data=data)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            raise FarmAPIError(f"{method} {path}: {_error_text(exc)}", exc.code) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise FarmUnreachable(
                f"no farm answers at {self.url} ({getattr(exc, 'reason', exc)}); is `farm up` "
                "running, and are --api-host/--api-port (or --farm) the ones it serves on?"
            ) from exc
        except ValueError as exc:  # not JSON: something else listens there
            raise FarmError(f"{url} does not answer as a farm's API ({exc})") from exc


_SERVER_FIELDS = ("name", "address", "template", "worker", "up", "error")


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        message = json.load(exc).get("error")
    except (ValueError, AttributeError, OSError):
        message = None
    return f"{exc.code} {message or exc.reason}"


# -- the API's command-line options, declared once ---------------------------------------

F = TypeVar("F", bound=Callable[..., Any])

api_host_option = click.option(
    "--api-host",
    default=DEFAULT_API_HOST,
    show_default=True,
    help="Address of the farm's control API.",
)
api_port_option = click.option(
    "--api-port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_API_PORT,
    show_default=True,
    help="Port of the farm's control API.",
)
api_token_option = click.option(
    "--api-token",
    envvar="FARM_API_TOKEN",
    default=None,
    help="Token for mutating API calls [env: FARM_API_TOKEN].",
)


def api_options(command: F) -> F:
    """--api-host, --api-port and --api-token, handed to the command as `client: FarmClient`."""

    @functools.wraps(command)
    def wrapper(
        *args: Any, api_host: str, api_port: int, api_token: str | None, **kwargs: Any
    ) -> Any:
        return command(*args, client=FarmClient.at(api_host, api_port, api_token), **kwargs)

    return cast(F, api_host_option(api_port_option(api_token_option(wrapper))))
