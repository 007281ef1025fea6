"""The shipped Grafana dashboards, their provisioning and the compose deployment, read as
Grafana and Docker Compose would read them (neither runs here; Prometheus does, in
test_metrics_prometheus.py, which runs every dashboard query)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from farm.cli.prometheus_config import FarmTarget, render_config
from tests.tools import tool

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
COMPOSE = ROOT / "deploy" / "compose"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def boards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def uids(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("uid"), str) and "type" in node:
            yield node["uid"]
        for child in node.values():
            yield from uids(child)
    elif isinstance(node, list):
        for child in node:
            yield from uids(child)


def test_three_dashboards_with_a_datasource_variable() -> None:
    found = boards()
    assert set(found) == {"fleet.json", "server.json", "workers.json"}
    assert len({board["uid"] for board in found.values()}) == 3
    for name, board in found.items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        source = variables["datasource"]
        assert source["type"] == "datasource" and source["query"] == "prometheus", name
        # No hard-coded data source anywhere: every reference goes through the variable.
        assert set(uids(board)) <= {"${datasource}", "-- Grafana --"}, name
        for panel in panels(board):
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == DATASOURCE, (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE and target["expr"].strip()


def test_panels_do_not_overlap() -> None:
    for name, board in boards().items():
        taken: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (name, panel["title"])
            cells = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not cells & taken, (name, panel["title"])
            taken |= cells


def test_dashboards_show_what_the_issue_asks_for() -> None:
    found = boards()
    exprs = {
        name: " ".join(t["expr"] for p in panels(b) for t in p.get("targets", []))
        for name, b in found.items()
    }
    for metric in (
        # per-server families through the recording rules (joined to their fleet)
        'server:modbus_farm_requests:rate1m{fleet=~"$fleet"}',
        'server:modbus_farm_exceptions:rate1m{fleet=~"$fleet"}',
        'server:modbus_farm_request_duration_seconds_bucket:rate1m{fleet=~"$fleet"}',
        'server:modbus_farm_connections_open:fleet{fleet=~"$fleet"}',
        "modbus_farm_servers_ready",
        "modbus_farm_servers_desired",
        "topk(10, sum by (server) (server:modbus_farm_requests:rate1m",
        "topk(10, sum by (server) (server:modbus_farm_exceptions:rate1m",
        "histogram_quantile(0.99",
        "sum by (kind) (modbus_farm_faults_active)",
        "sum by (kind) (rate(modbus_farm_fault_injections_total",
        "rate(modbus_farm_outages_total",
        'function_code=~"5|6|15|16|21|22|23"',  # the write rate
        'modbus_farm_server_info{fleet=~"$fleet"} unless on (server, worker)',  # never polled
        "sum by (client) (rate(modbus_farm_client_requests_total",  # polls by client
        "modbus_farm_client_poll_interval_seconds",
        "modbus_farm_client_servers",
        "modbus_farm_client_stale_servers",
    ):
        assert metric in exprs["fleet.json"], metric
    fleet_variables = found["fleet.json"]["templating"]["list"]
    assert "label_values(modbus_farm_server_info, fleet)" in json.dumps(fleet_variables)
    for metric in (
        "modbus_farm_worker_heartbeat_age_seconds",
        "modbus_farm_worker_restarts_total",
        "modbus_farm_worker_loop_lag_seconds",
        "modbus_farm_worker_cpu_seconds_total",
        "modbus_farm_worker_resident_memory_bytes",
    ):
        assert metric in exprs["workers.json"], metric
    server = found["server.json"]
    assert "server" in {v["name"] for v in server["templating"]["list"]}
    for panel in panels(server):
        for target in panel.get("targets", []):
            assert '{server="$server"}' in target["expr"], panel["title"]
    # The fleet's top-N tables link to the one-server dashboard.
    links = json.dumps(found["fleet.json"])
    assert f"/d/{server['uid']}/" in links and "var-server=" in links


def test_the_fleet_dashboard_marks_each_scenario_step() -> None:
    annotations = boards()["fleet.json"]["annotations"]["list"]
    (steps,) = [each for each in annotations if "modbus_farm_scenario_step" in each.get("expr", "")]
    assert steps["datasource"] == DATASOURCE and steps["enable"] is True
    assert "{{index}}" in steps["titleFormat"] and "{{name}}" in steps["textFormat"]


def test_provisioning_points_at_the_dashboards() -> None:
    sources = yaml.safe_load((DASHBOARDS / "provisioning/datasources/prometheus.yaml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    providers = yaml.safe_load(
        (DASHBOARDS / "provisioning/dashboards/modbus-farm.yaml").read_text()
    )
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../../dashboards:{provider['options']['path']}:ro" in mounts
    home = compose["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert home == f"{provider['options']['path']}/fleet.json"


def test_compose_file_is_complete() -> None:
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"farm", "prometheus", "grafana"}
    build = services["farm"]["build"]
    context = (COMPOSE / build["context"]).resolve()
    assert context == ROOT and build["dockerfile"] == "Dockerfile"  # the image k8s runs too
    assert services["farm"]["image"] == "modbus-farm:0.1.0"
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), (name, volume)
            else:
                assert source in compose["volumes"], (name, volume)
    command = services["farm"]["command"]
    api_port = next(arg.split("=")[1] for arg in command if arg.startswith("--api-port="))
    assert "--api-host=0.0.0.0" in command  # Prometheus reaches it from another container
    scrape = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    expected = render_config([FarmTarget(f"farm:{api_port}", "/metrics", 100)], "modbus-farm")
    assert scrape == yaml.safe_load(expected)  # what `farm prometheus-config` would print
    source = yaml.safe_load((DASHBOARDS / "provisioning/datasources/prometheus.yaml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"


def test_compose_prometheus_config_is_valid() -> None:
    check = subprocess.run(
        [tool("promtool"), "check", "config", str(COMPOSE / "prometheus.yml")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_recording_rules_are_valid_and_every_one_is_on_the_fleet_board() -> None:
    rules = DASHBOARDS / "recording-rules.yml"
    check = subprocess.run(
        [tool("promtool"), "check", "rules", str(rules)], capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    recorded = [
        rule["record"] for group in yaml.safe_load(rules.read_text())["groups"]
        for rule in group["rules"]
    ]  # fmt: skip
    fleet = boards()["fleet.json"]
    exprs = [target["expr"] for panel in panels(fleet) for target in panel.get("targets", [])]
    for name in recorded:
        assert any(name in expr for expr in exprs), name
    # Every fleet-board query that reads a recorded series filters it by $fleet.
    for expr in exprs:
        if "server:" in expr:
            assert expr.count("server:") == expr.count('fleet=~"$fleet"'), expr


def test_the_kubernetes_prometheus_rule_carries_the_same_rules() -> None:
    rules = yaml.safe_load((DASHBOARDS / "recording-rules.yml").read_text())
    shipped = yaml.safe_load((ROOT / "deploy/k8s/base/prometheusrule.yaml").read_text())
    assert shipped["kind"] == "PrometheusRule"
    assert shipped["spec"]["groups"] == rules["groups"]
    kustomization = yaml.safe_load((ROOT / "deploy/k8s/base/kustomization.yaml").read_text())
    assert "prometheusrule.yaml" in kustomization["resources"]
