"""`farm up --state FILE` keeps a fleet as `farm scale` left it: stopped (or killed with -9
after a save) and started again with the same command, the farm comes back at the scaled
size with every server's values, the added ones too."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from farm.client import FarmClient
from farm.config.behaviours import initialize_shard
from farm.config.plan import Plan, add_servers, build_plan, default_servers, table_offset
from farm.config.templates import Table, default_template
from farm.ipc.banks import Segment
from farm.master.state.restore import restore
from farm.master.state.saver import StateSaver
from farm.master.state.statefile import load, read
from tests.farmproc import HOST, FarmProcess, port_free, refused, scalable_farm, wait_for
from tests.rawmodbus import read_registers
from tests.test_state import saved_after, write_everywhere

pytestmark = pytest.mark.timeout(240)
START, ROOM = 20, 60  # servers at start; ports kept free for the fleet to grow into


def name(index: int) -> str:
    return f"device-{index:04d}"


def again(farm: FarmProcess, expected: int) -> FarmProcess:
    """The same command as `farm` (its --count START, ports and --state), started and ready
    with `expected` servers."""
    restarted = FarmProcess(
        count=START,
        workers=farm.workers,
        port_base=farm.port_base,
        api_port=farm.api_port,
        extra=farm.extra,
        ready_count=expected,
    )
    restarted.start()
    try:
        restarted.wait_ready()
    except AssertionError:
        restarted.kill()
        raise
    return restarted


def check_values(farm: FarmProcess, salts: dict[range, int]) -> None:
    for servers, salt in salts.items():
        for index in servers:
            assert read_registers(farm.port(index), 10, 3) == [index, salt, 0xBEEF], name(index)


def test_a_scaled_fleet_comes_back_at_its_size_with_every_value(tmp_path: Path) -> None:
    state = tmp_path / "farm.state"
    extra = ["--state", str(state), "--state-interval", "0.5"]
    farm = scalable_farm(START, ROOM, extra=extra)
    try:
        api = FarmClient.at(HOST, farm.api_port)
        # Up, down, up: device-0012... come back in the slots the leavers freed, with new
        # indexes, on the least-loaded worker: not where a fresh plan of 30 puts them.
        api.scale("default", 50)
        api.scale("default", 12)
        api.scale("default", 30)
        write_everywhere(farm, 30, salt=5)
        api.write(name(27), "holding_registers", 500, [4242, 7])  # by the API, as the operator
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    second = again(farm, 30)
    try:
        api = FarmClient.at(HOST, second.api_port)
        assert [s.name for s in api.servers()] == [name(i) for i in range(30)]
        check_values(second, {range(30): 5})
        assert api.read(name(27), "holding_registers", 500, 2) == [4242, 7]
        assert refused(second.port(30)) and port_free(second.port(49))
        # Then grown again, and the whole farm killed with -9 after a save.
        api.scale("default", 40)
        written = time.time()
        write_everywhere(second, 40, salt=9)
        saved_after(state, written)
        os.kill(second.pid, signal.SIGKILL)
    finally:
        second.kill()  # and its workers, by PID
    ports = [second.port(index) for index in range(40)] + [second.api_port]
    wait_for(lambda: all(port_free(port) for port in ports), 10, "every port to be free")
    third = again(second, 40)
    try:
        check_values(third, {range(40): 9})
        api = FarmClient.at(HOST, third.api_port)
        assert api.read(name(27), "holding_registers", 500, 2) == [4242, 7]
    finally:
        code, _, stderr = third.stop()
    assert code == 0, stderr
    assert "state restored" in stderr and "fleets: default 40" in stderr, stderr


def test_a_scale_is_saved_at_once_not_at_the_next_interval(tmp_path: Path) -> None:
    """With saves every 10 minutes, a kill -9 soon after a scale still brings the farm back
    at its scaled size: the scale itself asks for a save."""
    state = tmp_path / "farm.state"
    farm = scalable_farm(START, ROOM, extra=["--state", str(state), "--state-interval", "600"])
    try:
        first = state.stat().st_ino if state.exists() else None
        scaled = time.time()
        FarmClient.at(HOST, farm.api_port).scale("default", START + 5)

        def saved_scaled() -> bool:
            found = read(state) if state.exists() and state.stat().st_ino != first else None
            return found is not None and found[0].get("fleets") == {"default": START + 5}

        wait_for(saved_scaled, 20, "a save of the scaled farm")
        assert state.stat().st_mtime >= scaled - 1
        os.kill(farm.pid, signal.SIGKILL)
    finally:
        farm.kill()  # and its workers, by PID
    ports = [farm.port(index) for index in range(START + 5)] + [farm.api_port]
    wait_for(lambda: all(port_free(port) for port in ports), 10, "every port to be free")
    again_ = again(farm, START + 5)
    try:
        assert len(FarmClient.at(HOST, again_.api_port).servers()) == START + 5
    finally:
        code, _, stderr = again_.stop()
    assert code == 0, stderr


def test_a_scaled_state_file_with_another_count_is_refused(tmp_path: Path) -> None:
    """A file saved by a farm of 20 scaled to 26 is that fleet's, not one of 21's."""
    state = tmp_path / "farm.state"
    farm = scalable_farm(START, ROOM, extra=["--state", str(state)])
    try:
        FarmClient.at(HOST, farm.api_port).scale("default", 26)
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    content = state.read_bytes()
    command = [
        sys.executable, "-m", "farm", "up", "--count", str(START + 1),
        "--port-base", str(farm.port_base), "--api-port", str(farm.api_port),
        "--state", str(state),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "was written for another fleet (26 servers" in lines[0], lines
    assert state.read_bytes() == content


def test_a_scaled_plan_restores_into_a_fresh_plan_byte_for_byte(tmp_path: Path) -> None:
    """In process, over real segments: saved from a plan `farm scale` would leave (servers
    removed, newcomers in the freed slots and in new blocks, with new indexes in the order
    the scales came, on other workers) and restored into a fresh plan of the same servers on
    another number of workers, every server's holding registers come back exactly: servers
    are matched by name, not by index or place."""
    template = default_template()
    templates = {template.name: template}
    devices = default_servers(30, HOST, 20000, template.name)
    meters = [
        replace(request, name=f"meter-{i}", fleet="meters", port=21000 + i)
        for i, request in enumerate(default_servers(10, HOST, 21000, template.name))
    ]
    plan = build_plan(devices[:20] + meters[:5], templates, 2)  # indexes 0-19, 20-24
    shards = [
        replace(
            shard, servers=tuple(s for s in shard.servers if s.fleet == "meters" or s.index < 12)
        )
        for shard in plan.shards
    ]  # default: 20 -> 12
    shards[0] = add_servers(shards[0], [(25 + i, meters[5 + i]) for i in range(5)], templates, 0)
    grown = [(30 + i, devices[12 + i]) for i in range(18)]  # default: 12 -> 30, after meters
    shards[1] = add_servers(shards[1], grown[::2], templates, 0)
    shards[0] = add_servers(shards[0], grown[1::2], templates, 0)
    scaled = replace(plan, shards=tuple(shards))
    segments: list[Segment] = []
    rng = random.Random(12)

    def banks(plan: Plan) -> dict[int, str]:
        names = {}
        for shard in plan.shards:
            segment = Segment.create(shard.bank_bytes)
            initialize_shard(segment.buf, shard, templates)
            segments.append(segment)
            names[shard.worker] = segment.name
        return names

    def holding(plan: Plan, names: dict[int, str]) -> dict[str, bytes]:
        found = {}
        for shard in plan.shards:
            with open(f"/dev/shm/{names[shard.worker]}", "rb") as handle:
                data = handle.read()
            for spec in shard.servers:
                start = table_offset(spec, template, 1, Table.HOLDING_REGISTERS)
                found[spec.name] = data[start : start + 2000]
        return found

    try:
        names = banks(scaled)
        for shard in scaled.shards:
            with open(f"/dev/shm/{names[shard.worker]}", "r+b") as handle:
                for spec in shard.servers:  # a few runs in every server's holding registers
                    start = table_offset(spec, template, 1, Table.HOLDING_REGISTERS)
                    for _ in range(3):
                        handle.seek(start + rng.randrange(1990))
                        handle.write(rng.randbytes(rng.randrange(1, 10)))
        before = holding(scaled, names)
        state = tmp_path / "farm.state"
        saver = StateSaver(state, lambda: scaled, names)
        saver.save()
        saver.close()
        fresh = build_plan(devices + meters, templates, 3)  # as a config of 30 and 10 builds
        snapshot = load(state, fresh)
        assert snapshot is not None
        fresh_names = banks(fresh)
        restore(snapshot, fresh, fresh_names)
        after = holding(fresh, fresh_names)
        assert sorted(after) == sorted(before) == sorted(s.name for s in devices + meters)
        for server, data in before.items():
            assert after[server] == data, server
    finally:
        for segment in segments:
            segment.close()
