"""A state file that cannot be written never loses data quietly: each failed save is a
WARNING, the farm exits non-zero, `farm status` shows the last good save's age, and the next
start says that the file it restores is older than the failure. Saves cannot be redirected
through a planted link, and a file that inflates past its banks is refused (issue 19)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import socket
import struct
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.cli.validate import make_plan
from farm.errors import StateFileError
from farm.master.state.statefile import (
    MAGIC,
    VERSION,
    encode,
    fleet_digest,
    load,
    write_atomically,
)
from tests.conftest import make_farm
from tests.farmproc import HOST, FarmProcess, wait_for
from tests.rawmodbus import read_registers, write_registers

pytestmark = pytest.mark.timeout(240)
COUNT = 100


def write_random(farm: FarmProcess, seed: int) -> list[list[int]]:
    """Ten random holding registers per server (they do not compress): what was written."""
    rng = random.Random(seed)
    written = []
    for index in range(COUNT):
        values = [rng.randrange(65536) for _ in range(10)]
        with socket.create_connection((HOST, farm.port(index)), timeout=5) as sock:
            write_registers(sock, 10, values)
        written.append(values)
    return written


def read_back(farm: FarmProcess, index: int) -> list[int]:
    return read_registers(farm.port(index), 10, 10)


def again(farm: FarmProcess) -> FarmProcess:
    return FarmProcess(
        count=COUNT,
        workers=farm.workers,
        port_base=farm.port_base,
        api_port=farm.api_port,
        extra=farm.extra,
    )


def test_failed_saves_warn_exit_non_zero_and_the_next_start_says_so(tmp_path: Path) -> None:
    state = tmp_path / "farm.state"
    first = make_farm(COUNT, workers=1, extra=["--state", str(state), "--state-interval", "0.3"])
    first.start()
    try:
        first.wait_ready()
        kept = write_random(first, seed=1)
    finally:
        code, _, stderr = first.stop()
    assert code == 0, stderr
    assert state.stat().st_size > 2048  # more than the file size limit set below

    second = again(first).start()
    try:
        second.wait_ready()
        # One good save of this farm first (every 0.3 s from its start): the status line below
        # shows that save's age.
        wait_for(lambda: second.status()["state"]["last_saved_age_s"] is not None, 30, "a save")
        # As a full disk would: no file of the master may grow past 1 KiB from now on (the
        # banks are made; the sidecar's 512 bytes are too).
        resource.prlimit(second.pid, resource.RLIMIT_FSIZE, (1024, 1024))
        write_random(second, seed=2)

        def failed_twice() -> dict[str, object] | None:
            found: dict[str, object] = second.status()["state"]
            return found if int(str(found["saves_failed"])) >= 2 else None

        summary = wait_for(failed_twice, 30, "two failed saves")
        assert summary["file"] == str(state) and "too large" in str(summary["last_error"])
        shown = subprocess.run(
            [sys.executable, "-m", "farm", "status", "--api-port", str(second.api_port)],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "COLUMNS": "1000"},
        )
        line = next(line for line in shown.stdout.splitlines() if line.startswith("state file"))
        assert line.startswith(f"state file {state}: last saved ")
        assert " s ago, " in line and "saves failed (last: File too large)" in line
    finally:
        code, _, stderr = second.stop()
    assert code == 1, stderr
    warnings = [line for line in stderr.splitlines() if "cannot save the state to" in line]
    assert len(warnings) >= 2 and all("WARNING" in line for line in warnings), stderr
    assert "saves of the state file" in stderr.splitlines()[-1]
    assert "Traceback" not in stderr

    third = again(first).start()
    try:
        third.wait_ready()
        assert read_back(third, 7) == kept[7]  # the last good save: the first farm's values
    finally:
        code, _, stderr = third.stop()
    assert code == 0, stderr
    assert "but the farm that used it failed to save it at" in stderr
    assert "what changed in between is lost" in stderr


def test_a_planted_link_at_any_temporary_name_is_never_followed(tmp_path: Path) -> None:
    """The old temporary name was .NAME.PID.tmp: a link there wrote the state elsewhere."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    target = tmp_path / "farm.state"
    (tmp_path / f".{target.name}.{os.getpid()}.tmp").symlink_to(victim)
    write_atomically(target, b"the state")
    assert victim.read_bytes() == b"untouched"
    assert target.read_bytes() == b"the state" and not target.is_symlink()


@pytest.fixture
def plan_of_two() -> Iterator[object]:
    yield make_plan(None, 2, None, 6500, 1)


def test_a_state_file_that_inflates_past_its_banks_is_refused_with_bounded_memory(
    tmp_path: Path, plan_of_two: object
) -> None:
    from farm.config.plan import Plan

    assert isinstance(plan_of_two, Plan)
    header = json.dumps(
        {"version": VERSION, "fleet": fleet_digest(plan_of_two), "records": 1, "saved_at": "x"}
    ).encode()
    bomb = zlib.compress(b"\0" * (200 * 1024 * 1024), 9)  # 200 MiB in about 200 KiB
    content = MAGIC + struct.pack(">I", len(header)) + header + bomb
    path = tmp_path / "bomb.state"
    path.write_bytes(content + hashlib.sha256(content).digest())
    tracemalloc.start()
    try:
        with pytest.raises(StateFileError, match="inflates to more than"):
            load(path, plan_of_two)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024


@pytest.fixture
def read_only_directory(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "ro"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
    try:
        plan = make_plan(None, 1, None, 6600, 1)
        found = encode([], fleet=fleet_digest(plan), origin="", fleets={}, servers=1)
        (where / "farm.state").write_bytes(found)  # a good state file, but read-only
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_state_file_on_a_read_only_filesystem_is_refused_at_start(
    read_only_directory: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "farm", "up", "--count", "1", "--port-base", "6600",
         "--state", str(read_only_directory / "farm.state")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "cannot write" in done.stderr and "Traceback" not in done.stderr
