"""`farm up --state FILE`: every bank back after a stop, after a kill -9 of the whole farm up
to the last save; corrupt and foreign files refused with one line, never half-applied."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_farm
from tests.farmproc import HOST, FarmProcess, descendants, port_free, wait_for
from tests.rawmodbus import read_registers, write_registers

pytestmark = pytest.mark.timeout(180)


def write_everywhere(farm: FarmProcess, count: int, salt: int) -> None:
    """Three holding registers per server, distinct per server and per `salt`."""
    for index in range(count):
        with socket.create_connection((HOST, farm.port(index)), timeout=5) as sock:
            write_registers(sock, 10, [index, salt, 0xBEEF])


def saved_after(path: Path, moment: float, saves: int = 2, timeout: float = 20) -> None:
    """Wait until `path` was replaced `saves` times after `moment` (time.time())."""
    seen: set[int] = set()

    def replaced() -> bool:
        with_inode = path.stat()
        if with_inode.st_mtime > moment:
            seen.add(with_inode.st_ino)  # each save renames a new file into place
        return len(seen) >= saves

    wait_for(replaced, timeout, f"{saves} saves of {path.name}")


def test_every_value_survives_a_stop_and_start(tmp_path: Path) -> None:
    state = tmp_path / "farm.state"
    farm = make_farm(500, extra=["--state", str(state)])
    farm.start()
    try:
        farm.wait_ready()
        write_everywhere(farm, 500, salt=7)
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    assert "state file" in stderr and "does not exist yet" in stderr
    assert "state saved" in stderr
    size = state.stat().st_size
    assert size < 500 * 64  # only what differs from the starting values, compressed
    # Other ports and another worker count: the file describes servers by name, not where
    # they listen or which worker hosts them.
    again = make_farm(500, workers=3, extra=farm.extra)
    again.start()
    try:
        again.wait_ready()
        for index in range(500):
            assert read_registers(again.port(index), 10, 4) == [index, 7, 0xBEEF, 0]
    finally:
        code, _, stderr = again.stop()
    assert code == 0, stderr
    assert "state restored" in stderr
    print(f"state of 500 devices: {size} bytes")


def test_kill_9_of_the_farm_loses_at_most_the_last_interval(tmp_path: Path) -> None:
    """And the workers of a killed master exit (they see the end of its pipe at once; 2 s
    is the design's figure, waited for with a wide margin for a loaded machine), releasing
    every port."""
    state = tmp_path / "farm.state"
    extra = ["--state", str(state), "--state-interval", "0.5"]
    farm = make_farm(20, extra=extra)
    farm.start()
    try:
        farm.wait_ready()
        workers = descendants(farm.pid)
        written = time.time()
        write_everywhere(farm, 20, salt=1)
        saved_after(state, written)
        os.kill(farm.pid, signal.SIGKILL)
        killed = time.monotonic()
        gone = 2.0 + 8  # the design's 2 s and a wide margin
        wait_for(lambda: not (workers & descendants(os.getpid())), gone, "the workers to exit")
        gone_after = time.monotonic() - killed
        ports = [farm.port(index) for index in range(20)] + [farm.api_port]
        wait_for(lambda: all(port_free(port) for port in ports), gone, "every port to be free")
    finally:
        farm.kill()
    print(f"workers gone {gone_after:.2f} s after kill -9 of the master")
    again = make_farm(20, extra=extra)
    again.start()
    try:
        again.wait_ready()
        for index in range(20):
            assert read_registers(again.port(index), 10, 3) == [index, 1, 0xBEEF]
    finally:
        code, _, stderr = again.stop()
    assert code == 0, stderr


@pytest.fixture(scope="module")
def saved_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good state file of a 4-server default farm, with values written."""
    state = tmp_path_factory.mktemp("state") / "farm.state"
    farm = make_farm(4, extra=["--state", str(state)])
    farm.start()
    try:
        farm.wait_ready()
        write_everywhere(farm, 4, salt=3)
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    return state


def truncated(data: bytes) -> bytes:
    return data[: len(data) - 40]


def flipped(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def version_1(data: bytes) -> bytes:
    """The file as format version 1 wrote it (records by server index), checksum and all."""
    import hashlib
    import struct

    start = len(b"MODBUS-FARM-STATE\n")
    (length,) = struct.unpack_from(">I", data, start)
    header = data[start + 4 : start + 4 + length].replace(b'"version": 2', b'"version": 1')
    content = data[: start + 4] + header + data[start + 4 + length : -32]
    return content + hashlib.sha256(content).digest()


@pytest.mark.parametrize(
    ("spoil", "count", "words"),
    [
        (truncated, 4, "is corrupt"),
        (flipped, 4, "is corrupt"),
        (lambda data: data, 5, "was written for another fleet"),
        (lambda data: b"hello" + data, 4, "is not a modbus-farm state file"),
        (version_1, 4, "has format version 1, not 2"),
    ],
    ids=["truncated", "flipped-byte", "another-fleet", "not-a-state-file", "version-1"],
)
def test_a_bad_state_file_is_refused_with_one_line(
    saved_state: Path, tmp_path: Path, spoil: object, count: int, words: str
) -> None:
    assert callable(spoil)
    bad = tmp_path / "bad.state"
    content = spoil(saved_state.read_bytes())
    bad.write_bytes(content)
    farm = make_farm(count, extra=["--state", str(bad)])
    command = [
        sys.executable, "-m", "farm", "up", "--count", str(count),
        "--port-base", str(farm.port_base), "--api-port", str(farm.api_port),
        "--state", str(bad),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and words in lines[0] and "refusing it" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert bad.read_bytes() == content  # untouched: nothing saved over it
    assert port_free(farm.port_base)  # nothing was bound


MIXED = """
templates:
  meter:
    units: [{unit_id: 1, coils: 20, discrete_inputs: 9, holding_registers: 40, input_registers: 30}]
    points:
      - {name: energy, table: input_registers, address: 4, type: float32,
         behaviour: {kind: counter, value: 10, step: 1}}
      - {name: volts, table: input_registers, address: 8, behaviour: {kind: sine}}
      - {name: serial, table: holding_registers, address: 0, type: uint32, value: 77}
  gateway:
    units:
      - {unit_id: 1, coils: 8, holding_registers: 10}
      - {unit_id: 9, coils: 3, discrete_inputs: 5, holding_registers: 7, input_registers: 2}
fleets:
  - {name: meters, template: meter, count: 7, addressing: {port_start: 5020}}
  - {name: gateways, template: gateway, count: 5, addressing: {port_start: 6020}}
"""


def test_saved_and_restored_banks_are_byte_for_byte_the_same(tmp_path: Path) -> None:
    """In process, over real segments: random writes anywhere in a fleet of two templates
    (several units, bits and registers) come back exactly, on any number of workers;
    only the time-only live point (the sine) is not carried over."""
    import random

    from farm.config.behaviours import initialize_shard
    from farm.config.fleets import load
    from farm.config.plan import build_plan
    from farm.ipc.banks import Segment
    from farm.master.state.restore import restore
    from farm.master.state.saver import StateSaver
    from farm.master.state.statefile import load as load_state

    config = tmp_path / "farm.yaml"
    config.write_text(MIXED)
    templates, requests = load(config).expand()
    rng = random.Random(5)
    segments: list[Segment] = []

    def farm_of(workers: int) -> tuple[Any, dict[int, str]]:
        plan = build_plan(requests, templates, workers)
        names = {}
        for shard in plan.shards:
            segment = Segment.create(shard.bank_bytes)
            initialize_shard(segment.buf, shard, plan.templates)
            segments.append(segment)
            names[shard.worker] = segment.name
        return plan, names

    def image(plan: Any, names: dict[int, str]) -> dict[str, bytes]:
        """Every server's banks as bytes, by server name."""
        from farm.config.plan import TABLE_ORDER, table_bytes, table_offset

        found = {}
        for shard in plan.shards:
            with open(f"/dev/shm/{names[shard.worker]}", "rb") as handle:
                data = handle.read()
            for spec in shard.servers:
                template = plan.templates[spec.template]
                parts = []
                for unit in template.units:
                    for table in TABLE_ORDER:
                        start = table_offset(spec, template, unit.unit_id, table)
                        parts.append(data[start : start + table_bytes(unit, table)])
                found[spec.name] = b"".join(parts)
        return found

    try:
        plan, names = farm_of(3)
        for shard in plan.shards:  # scribble over every segment, a few runs each
            with open(f"/dev/shm/{names[shard.worker]}", "r+b") as handle:
                for _ in range(40):
                    handle.seek(rng.randrange(shard.bank_bytes))
                    handle.write(rng.randbytes(rng.randrange(1, 12)))
        before = image(plan, names)
        state = tmp_path / "farm.state"
        saver = StateSaver(state, lambda: plan, names)
        saver.save()
        saver.close()
        plan2, names2 = farm_of(2)
        snapshot = load_state(state, plan2)
        assert snapshot is not None
        restore(snapshot, plan2, names2)
        after = image(plan2, names2)
        volts = 20 + 9 + 2 * 40 + 2 * 8  # coils, discrete inputs, holding, input register 8
        for name, data in before.items():
            if name.startswith("meters"):  # the sine is recomputed, not restored
                data = data[:volts] + after[name][volts : volts + 2] + data[volts + 2 :]
            assert after[name] == data, name
    finally:
        for segment in segments:
            segment.close()


def test_save_and_restore_lines_mean_the_same_bytes(tmp_path: Path) -> None:
    """The save's line and the restore's line count the same things in the same words: the
    changed ranges, the bytes of register data in them, and the file's size."""
    state = tmp_path / "farm.state"
    farm = make_farm(4, extra=["--state", str(state)])
    farm.start()
    try:
        farm.wait_ready()
        write_everywhere(farm, 4, salt=5)
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    size = state.stat().st_size
    said = re.compile(r"(\d+) changed ranges? \((\d+) bytes of register data\), a file of (\d+) b")
    saved = [m.groups() for line in stderr.splitlines() if "state saved" in line
             for m in [said.search(line)] if m]  # fmt: skip
    assert saved and saved[-1][2] == str(size), stderr
    again = make_farm(4, extra=farm.extra)
    again.start()
    try:
        again.wait_ready()
    finally:
        code, _, stderr = again.stop()
    assert code == 0, stderr
    restored = [m.groups() for line in stderr.splitlines() if "state restored" in line
                for m in [said.search(line)] if m]  # fmt: skip
    assert restored == [saved[-1]], stderr
