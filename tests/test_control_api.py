"""The control API: its OpenAPI document, its token, its answers to bad input, its filters.

One farm (from a config with typed points, started with a token) for the module.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate

from farm.client import FarmAPIError, FarmClient
from farm.config.plan import build_plan, default_servers
from farm.config.templates import default_template
from farm.master.http.app import build_app
from farm.master.http.openapi import document
from farm.master.http.routes import served_routes
from farm.master.supervision.listeners import bind_all
from farm.master.supervision.supervisor import Supervisor, SupervisorOptions
from tests.conftest import ready_config_farm
from tests.farmproc import HOST, FarmProcess, free_port_range

TOKEN = "s3cret-token"
SERVERS = 6


def config(port: int) -> str:
    return f"""
seed: 3
templates:
  meter:
    units:
      - {{unit_id: 1, coils: 16, discrete_inputs: 16, holding_registers: 100, input_registers: 100}}
    points:
      - {{name: voltage, table: holding_registers, address: 0, type: float32, word_order: little, value: 230}}
      - {{name: energy, table: holding_registers, address: 2, type: int32, scale: 0.1, byte_order: little}}
      - {{name: level, table: input_registers, address: 0, type: int16, value: -5}}
      - {{name: label, table: holding_registers, address: 10, type: string, length: 2, value: "ab"}}
      - {{name: pump, table: coils, address: 0, type: bool}}
      - {{name: serial, table: holding_registers, address: 30, type: uint32, writable: false, value: 21004711}}
fleets:
  - {{name: meters, template: meter, count: 4, name_pattern: "meter-{{i:02d}}",
     addressing: {{host: 127.0.0.1, port_start: {port}, port_end: {port + 3}}}}}
  - {{name: plcs, template: meter, count: 2, name_pattern: "plc-{{i:02d}}",
     addressing: {{host: 127.0.0.1, port_start: {port + 4}, port_end: {port + 5}}}}}
