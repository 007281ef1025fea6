"""The open-files limit is raised in one place (farm.openfiles), and every process of a farm
runs with it raised, whatever soft limit it was started under."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_farm
from tests.farmproc import descendants

pytestmark = pytest.mark.timeout(120)
FARM = Path(__file__).resolve().parent.parent / "farm"


def test_only_farm_openfiles_touches_the_open_files_limit() -> None:
    touching = sorted(
        str(path.relative_to(FARM))
        for path in FARM.rglob("*.py")
        if "RLIMIT_NOFILE" in path.read_text() or "setrlimit" in path.read_text()
    )
    assert touching == ["openfiles.py"]


def open_files(pid: int) -> tuple[str, str]:
    with open(f"/proc/{pid}/limits") as limits:
        line = next(line for line in limits if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return soft, hard


def test_master_and_workers_raise_a_low_soft_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 512:
        pytest.fail(f"this test needs a hard open-files limit above 512, not {hard}")
    farm = make_farm(4, workers=2)

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))

    command = [
        sys.executable, "-m", "farm", "up", "--count", str(farm.count),
        "--port-base", str(farm.port_base), "--workers", str(farm.workers),
        "--api-port", str(farm.api_port),
    ]  # fmt: skip
    farm.process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=low_soft_limit,
    )
    try:
        farm.wait_ready()
        processes = [farm.pid, *farm.worker_pids()]
        assert all(pid in descendants(farm.pid) for pid in processes[1:])
        assert {open_files(pid) for pid in processes} == {(str(hard), str(hard))}
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
