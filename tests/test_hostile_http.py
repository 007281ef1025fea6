"""The HTTP edge against a real farm: Host names, hostile bodies, fleet view streams that are
too many or never read, and a client that keeps its token away from proxies (issue 19)."""

from __future__ import annotations

import http.client
import inspect
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from farm.cli.up import up
from farm.client import FarmClient
from farm.errors import ConfigError
from farm.master.fleetview.pages import add_view, view_routes
from farm.master.fleetview.stream import MAX_SUBSCRIBERS, STALL_S, pump
from farm.master.http.app import build_app
from farm.master.options import MasterOptions
from tests.conftest import ready_farm
from tests.farmproc import HOST, FarmProcess, wait_for

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def farm() -> Iterator[FarmProcess]:
    running = ready_farm(2, workers=1, extra=["--api-allow-host", "farm.example"])
    try:
        yield running
    finally:
        code, _, stderr = running.stop()
        assert code == 0, stderr
        assert "Traceback" not in stderr


def raw(
    farm: FarmProcess, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, Any]:
    """One request with exactly these headers (Host too): (status, JSON body or bytes)."""
    connection = http.client.HTTPConnection(HOST, farm.api_port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if body or method != "GET":
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        answer = connection.getresponse()
        content = answer.read()
        if not answer.headers.get("Content-Type", "").startswith("application/json"):
            return answer.status, content  # /metrics
        return answer.status, json.loads(content)
    finally:
        connection.close()


# -- Host ----------------------------------------------------------------------------------


def test_a_foreign_host_is_refused_and_the_farms_own_names_are_served(farm: FarmProcess) -> None:
    name = FarmClient.at(HOST, farm.api_port).servers()[0].name
    path = f"/api/v1/servers/{name}"
    status, body = raw(farm, "GET", path, {"Host": f"evil.example:{farm.api_port}"})
    assert status == 421
    assert "evil.example" in body["error"] and "--api-allow-host" in body["error"]
    assert "holding_registers" not in json.dumps(body)
    for host in (f"127.0.0.1:{farm.api_port}", f"localhost:{farm.api_port}", "farm.example"):
        status, body = raw(farm, "GET", path, {"Host": host})
        assert status == 200, (host, body)
    # A write from a foreign Host is refused before its Origin and token are even looked at.
    status, _ = raw(farm, "POST", "/api/v1/shutdown", {"Host": "evil.example",
                    "Content-Type": "application/json"}, b"{}")  # fmt: skip
    assert status == 421 and farm.process is not None and farm.process.poll() is None


def test_a_token_farm_on_a_wildcard_address_answers_any_host() -> None:
    """A container's API: 0.0.0.0 with a token, reached by a service name or localhost."""
    running = ready_farm(1, workers=1, extra=["--api-host", "0.0.0.0", "--api-token", "T0k"])
    try:
        for host in ("farm:9502", "localhost", f"127.0.0.1:{running.api_port}"):
            assert raw(running, "GET", "/api/v1/status", {"Host": host})[0] == 200
            assert raw(running, "GET", "/metrics", {"Host": host})[0] == 200
    finally:
        code, _, stderr = running.stop()
        assert code == 0, stderr


# -- bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"[" * 200_000, 400, "nested more than 64 levels deep"),
        (b'{"kind": "caf\xe9"}', 400, "line 1, column 14: not UTF-8"),
        (b"{" * 10, 400, "not JSON"),
        (b"[" + b"1," * 700_000 + b"1]", 413, "Request Entity Too Large"),
    ],
)
def test_hostile_bodies_get_a_json_4xx_never_a_500(
    farm: FarmProcess, body: bytes, status: int, words: str
) -> None:
    headers = {"Host": f"127.0.0.1:{farm.api_port}", "Content-Type": "application/json"}
    found, answer = raw(farm, "POST", "/api/v1/faults", headers, body)
    assert (found, words in answer["error"]) == (status, True), answer
    assert farm.status()["servers_ready"] == 2


# -- fleet view streams --------------------------------------------------------------------


