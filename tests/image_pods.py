"""deploy/k8s as pods for `podman kube play` (scripts/test-image's Kubernetes phase).

    python -m tests.image_pods RENDERED.yaml PODS.yaml --label KEY=VALUE

reads what `kubectl kustomize deploy/k8s/base` printed and writes what podman 4.3 plays:
podman takes Pods, not StatefulSets, so the StatefulSet becomes one Pod per ordinal, named
and with the hostname a StatefulSet gives it (NAME-I, which `--shard-index-from-hostname`
reads). podman would make every pod's emptyDir one volume shared by all pods of that name,
so each becomes a claim on a volume of the pod's own (POD-VOLUME); the volumes, tmpfs of
the emptyDir's sizeLimit owned by the pod's user, are printed one a line as `tmpfs NAME
SIZE UID GID` for the script to create before the play; `configmap NAME` lines name the
volumes podman makes of the ConfigMaps, for the script to remove after. The container ports go (see
pod_of), and so do the probes: podman runs
them through systemd timers, which a machine without systemd does not have; the script
polls the same endpoints itself. The ConfigMaps the pods mount are kept; the rest (Service,
ServiceMonitor, the dashboards) has no podman meaning and is left out.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
UNITS = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
DEFAULT_EMPTYDIR_BYTES = 64 << 20  # an emptyDir without sizeLimit: a small tmpfs


@dataclass(frozen=True)
class TmpfsVolume:
    """A per-pod volume standing for one emptyDir: tmpfs of `size` bytes owned by uid:gid."""

    name: str
    size: int
    uid: int
    gid: int

    def line(self) -> str:
        return f"tmpfs {self.name} {self.size} {self.uid} {self.gid}"


def quantity_bytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", quantity)
    if match is None:
        raise ValueError(f"a size this converter does not read: {quantity!r}")
    return int(match[1]) * UNITS[match[2] or ""]


def convert(
    objects: list[dict[str, Any]], labels: dict[str, str]
) -> tuple[list[dict[str, Any]], list[TmpfsVolume]]:
    """The pods (and the ConfigMaps they mount) of every StatefulSet, and their volumes."""
    documents: list[dict[str, Any]] = []
    volumes: list[TmpfsVolume] = []
    for statefulset in (o for o in objects if o["kind"] == "StatefulSet"):
        for ordinal in range(statefulset["spec"]["replicas"]):
            pod, own = pod_of(statefulset, ordinal, labels)
            documents.append(pod)
            volumes.extend(own)
    mounted = {
        volume["configMap"]["name"]
        for pod in documents
        for volume in pod["spec"]["volumes"]
        if "configMap" in volume
    }
    config_maps = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] in mounted
    ]
    return config_maps + documents, volumes


def pod_of(
    statefulset: dict[str, Any], ordinal: int, labels: dict[str, str]
) -> tuple[dict[str, Any], list[TmpfsVolume]]:
    template = copy.deepcopy(statefulset["spec"]["template"])
    name = f"{statefulset['metadata']['name']}-{ordinal}"
    spec = template["spec"]
    spec["hostname"] = name
    for container in spec["containers"]:
        for probe in PROBES:
            container.pop(probe, None)
        # podman 4.3 publishes a containerPort without hostPort on every address of the
        # host (0.0.0.0:9502), where Kubernetes publishes nothing: the pods are reached at
        # their own addresses on the script's network, as a cluster reaches them.
        container.pop("ports", None)
    security = spec.get("securityContext", {})
    uid, gid = security.get("runAsUser", 0), security.get("runAsGroup", 0)
    volumes = []
    for volume in spec["volumes"]:
        empty = volume.pop("emptyDir", None)
        if empty is None:
            continue
        size = empty.get("sizeLimit")
        own = TmpfsVolume(
            f"{name}-{volume['name']}",
            quantity_bytes(size) if size else DEFAULT_EMPTYDIR_BYTES,
            uid,
            gid,
        )
        volume["persistentVolumeClaim"] = {"claimName": own.name}
        volumes.append(own)
    metadata = template.get("metadata", {})
    metadata["name"] = name
    metadata["labels"] = {
        **metadata.get("labels", {}),
        **labels,
        "statefulset.kubernetes.io/pod-name": name,
    }
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    return pod, volumes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rendered", type=Path, help="what `kubectl kustomize` printed")
    parser.add_argument("pods", type=Path, help="where to write the pods for `podman kube play`")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE on every pod")
    args = parser.parse_args(argv)
    objects = [o for o in yaml.safe_load_all(args.rendered.read_text()) if o]
    labels = dict(label.split("=", 1) for label in args.label)
    documents, volumes = convert(objects, labels)
    args.pods.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    lines = [volume.line() for volume in volumes] + [
        f"configmap {d['metadata']['name']}" for d in documents if d["kind"] == "ConfigMap"
    ]
    sys.stdout.write("".join(f"{line}\n" for line in lines))


if __name__ == "__main__":
    main()
