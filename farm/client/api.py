"""`FarmClient`: one method per call of the control API, over HTTP with JSON bodies.

Every failure reaches the caller as a `FarmError`: `FarmUnreachable` when no farm answers
(the one place that turns that into its line), `FarmAPIError` (with the HTTP status and
the API's own message) when the farm refused a call.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from farm.client.answers import (
    DeviceList,
    DeviceTarget,
    PointTarget,
    PointValue,
    ServerDetail,
    ServerInfo,
    ServerPage,
    Switched,
    server_info,
)
from farm.client.observed import ClientInfo, WriteRecord, client_info, write_record
from farm.client.selectors import FaultInfo, Target, target_body
from farm.errors import ConfigError, FarmError, FarmUnreachable

TIMEOUT_S = 10.0


class FarmAPIError(FarmError):
    """The farm answered, and refused the call (4xx) or failed it (5xx)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class FarmClient:
    """A farm's control API at `url` (http://HOST:PORT), with the token mutating calls need.

    Requests go straight to the farm: HTTP_PROXY and the like are ignored (urllib would
    otherwise send every call, the bearer token with it, to whatever proxy the environment
    names). With `proxy` (http://PROXY:PORT), calls go through it, and the token never does:
    a call that needs it is refused before anything is sent.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = TIMEOUT_S,
        proxy: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.proxy = proxy
        proxies = {} if proxy is None else {"http": proxy}
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies))

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

    def servers(
        self,
        fleet: str | None = None,
        name: str | None = None,
        worker: int | None = None,
        state: str | None = None,
    ) -> list[ServerInfo]:
        """Every server matching the filters (all given must match): a fleet, a name glob
        ('plc-*'), the worker hosting it, its state (up, offline or faulted)."""
        return self.page(fleet=fleet, name=name, worker=worker, state=state).servers

    def page(
        self,
        fleet: str | None = None,
        name: str | None = None,
        worker: int | None = None,
        state: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> ServerPage:
        """`servers`, `limit` at a time from `offset` (None: all)."""
        query = {"fleet": fleet, "name": name, "worker": worker, "state": state, "limit": limit}
        query["offset"] = offset or None
        data = self.request("GET", "/api/v1/servers" + _query(query))
        try:
            return ServerPage(
                servers=[server_info(row) for row in data["servers"]],
                total=int(data.get("total", len(data["servers"]))),
                next_offset=data.get("next_offset"),
            )
        except (TypeError, KeyError) as exc:
            raise FarmError(f"{self.url}/api/v1/servers does not list servers ({exc})") from exc

    def server(self, name: str) -> ServerDetail:
        """One server: address, worker, units, points with their values, faults, connections."""
        data = self.request("GET", _server_path(name))
        return ServerDetail(
            info=server_info(data),
            connections=int(data["connections"]),
            units=list(data["units"]),
            points=[PointValue(**point) for point in data["points"]],
            faults=list(data["faults"]),
        )

    def read(
        self, name: str, table: str, address: int = 0, count: int = 1, unit: int = 255
    ) -> list[int]:
        """`count` entries of a table from `address` (bits as 0/1); unit 255: the first."""
        path = _table_path(name, unit, table) + _query({"address": address, "count": count})
        return list(self.request("GET", path)["values"])

    def write(
        self, name: str, table: str, address: int, values: list[int], unit: int = 255
    ) -> list[int]:
        """Write entries from `address` (registers 0-65535, bits 0/1); returns them read back.

        Any table, input registers and discrete inputs too: the API writes as the operator.
        """
        body = {"address": address, "values": values}
        return list(self.request("PUT", _table_path(name, unit, table), body)["values"])

    def point(self, name: str, point: str) -> PointValue:
        """A point's engineering value, decoded by its type, scale and byte/word order."""
        return PointValue(**self.request("GET", _point_path(name, point)))

    def set_point(self, name: str, point: str, value: float | str) -> PointValue:
        """Encode `value` by the point's type, scale and orders and write it; read back."""
        return PointValue(**self.request("PUT", _point_path(name, point), {"value": value}))

    def writes(self, name: str, after: int = 0, limit: int | None = None) -> list[WriteRecord]:
        """The server's journalled writes numbered above `after`, oldest first."""
        params: dict[str, Any] = {"after": after}
        if limit is not None:
            params["limit"] = limit
        data = self.request("GET", _server_path(name) + "/writes" + _query(params))
        return [write_record(row) for row in data["writes"]]

    def clients(self, server: str | None = None) -> list[ClientInfo]:
        """The system under test's clients and their polling (`server`: its clients only,
        each with its polls in detail)."""
        data = self.request("GET", "/api/v1/clients" + _query({"server": server}))
        return [client_info(row) for row in data["clients"]]

    def report(self, since: float = 60.0, fleet: str | None = None) -> dict[str, Any]:
        """Per client and fleet over the last `since` seconds: servers polled and never
        polled, poll intervals, writes; and how each client behaved around the faults that
        ended (its connection attempts while offline, its time to poll again). The JSON of
        GET /api/v1/report, as the OpenAPI document describes it."""
        data: dict[str, Any] = self.request(
            "GET", "/api/v1/report" + _query({"since": since, "fleet": fleet})
        )
        return data

    def trace(self, name: str, seconds: float = 10.0, client: str = "") -> dict[str, Any]:
        """Trace a server for `seconds` (at most 60): every request and answer, decoded
        (the JSON of GET /api/v1/servers/{name}/trace; the call returns when it ends)."""
        query = _query({"seconds": seconds, "client": client or None})
        data: dict[str, Any] = self.request("GET", _server_path(name) + "/trace" + query)
        return data

    def stop(self, name: str) -> Switched:
        """Take a server offline: its port closes (connections refused, open ones dropped)."""
        return Switched(**self.request("POST", _server_path(name) + "/stop", {}))

    def start(self, name: str) -> Switched:
        """Bring a stopped server back, with its values (FarmAPIError 409: port taken)."""
        return Switched(**self.request("POST", _server_path(name) + "/start", {}))

    def fault(
        self,
        kind: str,
        target: Target,
        duration: str | float | None = None,
        start_in: str | float | None = None,
        probability: float | None = None,
        **params: Any,
    ) -> FaultInfo:
        """Put a fault on servers, in effect when this returns: `fault("delay", "dev-1", ms=300)`.

        `duration` and `start_in` take seconds or text ('500ms', '30s', '5m'); None: until
        cleared, and at once. `params` are the kind's own (ms, code, mode, segments, ...)
        and the narrowing ones (function_codes, unit, addresses={"start": 0, "end": 9}).
        """
        body: dict[str, Any] = {"kind": kind, "target": target_body(target), **params}
        given = {"duration": duration, "start_in": start_in, "probability": probability}
        body.update({key: value for key, value in given.items() if value is not None})
        return FaultInfo.from_json(self.request("POST", "/api/v1/faults", body))

    def faults(self) -> list[FaultInfo]:
        """Every fault of the farm, scheduled or active."""
        return [FaultInfo.from_json(row) for row in self.request("GET", "/api/v1/faults")["faults"]]

    def get_fault(self, fault_id: int) -> FaultInfo:
        return FaultInfo.from_json(self.request("GET", f"/api/v1/faults/{int(fault_id)}"))

    def clear_fault(self, fault_id: int) -> FaultInfo:
        """Clear one fault; returns it as it was."""
        return FaultInfo.from_json(self.request("DELETE", f"/api/v1/faults/{int(fault_id)}"))

    def clear_faults(self) -> list[int]:
        """Clear every fault; returns the ids cleared."""
        return [int(each) for each in self.request("DELETE", "/api/v1/faults")["cleared"]]

    def play_scenario(self, scenario: Mapping[str, Any]) -> dict[str, Any]:
        """Play a scenario (a config file's `scenario:` section) from now; its timeline.

        The farm checks it first: a step it cannot play is a FarmAPIError (422) naming the
        step, and nothing is applied; 409 while another scenario plays.
        """
        return dict(self.request("POST", "/api/v1/scenario", dict(scenario)))

    def scenario(self) -> dict[str, Any]:
        """The scenario's timeline: state, play, current step, each step's state."""
        return dict(self.request("GET", "/api/v1/scenario"))

    def stop_scenario(self) -> dict[str, Any]:
        """Stop the scenario and undo what it applied (faults, stops, sets, scaling)."""
        return dict(self.request("DELETE", "/api/v1/scenario"))

    def scale(self, fleet: str, count: int) -> dict[str, Any]:
        """Grow or shrink a fleet to `count` servers while the farm runs; what changed."""
        path = f"/api/v1/fleets/{quote(fleet, safe='')}/scale"
        return dict(self.request("POST", path, {"count": count}))

    def targets(self, transport: str | None = None) -> list[tuple[str, int]]:
        """(host, port) of every server that is up (and speaks `transport`, if given): what
        a load generator connects to."""
        return [
            server.host_port
            for server in self.servers()
            if server.up and transport in (None, server.transport)
        ]

    def device_list(self) -> DeviceList:
        """Every device this farm serves, with its points (GET /api/v1/targets)."""
        body = self.request("GET", "/api/v1/targets")
        try:
            templates = {
                name: (
                    tuple(int(u) for u in row["unit_ids"]),
                    tuple(PointTarget(**point) for point in row["points"]),
                )
                for name, row in body["templates"].items()
            }
            devices = tuple(
                DeviceTarget(
                    **device,
                    unit_ids=templates[device["template"]][0],
                    points=templates[device["template"]][1],
                )
                for device in body["devices"]
            )
            shard = body["shard"]
            return DeviceList(
                shard_index=int(shard["index"]),
                shard_count=int(shard["count"]),
                fleet_total=int(shard["fleet_total"]),
                devices=devices,
            )
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise FarmError(f"{self.url}/api/v1/targets does not list devices ({exc!r})") from exc

    def shutdown(self) -> None:
        """Ask the farm to stop gracefully (returns at once; the farm stops meanwhile)."""
        self.request("POST", "/api/v1/shutdown", {})

    # -- the transport ---------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One call: JSON in, JSON out; every failure as a FarmError with one line."""
        url = self.url + path
        if body is None and method not in ("GET", "HEAD"):
            body = {}  # the API takes a change only as JSON, a DELETE too (farm.master.http.access)
        data = None if body is None else json.dumps(body).encode()
        try:
            request = urllib.request.Request(url, method=method, data=data)
        except ValueError as exc:  # "Invalid IPv6 URL": a host with brackets in it
            raise self._not_an_address(exc) from exc
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token and self.proxy is None:
            request.add_header("Authorization", f"Bearer {self.token}")
        elif self.token and method not in ("GET", "HEAD"):
            raise ConfigError(
                f"{method} {path} needs the farm's token, which is never sent through a proxy "
                f"({self.proxy}); call the farm directly"
            )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            raise FarmAPIError(f"{method} {path}: {_error_text(exc)}", exc.code) from exc
        except http.client.InvalidURL as exc:  # a port that is not a number, a space
            raise self._not_an_address(exc) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise FarmUnreachable(
                f"no farm answers at {self.url} ({getattr(exc, 'reason', exc)}); is `farm up` "
                "running, and are --api-host/--api-port (or --farm) the ones it serves on?"
            ) from exc
        except ValueError as exc:  # not JSON: something else listens there
            raise FarmError(f"{url} does not answer as a farm's API ({exc})") from exc

    def _not_an_address(self, exc: Exception) -> ConfigError:
        return ConfigError(
            f"{self.url} is not the address of a farm's API ({exc}); "
            "check --api-host/--api-port (or --farm HOST:PORT)"
        )


def _server_path(name: str) -> str:
    return f"/api/v1/servers/{quote(name, safe='')}"


def _table_path(name: str, unit: int, table: str) -> str:
    return f"{_server_path(name)}/units/{unit}/{quote(str(table), safe='')}"


def _point_path(name: str, point: str) -> str:
    return f"{_server_path(name)}/points/{quote(point, safe='')}"


def _query(params: dict[str, Any]) -> str:
    given = {key: value for key, value in params.items() if value is not None}
    return "?" + urlencode(given) if given else ""


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        message = json.load(exc).get("error")
    except (ValueError, AttributeError, OSError):
        message = None
    return f"{exc.code} {message or exc.reason}"
