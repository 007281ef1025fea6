"""scripts/test-image's Kubernetes phase, checked against the manifest.

    python -m tests.image_pod_checks PODS.yaml POD=IP [POD=IP ...]

What each pod must serve comes from the fleet file in PODS.yaml (expanded and sliced the way
the farm does it), how it must be confined from its pod spec: every pod serves exactly its
shard (its status, a Modbus read of its first and last device, nothing at the next shard's
first port), runs as the manifest's user on a read-only root with no capabilities under the
manifest's memory limit, and `farm targets` over all pods lists every device once, at the
pod that serves it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from farm.config.fleets import FarmFile
from farm.config.plan import ServerRequest
from farm.config.schema import FarmModel
from farm.config.shards import FleetSlice, fleet_slices
from tests.image_checks import CheckFailed, get_json, modbus, ready, refused

UNITS = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


def pods(path: Path, addresses: dict[str, str]) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    specs = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Pod"}
    if set(specs) != set(addresses):
        raise CheckFailed(f"pods: addresses for {sorted(addresses)}, pods {sorted(specs)}")
    fleet = next(d for d in documents if d["kind"] == "ConfigMap")["data"]["fleet.yaml"]
    model = FarmModel.model_validate(yaml.safe_load(fleet))
    _, requests = FarmFile(Path("fleet.yaml"), model).expand()
    slices = fleet_slices(len(requests), len(specs))
    for name, pod in specs.items():
        index = int(name.rsplit("-", 1)[1])
        part, ip = slices[index], addresses[name]
        ready(f"{ip}:9502", timeout=120)
        serving(ip, part.index, len(slices), part.start, part.stop)
        modbus(ip, [requests[part.start].port, requests[part.stop - 1].port])
        if part.stop < len(requests):
            refused(ip, requests[part.stop].port)
        confined(name, pod)
    listed(requests, slices, addresses)


def serving(ip: str, index: int, count: int, start: int, stop: int) -> None:
    status = get_json(f"http://{ip}:9502/api/v1/status")
    got, wanted = status["shard"], {"index": index, "count": count, "start": start, "stop": stop}
    if {key: got[key] for key in wanted} != wanted or status["servers_ready"] != stop - start:
        raise CheckFailed(f"shard: {ip} serves {got} with {status['servers_ready']} ready")
    print(f"shard: {ip} serves shard {index} of {count}, fleet servers {start}..{stop - 1}")


def exec_in(container: str, script: str) -> str:
    done = subprocess.run(
        ["podman", "exec", container, "sh", "-c", script],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.stdout + done.stderr


def confined(pod_name: str, pod: dict[str, Any]) -> None:
    """As the manifest says: its user, read-only root, no capabilities, its memory limit."""
    spec = pod["spec"]
    (container,) = spec["containers"]
    name = f"{pod_name}-{container['name']}"
    security = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
    limit = bytes_of(container["resources"]["limits"]["memory"])
    seen = exec_in(
        name,
        "hostname; grep -E '^(Uid|Gid|CapEff|CapBnd):' /proc/1/status; "
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
        " || cat /sys/fs/cgroup/memory.max; touch /probe",
    )
    fields = dict(re.findall(r"^(\w+):\s+(\S+)", seen, re.MULTILINE))
    problems = []
    if not seen.startswith(f"{spec['hostname']}\n"):
        problems.append("hostname is not the pod's name")
    if (fields.get("Uid"), fields.get("Gid")) != (
        str(security["runAsUser"]),
        str(security["runAsGroup"]),
    ):
        problems.append(f"runs as {fields.get('Uid')}:{fields.get('Gid')}")
    if int(fields.get("CapEff", "1"), 16) or int(fields.get("CapBnd", "1"), 16):
        problems.append(f"capabilities {fields.get('CapEff')}/{fields.get('CapBnd')}")
    if re.search(rf"^{limit}$", seen, re.MULTILINE) is None:
        problems.append(f"memory limit is not {limit}")
    if security.get("readOnlyRootFilesystem") and "Read-only file system" not in seen:
        problems.append("the root filesystem took a write")
    if problems:
        raise CheckFailed(f"{name}: {'; '.join(problems)} (saw: {seen!r})")
    print(
        f"confined: {name} as {fields['Uid']}:{fields['Gid']}, hostname {spec['hostname']}, "
        f"read-only root, no capabilities, memory limit {limit} bytes ({used(name)} in use)"
    )


def used(container: str) -> str:
    done = subprocess.run(
        ["podman", "stats", "--no-stream", "--format", "{{.MemUsage}}", container],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.stdout.strip().split(" / ")[0] or "?"


def bytes_of(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", quantity)
    if match is None:
        raise CheckFailed(f"a memory quantity this check does not read: {quantity!r}")
    return int(match[1]) * UNITS[match[2] or ""]


def listed(
    requests: list[ServerRequest], slices: list[FleetSlice], addresses: dict[str, str]
) -> None:
    """`farm targets` over every pod: each device once, at the pod serving it, on its port."""
    ips = [addresses[name] for name in sorted(addresses, key=lambda n: int(n.rsplit("-", 1)[1]))]
    command = ["farm", "targets", "--format", "json"]
    for ip in ips:
        command += ["--farm", f"{ip}:9502"]
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise CheckFailed(f"targets: {' '.join(command)}: {done.stderr.strip()}")
    devices = json.loads(done.stdout)["devices"]
    where = {d["name"]: (d["ip"], d["port"]) for d in devices}
    wanted = {
        request.name: (ips[shard], request.port)
        for shard, part in enumerate(slices)
        for request in requests[part.start : part.stop]
    }
    if len(devices) != len(requests) or where != wanted:
        wrong = sorted(name for name in wanted if where.get(name) != wanted[name])[:3]
        raise CheckFailed(
            f"targets: {len(devices)} devices listed for {len(requests)}; misplaced: {wrong}"
        )
    print(
        f"targets: `farm targets` over {len(ips)} pods lists all {len(requests)} devices once, "
        f"each at its pod's address and port ({time.monotonic() - start:.1f} s)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pods", type=Path, help="what tests.image_pods wrote")
    parser.add_argument("addresses", nargs="+", metavar="POD=IP")
    args = parser.parse_args(argv)
    try:
        pods(args.pods, dict(address.split("=", 1) for address in args.addresses))
    except CheckFailed as failure:
        sys.exit(f"FAILED {failure}")


if __name__ == "__main__":
    main()