"""


@pytest.fixture(scope="module")
def farm() -> Iterator[FarmProcess]:
    with tempfile.TemporaryDirectory() as directory:
        running = ready_config_farm(config, SERVERS, directory, ["--api-token", TOKEN])
        try:
            yield running
        finally:
            code, _, stderr = running.stop()
            assert code == 0, stderr
            assert TOKEN not in stderr  # never logged


def client(farm: FarmProcess, token: str | None = TOKEN) -> FarmClient:
    return FarmClient.at(HOST, farm.api_port, token)


def raw(
    farm: FarmProcess, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    """One request with no help from FarmClient: (status, JSON answer)."""
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    request = urllib.request.Request(
        f"http://{HOST}:{farm.api_port}{path}", method=method, data=data
    )
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


# -- the OpenAPI document ---------------------------------------------------------------


def test_openapi_document_validates_and_lists_every_route_served(farm: FarmProcess) -> None:
    status, served_doc = raw(farm, "GET", "/api/v1/openapi.json")
    assert status == 200
    validate(served_doc)
    # An app built in this process, walked route by route: each is in the document.
    plan = build_plan(
        default_servers(2, HOST, free_port_range(2), "default"), {"default": default_template()}, 1
    )

    async def walk() -> tuple[set[tuple[str, str]], dict[str, Any]]:
        supervisor = Supervisor(plan, bind_all(plan.servers()), SupervisorOptions())
        try:
            app = build_app(supervisor, lambda: None, TOKEN)
            served = {
                (route.method, resource.canonical)
                for resource in app.router.resources()
                for route in resource
            }
            return served, document(served_routes(app), token_required=True)
        finally:
            await supervisor.stop()

    served, doc = asyncio.run(walk())
    validate(doc)
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented
    assert doc["paths"] == served_doc["paths"]
    for path in ("/api/v1/servers/{name}/stop", "/api/v1/servers/{name}/points/{point}"):
        assert path in doc["paths"]
    put = doc["paths"]["/api/v1/servers/{name}/units/{unit}/{table}"]["put"]
    assert put["security"] == [{"bearer": []}] and "401" in put["responses"]
    body = put["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(doc["components"]["schemas"][body]["properties"]) == {"address", "values"}


# -- the token --------------------------------------------------------------------------


# A valid value for each path parameter a mutating route may have (faults add `id`).
SAMPLE = {
    "name": "meter-01",
    "unit": "1",
    "table": "holding_registers",
    "point": "voltage",
    "id": "1",
}


def test_every_mutating_endpoint_refuses_without_the_token(farm: FarmProcess) -> None:
    """Every non-GET operation the OpenAPI document lists: 401, and nothing changes."""
    _, doc = raw(farm, "GET", "/api/v1/openapi.json")
    mutating = [
        (method.upper(), path.format(**SAMPLE))
        for path, operations in doc["paths"].items()
        for method in operations
        if method != "get"
    ]
    assert len(mutating) >= 5  # PUT values and points, stop, start, shutdown at least
    api = client(farm)
    api.write("meter-01", "holding_registers", 50, [7])
    before = api.server("meter-01")
    for method, path in mutating:
        for token in (None, "wrong-token", TOKEN + "x"):
            body = {"address": 50, "values": [8], "value": 1.5}  # what writes would take
            status, answer = raw(farm, method, path, body, token)
            assert status == 401, (method, path, answer)
            assert "token" in answer["error"] and TOKEN not in answer["error"]
    after = api.server("meter-01")
    assert after.info.up and not after.info.stopped
    assert [p.registers for p in after.points] == [p.registers for p in before.points]
    assert api.read("meter-01", "holding_registers", 50) == [7]
    assert api.status()["stopping"] is False


def test_gets_need_no_token(farm: FarmProcess) -> None:
    assert client(farm, token=None).point("meter-00", "serial").value == 21004711


def test_api_on_a_network_address_without_a_token_refuses_to_start() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "farm", "up", "--count", "1", "--api-host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "--api-token" in lines[0] and "--api-insecure" in lines[0] and "0.0.0.0" in lines[0]


# -- bad input: 4xx naming the field, nothing changed -----------------------------------


BAD = [
    ("GET", "/api/v1/servers/nope", None, 404, "no server named 'nope'"),
    ("GET", "/api/v1/servers/meter-00/units/9/coils", None, 404, "no unit 9"),
    ("GET", "/api/v1/servers/meter-00/units/1/colis", None, 422, "'table'"),
    ("GET", "/api/v1/servers/meter-00/units/1/coils?address=16", None, 422, "'address'"),
    ("GET", "/api/v1/servers/meter-00/units/1/coils?address=10&count=7", None, 422, "'count'"),
    ("GET", "/api/v1/servers/meter-00/units/1/coils?count=0", None, 422, "'count'"),
    ("GET", "/api/v1/servers/meter-00/units/1/coils?count=1&count=2", None, 400, "'count'"),
    ("GET", "/api/v1/servers/meter-00/points/nope", None, 404, "no point 'nope'"),
    ("GET", "/api/v1/servers?state=sleepy", None, 422, "'state'"),
    ("GET", "/api/v1/servers?limit=0", None, 422, "'limit'"),
    ("GET", "/api/v1/servers?fleat=meters", None, 422, "'fleat'"),
    (
        "PUT",
        "/api/v1/servers/meter-00/units/1/holding_registers",
        {"address": 99, "values": [1, 2]},
        422,
        "'values'",
    ),
    (
        "PUT",
        "/api/v1/servers/meter-00/units/1/holding_registers",
        {"address": 5, "values": [70000]},
        422,
        "'values.0'",
    ),
    (
        "PUT",
        "/api/v1/servers/meter-00/units/1/holding_registers",
        {"address": 5, "values": []},
        422,
        "'values'",
    ),
    (
        "PUT",
        "/api/v1/servers/meter-00/units/1/holding_registers",
        {"values": [1]},
        422,
        "'address'",
    ),
    (
        "PUT",
        "/api/v1/servers/meter-00/units/1/coils",
        {"address": 1, "values": [1, 2]},
        422,
        "'values.1'",
    ),
    ("PUT", "/api/v1/servers/meter-00/units/1/holding_registers", b"{not json", 400, "body"),
    ("PUT", "/api/v1/servers/meter-00/points/level", {"value": 40000}, 422, "'value'"),
    ("PUT", "/api/v1/servers/meter-00/points/energy", {"value": 3e8}, 422, "'value'"),
    ("PUT", "/api/v1/servers/meter-00/points/voltage", {"value": "warm"}, 422, "'value'"),
    ("PUT", "/api/v1/servers/meter-00/points/label", {"value": "too long"}, 422, "'value'"),
    ("PUT", "/api/v1/servers/meter-00/points/pump", {"value": 2}, 422, "'value'"),
    ("PUT", "/api/v1/servers/meter-00/points/voltage", {"velue": 1}, 422, "'velue'"),
    ("POST", "/api/v1/servers/nope/stop", {}, 404, "no server named 'nope'"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "names"), BAD)
def test_bad_input_is_a_4xx_naming_the_field(
    farm: FarmProcess, method: str, path: str, body: Any, status: int, names: str
) -> None:
    before = client(farm).server("meter-00")
    got, answer = raw(farm, method, path, body, TOKEN)
    assert got == status, answer
    assert names in answer["error"], answer
    after = client(farm).server("meter-00")
    assert [p.registers for p in after.points] == [p.registers for p in before.points]
    assert after.info.up


# -- listing ----------------------------------------------------------------------------


def test_servers_filter_and_page(farm: FarmProcess) -> None:
    api = client(farm)
    assert [s.name for s in api.servers(fleet="plcs")] == ["plc-00", "plc-01"]
    assert [s.name for s in api.servers(name="meter-0[13]")] == ["meter-01", "meter-03"]
    by_worker = api.servers(worker=1)
    assert by_worker and all(s.worker == 1 for s in by_worker)
    assert len(api.servers(state="up")) == SERVERS and api.servers(state="faulted") == []
    page = api.page(limit=4, offset=2)
    assert [s.name for s in page.servers] == ["meter-02", "meter-03", "plc-00", "plc-01"]
    assert page.total == SERVERS and page.next_offset is None
    first = api.page(fleet="meters", limit=3)
    assert first.total == 4 and first.next_offset == 3 and len(first.servers) == 3


def test_server_detail(farm: FarmProcess) -> None:
    detail = client(farm).server("plc-01")
    assert detail.info.fleet == "plcs" and detail.info.address == f"{HOST}:{farm.port(5)}"
    assert detail.units == [
        {
            "unit_id": 1,
            "coils": 16,
            "discrete_inputs": 16,
            "holding_registers": 100,
            "input_registers": 100,
        }
    ]
    values = {point.name: point.value for point in detail.points}
    assert values == {
        "voltage": 230.0, "energy": 0, "level": -5, "label": "ab", "pump": 0, "serial": 21004711,
    }  # fmt: skip
    assert detail.faults == [] and detail.connections == 0


def test_unknown_server_is_a_farm_api_error(farm: FarmProcess) -> None:
    with pytest.raises(FarmAPIError) as caught:
        client(farm).point("nope", "voltage")
    assert caught.value.status == 404 and "nope" in str(caught.value)


# -- the container image's default: a token generated when none is given ----------------


def generated_token_farm(extra: list[str]) -> FarmProcess:
    base = free_port_range(2)
    return FarmProcess(1, 1, base, base + 1, ["--generate-api-token", *extra]).start()


def test_generate_api_token_makes_one_and_prints_it_once() -> None:
    """What the image runs (Dockerfile CMD): with no token given, the farm makes one, says it
    on stdout, and takes mutating calls with it only."""
    farm = generated_token_farm([])
    try:
        assert farm.process is not None and farm.process.stdout is not None
        line = farm.process.stdout.readline()
        prefix = "farm: API token for this run (none was given): "
        assert line.startswith(prefix), line
        token = line.removeprefix(prefix).strip()
        assert len(token) == 32 and int(token, 16) >= 0  # 128 random bits, hex
        farm.wait_ready()
        name = client(farm).servers()[0].name
        with pytest.raises(FarmAPIError, match="token"):
            client(farm, token=None).write(name, "holding_registers", 0, [1])
        client(farm, token=token).write(name, "holding_registers", 0, [42])
        assert client(farm, token=None).read(name, "holding_registers", 0) == [42]
    finally:
        code, stdout, stderr = farm.stop()
    assert code == 0, stderr
    assert prefix not in stdout and token not in stderr  # printed once, never logged


def test_generate_api_token_keeps_a_given_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARM_API_TOKEN", TOKEN)
    farm = generated_token_farm([])
    try:
        farm.wait_ready()
        name = client(farm).servers()[0].name
        with pytest.raises(FarmAPIError, match="token"):
            client(farm, token="not-it").write(name, "holding_registers", 0, [1])
        client(farm, token=TOKEN).write(name, "holding_registers", 0, [7])
    finally:
        code, stdout, stderr = farm.stop()
    assert code == 0, stderr
    assert "API token" not in stdout and TOKEN not in stdout + stderr
