"""Every fault kind is declared once (farm.config.faults.kinds), and every place that names
kinds derives them from there: the config/API model, `farm fault add` and its --help, the
OpenAPI document and the fleet view's fault form, the metrics' `kind` label, the log text."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from farm.cli.faults import fault
from farm.config.faults.kinds import KIND_TABLE, KINDS, Kind, Param, log_text
from farm.config.faults.rules import FaultRule
from farm.config.faults.spec import MODELS, parse_fault, rule
from farm.ipc.stats import INJECTION_SLOT
from tests.conftest import config_farm
from tests.farmproc import HOST, FarmProcess, wait_for
from tests.test_value_faults import SERVERS, config

pytestmark = pytest.mark.timeout(180)
WEB = Path(__file__).resolve().parent.parent / "farm" / "master" / "fleetview" / "web"
# A point of the farm (tests.test_value_faults.config) for each kind of point a value kind
# acts on.
POINTS = {"numbers_and_bools": "level", "numbers": "level", "floats": "voltage", "bools": "contact"}


def sample(param: Param) -> Any:
    """A value inside a required parameter's bounds."""
    if param.choices:
        return param.choices[0]
    if param.type == "seconds":
        return "2s"
    if param.type == "text":
        return "x"
    low = param.ge if param.ge is not None else (param.gt + 1 if param.gt is not None else 1)
    number = min(low + 1, param.le) if param.le is not None else low + 1
    return int(number) if param.type == "integer" else float(number)


def example(kind: Kind) -> dict[str, Any]:
    """A valid fault of `kind` on the first server, in the API's words."""
    body: dict[str, Any] = {"kind": kind.name, "target": {"servers": ["meter-0000"]}}
    for param in kind.params:
        if param.required:
            body[param.name] = sample(param)
    if kind.family == "value":
        body["point"] = POINTS[kind.acts_on]
    body.update(kind.example)
    return body


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("log") / "farm.log"


@pytest.fixture(scope="module")
def farm(log_file: Path) -> Iterator[FarmProcess]:
    with config_farm(config, SERVERS, ["--log-file", str(log_file)]) as running:
        yield running


def test_the_registry_names_each_kind_once_in_the_order_counters_keep() -> None:
    assert len(set(KINDS)) == len(KINDS) == len(KIND_TABLE)
    assert list(INJECTION_SLOT) == list(KINDS)  # one injection counter per kind, in order
    assert len(set(INJECTION_SLOT.values())) == len(KINDS)


@pytest.mark.parametrize("kind", KIND_TABLE, ids=KINDS)
def test_the_config_model_takes_every_kind_and_the_pipe_carries_its_parameters(
    kind: Kind,
) -> None:
    spec = parse_fault(example(kind))
    assert type(spec) is MODELS[kind.name] and spec.kind == kind.name
    made = rule(7, spec)
    assert made.kind == kind.name
    for param in kind.params:
        given = getattr(spec, param.name)
        if given is None:
            continue
        own_field = param.field in {each.name for each in dataclasses.fields(FaultRule)}
        carried = getattr(made, param.field) if own_field else made.param(param.name)
        wanted = float(given) if param.wire_number else given
        assert repr(carried) == repr(wanted), param.name  # repr: nan equals nan


def test_farm_fault_add_help_lists_every_kind_and_every_parameter() -> None:
    add = fault.commands["add"]
    (argument,) = [param for param in add.params if param.name == "kind"]
    assert isinstance(argument.type, click.Choice)
    assert list(argument.type.choices) == list(KINDS)  # what `farm fault add KIND` takes
    shown = CliRunner().invoke(fault, ["add", "--help"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    for kind in KIND_TABLE:
        assert re.search(rf"^\s+{kind.name}\s+\S", shown.output, re.MULTILINE), kind.name
        for param in kind.params:
            option = "--" + param.name.replace("_", "-")
            assert re.search(rf"^\s+{option}\b.*{kind.name}|^\s+{option}\b", shown.output, re.M)
            assert f"{param.help}" in " ".join(shown.output.split()), (kind.name, param.name)


def test_openapi_and_the_fleet_views_fault_form_offer_every_kind(
    farm: FarmProcess, tmp_path: Path
) -> None:
    status, document = farm.http("GET", "/api/v1/openapi.json")
    assert status == 200
    schemas = document["components"]["schemas"]
    documented = {
        schema["properties"]["kind"].get("const"): schema
        for schema in schemas.values()
        if "kind" in schema.get("properties", {}) and "target" in schema["properties"]
    }
    assert sorted(documented) == sorted(KINDS)
    for kind in KIND_TABLE:
        properties = documented[kind.name]["properties"]
        assert {p.name for p in kind.params} <= set(properties), kind.name
    # The page's own code reads the kinds out of the document (farm/master/fleetview/web).
    for name in ("faults.js", "api.js", "words.js", "marks.js"):
        shutil.copy(WEB / name, tmp_path / name)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "document.json").write_text(json.dumps(document))
    script = (
        'import { faultKinds } from "./faults.js";\n'
        'import { readFileSync } from "node:fs";\n'
        'const kinds = faultKinds(JSON.parse(readFileSync("document.json", "utf8")));\n'
        "console.log(JSON.stringify(kinds.map(({ kind, params }) =>"
        " [kind, params.map((p) => p.name)])));\n"
    )
    (tmp_path / "kinds.js").write_text(script)
    node = shutil.which("node")
    assert node is not None, "node runs the page's module"
    done = subprocess.run(
        [node, "kinds.js"], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    offered = dict(json.loads(done.stdout))
    assert sorted(offered) == sorted(KINDS)
    for kind in KIND_TABLE:
        own = {p.name for p in kind.params}
        assert own <= set(offered[kind.name]), kind.name


def test_a_running_farm_labels_and_logs_every_kind(farm: FarmProcess, log_file: Path) -> None:
    with urllib.request.urlopen(f"http://{HOST}:{farm.api_port}/metrics", timeout=10) as answer:
        metrics = answer.read().decode()
    labelled = [
        sample.labels["kind"]
        for family in text_string_to_metric_families(metrics)
        if family.name == "modbus_farm_faults_active"
        for sample in family.samples
    ]
    assert labelled == list(KINDS)
    expected = []
    for kind in KIND_TABLE:
        status, made = farm.http("POST", "/api/v1/faults", json.dumps(example(kind)).encode())
        assert status == 200, (kind.name, made)
        assert made["kind"] == kind.name
        farm.http("DELETE", f"/api/v1/faults/{made['id']}")
        spec = made["spec"]
        said = log_text(kind.name, spec, spec.get("probability", 1.0))
        expected.append(f"fault {made['id']} applied: {said} on 1 server (meter-0000)")

    def logged() -> bool:
        text = log_file.read_text() if log_file.exists() else ""
        return all(line in text for line in expected)

    wait_for(logged, 10, "every kind's fault in the log")
    assert "delay ms=1 on" in log_file.read_text()  # the words themselves, for one kind
