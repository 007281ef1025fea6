"""Random input, property-based (issue 19): random bytes and random YAML structures given to
`farm validate`, random bodies sent to every route of a running farm. Every outcome is exit
0 or 2, or a 2xx/4xx answer with a JSON error, within a time and memory bound; never a
traceback, never a 500."""

from __future__ import annotations

import http.client
import json
import re
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from farm.cli.validate import validate
from tests.conftest import ready_farm
from tests.farmproc import HOST, FarmProcess

pytestmark = pytest.mark.timeout(600)

SECONDS_PER_EXAMPLE = 5.0
PEAK_BYTES = 256 * 1024 * 1024

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["{i:999999999}", "{i.__class__}", "../../etc/passwd", "/dev/zero", "tls"]),
)
structures = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=30,
)
KEYS = ["templates", "fleets", "seed", "scenario", "count", "addressing", "name_pattern",
        "units", "points", "behaviour", "csv", "tls", "transport", "port_start", "ip_start"]  # fmt: skip


def valid_config() -> dict[str, Any]:
    return {
        "templates": {
            "meter": {
                "units": [{"unit_id": 1, "holding_registers": 10}],
                "points": [{"name": "p", "table": "holding_registers", "address": 0}],
            }
        },
        "fleets": [
            {
                "name": "a",
                "template": "meter",
                "count": 2,
                "addressing": {"port_start": 6700, "port_end": 6799},
            }
        ],
    }


@st.composite
def mangled_configs(draw: st.DrawFn) -> Any:
    """A valid config with a few of its values (or new keys) replaced at random."""
    config = valid_config()
    for _ in range(draw(st.integers(1, 3))):
        target: Any = config
        for _ in range(draw(st.integers(0, 3))):
            if isinstance(target, dict) and target:
                target = target[draw(st.sampled_from(sorted(target)))]
            elif isinstance(target, list) and target:
                target = target[draw(st.integers(0, len(target) - 1))]
        if isinstance(target, dict):
            target[draw(st.sampled_from(KEYS + sorted(target)))] = draw(structures)
    return config


def run_validate(path: Path) -> None:
    """`farm validate PATH` in this process: exit 0 or 2, in time and memory."""
    tracemalloc.start()
    began = time.monotonic()
    try:
        result = CliRunner().invoke(validate, [str(path)])
        seconds = time.monotonic() - began
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    assert seconds < SECONDS_PER_EXAMPLE and peak < PEAK_BYTES, (seconds, peak)


fuzz = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@fuzz
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".yaml", ".toml", ".json"]))
def test_random_bytes_to_validate(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"farm{suffix}"
    path.write_bytes(data)
    run_validate(path)


@fuzz
@given(config=st.one_of(structures, mangled_configs()))
@example(config={**valid_config(), "templates": {"\x1e\n": None}})  # found: a name breaks lines
def test_random_yaml_structures_to_validate(tmp_path: Path, config: Any) -> None:
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump(config))
    run_validate(path)


# -- every route ---------------------------------------------------------------------------

# Routes that would end the farm, change it past what a test may wait for, or stream forever.
SPARED = {
    ("POST", "/api/v1/shutdown"),
    ("POST", "/api/v1/fleets/{name}/scale"),
    ("GET", "/api/v1/view/stream"),
}


@pytest.fixture(scope="module")
def farm() -> Iterator[FarmProcess]:
    running = ready_farm(2, workers=1)
    try:
        yield running
    finally:
        code, _, stderr = running.stop()
        assert code == 0, stderr
        assert "Traceback" not in stderr and "Error handling request" not in stderr


@pytest.fixture(scope="module")
def routes(farm: FarmProcess) -> list[tuple[str, str]]:
    document = farm.api("/api/v1/openapi.json")
    found = [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "delete")
    ]
    assert len(found) >= 15
    # A trace records for as long as it is asked (10 s by default): a stream of its own.
    return [r for r in found if r not in SPARED and not r[1].endswith("/trace")]


bodies = st.one_of(
    st.binary(max_size=512),
    structures.map(lambda value: json.dumps(value).encode()),
    st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * depth),
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), body=bodies, name=st.one_of(st.just("device-0000"), st.text(max_size=20)))
def test_random_bodies_to_every_route(
    farm: FarmProcess, routes: list[tuple[str, str]], data: st.DataObject, body: bytes, name: str
) -> None:
    method, template = data.draw(st.sampled_from(routes))
    path = re.sub(r"\{[^}]+\}", lambda _: _quote(name) or "x", template)
    connection = http.client.HTTPConnection(HOST, farm.api_port, timeout=10)
    began = time.monotonic()
    try:
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        content = answer.read()
    finally:
        connection.close()
    assert time.monotonic() - began < SECONDS_PER_EXAMPLE
    assert 200 <= answer.status < 500, (method, path, body[:80], answer.status, content[:300])
    if answer.status >= 400:
        assert "error" in json.loads(content), content[:300]


def _quote(text: str) -> str:
    return quote(text, safe="")