def open_stream(farm: FarmProcess, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((HOST, farm.api_port))
    sock.sendall(b"GET /api/v1/view/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return sock


def test_streams_past_the_cap_get_503(farm: FarmProcess) -> None:
    streams = [open_stream(farm) for _ in range(MAX_SUBSCRIBERS)]
    try:
        for sock in streams:  # each one answered 200 and counted before the next
            sock.settimeout(10)
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
        status, body = raw(farm, "GET", "/api/v1/view/stream", {"Host": "127.0.0.1"})
        assert status == 503 and f"{MAX_SUBSCRIBERS} fleet view streams" in body["error"]
    finally:
        for sock in streams:
            sock.close()

    def one_more() -> bool:
        sock = open_stream(farm)
        try:
            sock.settimeout(10)
            return sock.recv(64).startswith(b"HTTP/1.1 200")
        finally:
            sock.close()

    wait_for(one_more, 10, "a stream once the others closed")


def tcp_state(sock: socket.socket) -> int:
    """tcpi_state of the socket (1: established; 7: closed, as after a reset)."""
    state: int = struct.unpack("B", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0]
    return state


# The stall a test farm is given: short, so that the test does not wait out the 30 s default.
SHORT_STALL_S = 3.0


def test_a_stream_that_is_never_read_is_closed() -> None:
    """Closed once its bytes have not drained for --view-stall-timeout seconds, not before;
    the next page that reads is served as before."""
    extra = ["--view-stall-timeout", f"{SHORT_STALL_S:g}"]
    farm = ready_farm(2, workers=1, extra=extra)
    try:
        stalled = open_stream(farm, receive_buffer=1024)
        try:
            began = time.monotonic()
            wait_for(
                lambda: tcp_state(stalled) != 1,
                SHORT_STALL_S + 60,
                "the farm to drop a stream nobody reads",
            )
            took = time.monotonic() - began
            # Not before the stall without draining (the buffers took some of it to fill),
            # and by the option's time, not the default 30 s: it reached the stream.
            assert SHORT_STALL_S < took < SHORT_STALL_S + 20, took
        finally:
            stalled.close()
        reader = open_stream(farm)  # a page that reads is served as before
        try:
            reader.settimeout(10)
            assert reader.recv(64).startswith(b"HTTP/1.1 200")
        finally:
            reader.close()
    finally:
        code, _, stderr = farm.stop()
    print(f"a never-read stream was closed after {took:.1f} s (stall {SHORT_STALL_S:g} s)")
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_the_stall_is_30_s_unless_told_otherwise() -> None:
    """The design's 30 s is the default, from the command line down to the stream's pump."""
    option = next(param for param in up.params if param.name == "view_stall_timeout")
    assert option.default == STALL_S == 30.0
    assert MasterOptions().view_stall_s == STALL_S
    for function in (pump, add_view, view_routes, build_app):
        stall = [p for n, p in inspect.signature(function).parameters.items() if "stall" in n]
        assert [p.default for p in stall] == [STALL_S], function


# -- the client and proxies ----------------------------------------------------------------


class Proxy:
    """A listening socket that records every request it gets (and answers 502)."""

    def __init__(self) -> None:
        self.sock = socket.create_server((HOST, 0))
        self.url = f"http://{HOST}:{self.sock.getsockname()[1]}"
        self.seen: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                try:
                    self.seen.append(connection.recv(65536))
                    connection.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    found = Proxy()
    try:
        yield found
    finally:
        found.close()


def test_the_client_ignores_proxy_variables_and_keeps_the_token_from_proxies(
    farm: FarmProcess, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = FarmClient.at(HOST, farm.api_port, "a-token")
    assert client.status()["servers_total"] == 2
    assert proxy.seen == []
    # Through a proxy only when asked, and then never with the token.
    through = FarmClient(client.url, "a-token", proxy=proxy.url)
    with pytest.raises(ConfigError, match="never sent through a proxy"):
        through.request("POST", "/api/v1/shutdown", {})
    with pytest.raises(Exception):  # noqa: B017 - the fake proxy answers 502
        through.status()
    assert len(proxy.seen) == 1 and b"a-token" not in proxy.seen[0]
    assert proxy.seen[0].startswith(b"GET http://")
