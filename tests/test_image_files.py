"""What scripts/test-image rests on, checked without podman (the script runs it all for real):
the converter turns deploy/k8s/base into one pod per ordinal as `podman kube play` needs it,
the image's default is the API on every address with a token, scripts/test runs the image
test unless FARM_SKIP_IMAGE=1 says not to, and README's examples leave nothing to commit.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.image_pods import TmpfsVolume, convert
from tests.test_k8s import K8S, one, render

ROOT = Path(__file__).resolve().parent.parent


def test_the_statefulset_becomes_one_pod_per_ordinal() -> None:
    objects = render(K8S / "base")
    statefulset = one(objects, "StatefulSet")
    documents, volumes = convert(objects, {"test": "1"})
    pods = [d for d in documents if d["kind"] == "Pod"]
    assert [p["metadata"]["name"] for p in pods] == ["modbus-farm-0", "modbus-farm-1"]
    assert [p["spec"]["hostname"] for p in pods] == ["modbus-farm-0", "modbus-farm-1"]
    template = statefulset["spec"]["template"]["spec"]
    for pod in pods:
        name, spec = pod["metadata"]["name"], pod["spec"]
        assert pod["metadata"]["labels"]["test"] == "1"
        (farm,) = spec["containers"]
        (original,) = template["containers"]
        # What the pod runs is the manifest's, less what podman would get wrong.
        kept = {k: v for k, v in original.items() if not k.endswith("Probe") and k != "ports"}
        assert farm == kept
        assert spec["securityContext"] == template["securityContext"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
                  if "persistentVolumeClaim" in v}  # fmt: skip
        assert claims == {"shm": f"{name}-shm", "tmp": f"{name}-tmp"}
        assert not any("emptyDir" in v for v in spec["volumes"])
    assert TmpfsVolume("modbus-farm-1-shm", 64 << 20, 10001, 10001) in volumes
    assert TmpfsVolume("modbus-farm-0-tmp", 16 << 20, 10001, 10001) in volumes
    assert len(volumes) == 4  # every pod's own: none shared
    (fleet,) = [d for d in documents if d["kind"] == "ConfigMap"]
    assert fleet == one(objects, "ConfigMap", "modbus-farm-fleet")  # the dashboards stay out


def test_the_images_default_is_the_api_everywhere_with_a_token() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    (cmd,) = re.findall(r"^CMD \[(.*)\]$", dockerfile, re.MULTILINE)
    args = [a.strip().strip('"') for a in cmd.split(",")]
    assert "--api-host=0.0.0.0" in args and "--host=0.0.0.0" in args
    assert "--generate-api-token" in args and "--api-insecure" not in args
    # The user's group is its own 10001, the numeric group USER names.
    assert re.search(r"groupadd --system --gid 10001 farm", dockerfile)
    assert re.search(r"useradd --system --uid 10001 --gid 10001", dockerfile)
    assert re.search(r"^USER 10001:10001$", dockerfile, re.MULTILINE)


def test_scripts_test_runs_the_image_test_unless_told_not_to() -> None:
    script = (ROOT / "scripts" / "test").read_text()
    assert 'if [ "${FARM_SKIP_IMAGE:-}" = 1 ]; then' in script
    assert "scripts/test-image || image_status=$?" in script
    assert script.index('pytest "$@"') < script.index("scripts/test-image ||")
    assert (ROOT / "scripts" / "test-image").stat().st_mode & 0o111


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="no git")
def test_readme_examples_leave_no_keys_or_state_to_commit() -> None:
    left = ["certs/ca.key", "certs/server.key", "certs/server.pem", "farm.state",
            ".farm.state.4242.tmp", "plant/server.key"]  # fmt: skip
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", *left],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.stdout.split() == left
