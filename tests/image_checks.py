"""What scripts/test-image asks of the farm in a container, as a client on the host sees it.

    python -m tests.image_checks ready API [--timeout S]
    python -m tests.image_checks modbus HOST PORT [PORT ...]
    python -m tests.image_checks refused HOST PORT
    python -m tests.image_checks metrics API
    python -m tests.image_checks token API TOKEN
    python -m tests.image_checks prometheus URL EXPECTED [--timeout S]

API is HOST:PORT of a farm's control API. The pods' checks, which read the manifest, are
tests.image_pod_checks. Each check prints one line saying what it saw and
exits 1 with one line saying what it missed. The Modbus reads use pymodbus, a real client;
HTTP goes straight to the address given (no proxy: the container is on this machine).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

from pymodbus.client import ModbusTcpClient

from farm.client import FarmAPIError, FarmClient

T = TypeVar("T")
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CheckFailed(Exception):
    """One line: what the check expected and what it got."""


def poll(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    """`predicate()` until it returns something truthy; its last error in the failure line."""
    deadline, last = time.monotonic() + timeout, "nothing yet"
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = repr(value)
        except (OSError, http.client.HTTPException, ValueError, KeyError, CheckFailed) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what}: not within {timeout:.0f} s (last: {last})")
        time.sleep(0.25)


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with NO_PROXY.open(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def get_json(url: str) -> Any:
    status, body = get(url)
    if status != 200:
        raise CheckFailed(f"{url}: HTTP {status} {body[:200]}")
    return json.loads(body)


def ready(api: str, timeout: float) -> None:
    start = time.monotonic()
    body = poll(lambda: _ready_body(api), timeout, f"http://{api}/api/v1/ready answering 200")
    print(
        f"ready: {api} /api/v1/ready 200 after {time.monotonic() - start:.1f} s "
        f"({body['servers_ready']} of {body['servers_total']} servers)"
    )


def _ready_body(api: str) -> dict[str, Any] | None:
    status, body = get(f"http://{api}/api/v1/ready")
    return json.loads(body) if status == 200 else None


def modbus(host: str, ports: list[int]) -> None:
    """Read two holding registers of each device: a real answer, not an exception."""
    for port in ports:
        client = ModbusTcpClient(host, port=port, timeout=3, retries=1)
        try:
            if not client.connect():
                raise CheckFailed(f"modbus: no connection to {host}:{port}")
            answer = client.read_holding_registers(0, count=2, device_id=1)
            if answer.isError():
                raise CheckFailed(f"modbus: {host}:{port} answered {answer}")
        finally:
            client.close()
    print(f"modbus: {len(ports)} devices at {host} (ports {ports}) answered FC 3")


def refused(host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except ConnectionRefusedError:
        print(f"refused: nothing listens on {host}:{port}, as expected")
        return
    except TimeoutError as error:
        raise CheckFailed(f"refused: {host}:{port} neither answered nor refused") from error
    raise CheckFailed(f"refused: {host}:{port} accepted a connection; no device belongs there")


def metrics(api: str) -> None:
    status, body = get(f"http://{api}/metrics")
    lines = [line for line in body.splitlines() if line.startswith("modbus_farm_servers_ready ")]
    if status != 200 or not lines:
        raise CheckFailed(f"metrics: http://{api}/metrics gave {status} without servers_ready")
    print(f"metrics: http://{api}/metrics 200, {lines[0]}")


def token(api: str, token: str) -> None:
    """Mutating calls need the token (none: 401), and the token printed is the one."""
    name = FarmClient(f"http://{api}", None).servers()[0].name
    try:
        FarmClient(f"http://{api}", None).write(name, "holding_registers", 0, [1])
    except FarmAPIError as refused:
        if refused.status != 401:
            raise CheckFailed(f"token: a write without the token got {refused}") from refused
    else:
        raise CheckFailed(f"token: {api} took a write without the token")
    FarmClient(f"http://{api}", token).write(name, "holding_registers", 0, [4711])
    if FarmClient(f"http://{api}", None).read(name, "holding_registers", 0) != [4711]:
        raise CheckFailed(f"token: the write with the token did not reach {name}")
    print(f"token: {api} refused a write without the token (401) and took it with the token")


def prometheus(url: str, expected: int, timeout: float) -> None:
    """Prometheus' own view: the farm scraped (up 1) with `expected` servers ready."""
    query = urllib.parse.urlencode({"query": "modbus_farm_servers_ready"})

    def scraped() -> list[dict[str, Any]] | None:
        result = get_json(f"{url}/api/v1/query?{query}")["data"]["result"]
        return [r for r in result if float(r["value"][1]) == expected] or None

    start = time.monotonic()
    (series,) = poll(scraped, timeout, f"Prometheus at {url} scraping {expected} servers ready")
    print(
        f"prometheus: modbus_farm_servers_ready{{instance={series['metric']['instance']!r}}} "
        f"= {expected} after {time.monotonic() - start:.1f} s"
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="check", required=True)
    command = sub.add_parser("ready")
    command.add_argument("api")
    command.add_argument("--timeout", type=float, default=60)
    command = sub.add_parser("modbus")
    command.add_argument("host")
    command.add_argument("ports", type=int, nargs="+")
    command = sub.add_parser("refused")
    command.add_argument("host")
    command.add_argument("port", type=int)
    command = sub.add_parser("metrics")
    command.add_argument("api")
    command = sub.add_parser("token")
    command.add_argument("api")
    command.add_argument("token")
    command = sub.add_parser("prometheus")
    command.add_argument("url")
    command.add_argument("expected", type=int)
    command.add_argument("--timeout", type=float, default=60)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        if args.check == "ready":
            ready(args.api, args.timeout)
        elif args.check == "modbus":
            modbus(args.host, args.ports)
        elif args.check == "refused":
            refused(args.host, args.port)
        elif args.check == "metrics":
            metrics(args.api)
        elif args.check == "token":
            token(args.api, args.token)
        else:
            prometheus(args.url, args.expected, args.timeout)
    except CheckFailed as failure:
        sys.exit(f"FAILED {failure}")


if __name__ == "__main__":
    main()
