"""The control API over real HTTP: readiness, who may change a farm, and the token.

Every request here is a real one (urllib, or the farm CLI) against a real `farm up`; a
refused change is checked to have changed nothing: the farm keeps serving and stays ready.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from farm.client import FarmClient
from farm.master.http.access import own_origin
from tests.conftest import ready_farm, start_farm
from tests.farmproc import HOST, RESTART_DEADLINE_S, STOP_DEADLINE_S, FarmProcess, wait_for

pytestmark = pytest.mark.timeout(180)
TOKEN = "s3cret-token-Zq7"


def assert_still_running(farm: FarmProcess) -> None:
    """Nothing changed: the farm runs, is not stopping, and every server is still ready.

    A shutdown accepted by the handler before would already show here: the request after
    it runs on a later turn of the master's loop, when `stopping` is set.
    """
    assert farm.process is not None and farm.process.poll() is None
    status, body = farm.http("GET", "/api/v1/ready")
    assert status == 200 and body["ready"], body
    assert farm.status()["stopping"] is False


def assert_stops(farm: FarmProcess) -> float:
    """The farm exits 0 by itself (after an accepted shutdown); how long it took."""
    assert farm.process is not None
    began = time.monotonic()
    code = farm.process.wait(timeout=STOP_DEADLINE_S)
    took = time.monotonic() - began
    _, stderr = farm.process.communicate(timeout=10)
    assert code == 0, stderr
    return took


@pytest.fixture
def small_farm() -> Iterator[FarmProcess]:
    farm = ready_farm(2, workers=1)
    try:
        yield farm
    finally:
        code, _, stderr = farm.stop()
        assert code == 0, stderr


# -- GET /api/v1/ready -------------------------------------------------------------------


def test_ready_is_503_until_every_server_is_up_and_while_a_worker_restarts() -> None:
    farm = start_farm(1000, workers=2)
    try:
        answers: list[tuple[int, dict[str, object]]] = []
        said_ready: list[bool] = []  # /api/v1/status's `ready`, asked just before each

        def ready_answers_200() -> str | None:
            assert farm.process is not None
            if farm.process.poll() is not None:
                return "exited"  # out of the loop at once
            try:
                said_ready.append(farm.status()["ready"])
                answers.append(farm.http("GET", "/api/v1/ready"))
            except OSError:  # URLError included: the API is not listening yet
                return None
            # Nothing is killed during the start: once status says ready, so does the probe.
            assert not said_ready[-1] or answers[-1][0] == 200, (said_ready, answers[-1])
            return "ready" if answers[-1][0] == 200 else None

        started = wait_for(ready_answers_200, 60, "GET /api/v1/ready to answer 200", interval=0.01)
        assert farm.process is not None
        assert started == "ready", f"the farm exited during its start: {farm.process.communicate()}"
        # The master loads its API while the workers boot (farm.master.run): its first
        # answers are 503 when they come before every server is up, and none is 200 before.
        for code, body in answers:
            assert body["servers_total"] == 1000, body
            if code == 503:
                assert body["ready"] is False, body
                assert isinstance(body["servers_ready"], int) and body["servers_ready"] < 1000
                assert "servers up" in str(body["error"])
            else:
                assert (code, body["ready"], body["servers_ready"]) == (200, True, 1000), body
        assert answers[-1][1] == {"ready": True, "servers_ready": 1000, "servers_total": 1000}
        assert farm.status()["servers_ready"] == 1000 and farm.status()["ready"] is True
        print(f"start-up: {len(answers) - 1} answers of 503, then 200")

        client = FarmClient.at(HOST, farm.api_port)
        assert client.ready() is True
        seen: list[str] = []
        for _ in range(3):  # each kill in a row is respawned later (backoff): a wider window
            victim = farm.worker_pids()[0]
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            restarted = functools.partial(restart_seen, farm, client, victim)
            seen.append(wait_for(restarted, 30, "a restart", interval=0.01))
            wait_for(client.ready, RESTART_DEADLINE_S, "ready to turn 200 again")
            print(f"ready again {time.monotonic() - killed:.2f} s after kill -9 ({seen[-1]})")
            if seen[-1] == "503":
                break
        assert seen[-1] == "503", f"never saw 503 while a worker restarted: {seen}"
        status = farm.status()
        assert status["servers_ready"] == 1000 and status["workers"][0]["pid"] != victim
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr


def restart_seen(farm: FarmProcess, client: FarmClient, victim: int) -> str | None:
    """'503' if ready says so; 'missed' if the worker was already replaced and ready."""
    if not client.ready():
        return "503"
    return "missed" if farm.worker_pids()[0] not in (victim, None) else None


# -- who may change a farm --------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "null",  # a sandboxed frame, or a page opened from a file
        "http://127.0.0.1:{other}",  # another port of this machine is another origin
        "https://127.0.0.1:{api}",
        "http://rebound.example:{api}",  # DNS rebinding: the name points at 127.0.0.1
    ],
)
def test_cross_origin_shutdown_is_refused(farm: FarmProcess, origin: str) -> None:
    origin = origin.format(api=farm.api_port, other=farm.api_port + 1)
    status, body = farm.http(
        "POST", "/api/v1/shutdown", b"{}", {"Origin": origin, "Content-Type": "application/json"}
    )
    assert status == 403, body
    assert "cross-origin" in body["error"] and origin in body["error"]
    assert_still_running(farm)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"{}", "text/plain"),  # what a page's fetch() may send with no preflight
        (b"stop=1", "application/x-www-form-urlencoded"),  # what an HTML form sends
        (b"{}", "multipart/form-data; boundary=x"),
        (None, None),  # no body at all
    ],
    ids=["text-plain", "form", "multipart", "no-body"],
)
def test_shutdown_without_json_is_refused(
    farm: FarmProcess, data: bytes | None, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    status, body = farm.http("POST", "/api/v1/shutdown", data, headers)
    assert status == 415, body
    assert "Content-Type: application/json" in body["error"]
    assert_still_running(farm)


def test_every_mutating_method_is_guarded_even_on_unknown_paths(farm: FarmProcess) -> None:
    foreign = {"Origin": "http://evil.example"}
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        status, _ = farm.http(method, "/api/v1/not-yet-a-route", b"{}", foreign)
        assert status == 403, method
        status, _ = farm.http(
            method, "/api/v1/not-yet-a-route", b"x", {"Content-Type": "text/plain"}
        )
        assert status == 415, method
        status, body = farm.http(method, "/api/v1/not-yet-a-route", b"{}")
        assert status == 404, body  # past the guard: the route itself is missing
    status, body = farm.http("GET", "/api/v1/status", headers=foreign)
    assert status == 200 and body["servers_total"] == farm.count  # reading stays open
    assert_still_running(farm)


@pytest.mark.parametrize(
    "origin", [None, "http://127.0.0.1:{api}", "http://localhost:{api}"], ids=str
)
def test_shutdown_from_a_program_or_the_farms_own_origin_stops_it(
    small_farm: FarmProcess, origin: str | None
) -> None:
    headers = {"Origin": origin.format(api=small_farm.api_port)} if origin else {}
    status, body = small_farm.http("POST", "/api/v1/shutdown", b"{}", headers)
    assert (status, body) == (200, {"stopping": True})
    print(f"stopped {assert_stops(small_farm):.2f} s after POST /api/v1/shutdown")


def test_origin_rule() -> None:
    loopback = (ipaddress.ip_address("127.0.0.1"), 9502)
    lan = (ipaddress.ip_address("192.0.2.7"), 9502)
    assert own_origin("http://127.0.0.1:9502", loopback)
    assert own_origin("http://localhost:9502", loopback)
    assert own_origin("http://192.0.2.7:9502", lan)  # a wildcard --api-host, reached on the LAN
    assert not own_origin("http://localhost:9502", lan)
    assert not own_origin("http://127.0.0.1", loopback)  # port 80
    assert not own_origin("http://127.0.0.1:9502x", loopback)
    assert not own_origin("http://farm.lan:9502", lan)
    assert not own_origin("http://127.0.0.1:9502", None)
    assert own_origin("http://[::1]:9502", (ipaddress.ip_address("::1"), 9502))
    # An IPv4 client of a dual-stack (::) listener arrives at ::ffff:127.0.0.1.
    assert own_origin("http://127.0.0.1:9502", (ipaddress.ip_address("::ffff:127.0.0.1"), 9502))


# -- the token ---------------------------------------------------------------------------


def test_token_guards_changes_and_never_shows() -> None:
    farm = ready_farm(4, workers=2, extra=["--api-token", TOKEN, "--log-level", "debug"])
    try:
        for authorization in (None, "Bearer wrong", f"Bearer {TOKEN[:-1]}X", TOKEN, "Bearer"):
            headers = {"Authorization": authorization} if authorization else {}
            status, body = farm.http("POST", "/api/v1/shutdown", b"{}", headers)
            assert status == 401, (authorization, body)
            assert "--api-token" in body["error"] and TOKEN not in body["error"]
            assert_still_running(farm)
        for path in ("/api/v1/status", "/api/v1/servers", "/api/v1/ready"):
            status, body = farm.http("GET", path)  # reading needs no token
            assert status == 200 and TOKEN not in str(body), path
        down = [sys.executable, "-m", "farm", "down", "--api-port", str(farm.api_port)]
        refused = subprocess.run(
            [*down, "--api-token", "wrong"], capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 1 and "401" in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert_still_running(farm)
        env = {**os.environ, "FARM_API_TOKEN": TOKEN}
        done = subprocess.run(down, capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        assert TOKEN not in done.stdout + done.stderr
        assert farm.process is not None
        assert farm.process.wait(timeout=STOP_DEADLINE_S) == 0  # gone by itself, not killed
    finally:
        code, stdout, stderr = farm.stop(timeout=STOP_DEADLINE_S)
    assert code == 0, stderr
    assert "spawned as pid" in stderr  # debug logging was on, and still no token in it
    assert TOKEN not in stdout + stderr


def test_openapi_documents_ready_and_the_refusals(farm: FarmProcess) -> None:
    status, document = farm.http("GET", "/api/v1/openapi.json")
    assert status == 200
    ready = document["paths"]["/api/v1/ready"]["get"]["responses"]
    assert {"200", "503"} <= set(ready)
    shutdown = document["paths"]["/api/v1/shutdown"]["post"]["responses"]
    assert {"200", "403", "415"} <= set(shutdown)
