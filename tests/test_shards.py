"""Shards: one fleet served by N farms, each a stable, disjoint slice (farm.config.shards).

Properties over random fleet sizes and shard counts (hypothesis), the options of `farm up`
and `farm plan`, and four real farms serving one 1,000-device fleet as four shards: every
device exactly once, each under its own name, listed by `farm targets --farm ...`, and
scraped in full by a real Prometheus configured by `farm prometheus-config --farm ...`.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.client import ModbusTcpClient
from pymodbus.pdu.mei_message import ReadDeviceInformationResponse

from farm.cli import sharding
from farm.config.fleets import load
from farm.config.plan import build_plan, default_servers
from farm.config.shards import fleet_slice, fleet_slices, index_from_hostname
from farm.config.templates import default_template
from farm.errors import ConfigError
from farm.master.http.probes import liveness
from tests.farmproc import HOST, FarmProcess, free_port, wait_for
from tests.prometheus_server import running_prometheus

ROOT = Path(__file__).resolve().parent.parent


def farm_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


# -- the slices ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(total=st.integers(1, 100_000), data=st.data())
def test_slices_are_disjoint_complete_contiguous_and_balanced(total: int, data: Any) -> None:
    count = data.draw(st.integers(1, min(total, 500)))
    parts = fleet_slices(total, count)
    assert [p.index for p in parts] == list(range(count))
    assert parts[0].start == 0 and parts[-1].stop == total
    for before, after in itertools.pairwise(parts):
        assert before.stop == after.start  # no gap, no overlap
    sizes = [p.servers for p in parts]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert sum(sizes) == total
    # Stable: the same count gives the same slices, whoever computes them.
    assert fleet_slices(total, count) == parts
    index = data.draw(st.integers(0, count - 1))
    assert fleet_slice(total, index, count) == parts[index]


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(1, 400),
    workers=st.integers(1, 4),
    seed=st.integers(0, 2**31),
    data=st.data(),
)
def test_a_shard_serves_its_servers_as_the_whole_fleet_would(
    total: int, workers: int, seed: int, data: Any
) -> None:
    """Names, seeds, addresses and fleet indices do not depend on the shard serving them."""
    count = data.draw(st.integers(1, min(total, 16)))
    template = default_template()
    requests = default_servers(total, HOST, 5020, template.name)
    whole = {
        s.index: s for s in build_plan(requests, {"default": template}, workers, seed).servers()
    }
    served: list[int] = []
    for part in fleet_slices(total, count):
        plan = build_plan(requests, {"default": template}, workers, seed, fleet_slice=part)
        assert plan.fleet_slice == part
        for spec in plan.servers():
            twin = whole[spec.index]
            assert (spec.name, spec.seed, spec.host, spec.port, spec.template) == (
                twin.name, twin.seed, twin.host, twin.port, twin.template,
            )  # fmt: skip
            served.append(spec.index)
        # Every server of the shard is on exactly one of its workers.
        names = [s.name for shard in plan.shards for s in shard.servers]
        assert len(names) == len(set(names)) == part.servers
    assert sorted(served) == list(range(total))


def test_a_config_file_fleet_shards_the_same_way(tmp_path: Path) -> None:
    config = tmp_path / "plant.yaml"
    config.write_text(
        "seed: 7\n"
        "fleets:\n"
        "  - {name: a, template: default, count: 5, addressing: {subnet: 10.77.0.0/29}}\n"
        "  - {name: b, template: default, count: 4, addressing: {port_start: 6000}}\n"
    )
    farm_file = load(config)
    templates, requests = farm_file.expand()
    hosts = [(r.host, r.port) for r in requests]
    assert hosts[:5] == [(f"10.77.0.{i}", 502) for i in range(1, 6)]
    slices = [
        [s.name for s in build_plan(requests, templates, 2, 7, fleet_slice=p).servers()]
        for p in fleet_slices(len(requests), 3)
    ]
    assert slices == [
        ["a-0000", "a-0001", "a-0002"],
        ["a-0003", "a-0004", "b-0000"],
        ["b-0001", "b-0002", "b-0003"],
    ]
    assert [str(n) for n in farm_file.routed_networks()] == ["10.77.0.0/29"]
    # A /29 holds 6 devices (.1-.6: not the network or the broadcast address).
    assert farm_file.fleet_specs(farm_file.counts(None))[0].capacity == 6


@pytest.mark.parametrize(
    ("total", "index", "count", "message"),
    [
        (10, 3, 3, "shard index 3 is outside 0..2"),
        (10, 0, 0, "shard count must be at least 1"),
        (2, 0, 3, "shard 0 of 3 holds no servers"),
    ],
)
def test_impossible_slices_are_refused(total: int, index: int, count: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fleet_slice(total, index, count)


def test_the_index_comes_from_a_statefulset_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert index_from_hostname("modbus-farm-0") == 0
    assert index_from_hostname("modbus-farm-big-97") == 97
    with pytest.raises(ConfigError, match="does not end in -N"):
        index_from_hostname("modbus-farm")
    monkeypatch.setattr("socket.gethostname", lambda: "farm-12")
    assert sharding.resolve(None, 100, True, need_index=True) == sharding.ShardChoice(12, 100)
    with pytest.raises(ConfigError, match="not both"):
        sharding.resolve(3, 100, True, need_index=True)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--shard-index", "1"], {}, "--shard-index needs --shard-count"),
        (["--shard-count", "4"], {}, "--shard-count needs --shard-index"),
        ([], {"FARM_SHARD_INDEX": "4", "FARM_SHARD_COUNT": "4"}, "shard index 4 is outside 0..3"),
        (["--shard-index", "0", "--shard-count", "20"], {}, "shard 0 of 20 holds no servers"),
    ],
)
def test_farm_up_refuses_a_shard_it_cannot_serve(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = farm_cli("up", "--count", "10", "--api-port", str(free_port()), *args, env=env)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_farm_plan_shows_each_shards_slice() -> None:
    result = farm_cli("plan", "--count", "1000", "--shard-count", "4")
    assert result.returncode == 0, result.stderr
    for index, (first, last) in enumerate([(0, 249), (250, 499), (500, 749), (750, 999)]):
        assert f"{first}-{last}" in result.stdout
        assert f"device-{first:04d}" in result.stdout, index
    assert "1000 servers in 4 shards" in result.stdout
    one = farm_cli("plan", "--count", "1000", "--shard-count", "4", "--shard-index", "2")
    assert "250 servers on" in one.stdout and "servers 500-749 of 1000" in one.stdout


def test_liveness_fails_only_when_a_worker_stays_silent_past_what_the_supervisor_allows() -> None:
    options = SimpleNamespace(heartbeat_timeout_s=3.0, boot_timeout_s=30.0, backoff_s=(0.0, 8.0))
    now = __import__("time").monotonic()

    def supervisor(silent_s: float) -> Any:
        slot = SimpleNamespace(
            shard=SimpleNamespace(worker=1), state="ready",
            last_heartbeat=now - silent_s, spawned_at=now - 100,
        )  # fmt: skip
        return cast(Any, SimpleNamespace(options=options, fatal=None, slots=[slot]))

    assert liveness(supervisor(5.0))[0]  # the supervisor is replacing it: not the probe's job
    live, why = liveness(supervisor(60.0))
    assert not live and "worker 1" in why and "silent for 60 s" in why


# -- four farms, one fleet ---------------------------------------------------------------

FLEET = 1_000
SHARDS = 4


@dataclass(frozen=True)
class Fleet:
    farms: list[FarmProcess]
    subnet: ipaddress.IPv4Network  # device i at the subnet's host address i, all on `port`
    port: int

    def address(self, index: int) -> str:
        return str(self.subnet.network_address + 1 + index)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Four `farm up` processes, shards 0..3 of one 1,000-device fleet on loopback addresses.

    The devices are at 127.x addresses of their own, one port: no range of 1,000 ports to
    find free on 127.0.0.1, where other suites on this machine take ports too.
    """
    subnet = ipaddress.IPv4Network(
        f"127.{random.randrange(100, 200)}.{4 * random.randrange(64)}.0/22"
    )
    port = free_port()
    config = tmp_path_factory.mktemp("shards") / "fleet.yaml"
    config.write_text(
        "seed: 3\nfleets:\n"
        f"  - {{name: plant, template: default, count: {FLEET}, name_pattern: 'dev-{{i:04d}}',\n"
        f"     addressing: {{subnet: {subnet}, port: {port}}}}}\n"
    )
    launched: list[FarmProcess] = []
    farms: list[FarmProcess] = []  # the ready ones
    try:
        # All four start at once (their start is mostly imports: one core each), then each
        # must be ready.
        launched.extend(launch_shard(index, str(config), port) for index in range(SHARDS))
        for index, farm in enumerate(launched):
            farms.append(ready_shard(farm, index, str(config), port))
        yield Fleet(farms, subnet, port)
    finally:
        for farm in launched[len(farms) :]:  # a setup that failed: the rest never got ready
            if farm.process is not None and farm.process.returncode is None:
                farm.kill()
        for farm in farms:  # all asked to stop first: the stops run side by side
            farm.terminate()
        results = [farm.stopped() for farm in farms]
        for code, _, stderr in results:
            assert code == 0, stderr


def launch_shard(index: int, config: str, port: int) -> FarmProcess:
    """Shard `index`, started. Shard 3 takes its index and count from the environment, the
    others from options."""
    extra = [] if index == 3 else ["--shard-index", str(index), "--shard-count", str(SHARDS)]
    env = {"FARM_SHARD_INDEX": "3", "FARM_SHARD_COUNT": str(SHARDS)} if index == 3 else {}
    farm = FarmProcess(
        count=FLEET // SHARDS, workers=1, port_base=port, api_port=free_port(),
        extra=extra, file=config,
    )  # fmt: skip
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        return farm.start()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def ready_shard(farm: FarmProcess, index: int, config: str, port: int) -> FarmProcess:
    """`farm` (shard `index`) up and ready; started again on another API port if a program
    took its port meanwhile (the machine is shared with other test runs)."""
    for attempt in range(3):
        try:
            farm.wait_ready(120)
            return farm
        except AssertionError as error:
            farm.kill()
            if "already in use" not in str(error) or attempt == 2:
                raise
        farm = launch_shard(index, config, port)
    raise AssertionError("unreachable")


@pytest.mark.timeout(300)
def test_four_shards_serve_the_fleet_exactly_once(shards: Fleet) -> None:
    farms = shards.farms
    statuses = [farm.status() for farm in farms]
    assert [s["shard"]["index"] for s in statuses] == [0, 1, 2, 3]
    assert {s["servers_total"] for s in statuses} == {FLEET // SHARDS}
    names = [row["name"] for farm in farms for row in farm.api("/api/v1/servers")["servers"]]
    assert sorted(names) == [f"dev-{i:04d}" for i in range(FLEET)]  # once each
    # Every device's address takes a connection: each is served by exactly one shard,
    # since an address can have one listener only.
    for index in range(FLEET):
        socket.create_connection((shards.address(index), shards.port), timeout=5).close()
    # A sample answers with its own name: the same device whichever shard serves it.
    for index in range(0, FLEET, 37):
        client = ModbusTcpClient(shards.address(index), port=shards.port, timeout=5, retries=1)
        try:
            assert client.connect()
            reply = client.read_device_information(read_code=2)
            assert isinstance(reply, ReadDeviceInformationResponse)
            assert reply.information[6] == f"dev-{index:04d}".encode()
        finally:
            client.close()
    for farm in farms:
        assert farm.api("/api/v1/live")["live"] is True


def test_farm_targets_lists_every_shard(shards: Fleet) -> None:
    farms = shards.farms
    args = [arg for farm in farms for arg in ("--farm", f"{HOST}:{farm.api_port}")]
    result = farm_cli("targets", *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    devices = json.loads(result.stdout)["devices"]
    assert [d["index"] for d in devices] == list(range(FLEET))
    assert [(d["ip"], d["port"]) for d in devices] == [
        (shards.address(i), shards.port) for i in range(FLEET)
    ]
    partial = farm_cli("targets", *args[:4])
    assert partial.returncode == 0
    assert "lacks shard(s) 2, 3 of 4" in partial.stderr
    assert len(partial.stdout.splitlines()) == 1 + 500 * 5  # header, 5 points a device
    twice = farm_cli("targets", *args[:2], *args[:2])
    assert twice.returncode == 1 and "both serve shard 0" in twice.stderr


@pytest.mark.timeout(300)
def test_prometheus_config_scrapes_every_shard(shards: Fleet, tmp_path: Path) -> None:
    farms = shards.farms
    args = [arg for farm in farms for arg in ("--farm", f"{HOST}:{farm.api_port}")]
    result = farm_cli("prometheus-config", *args, "--scrape-interval", "1s")
    assert result.returncode == 0, result.stderr
    with running_prometheus(result.stdout, tmp_path) as prometheus:

        def all_scraped() -> bool:
            ready = prometheus.query("sum(modbus_farm_servers_ready)")
            return bool(ready) and float(ready[0]["value"][1]) == FLEET

        wait_for(prometheus.targets_up, 60, "Prometheus to scrape the four shards", 0.5)
        wait_for(all_scraped, 60, "Prometheus to see 1,000 servers ready", 0.5)
        instances = prometheus.query("count by (instance) (modbus_farm_servers_desired)")
        assert len(instances) == SHARDS
        per_server = prometheus.query("count(count by (server) (modbus_farm_connections_open))")
        assert float(per_server[0]["value"][1]) == FLEET  # every server once, in one shard


def test_farm_bench_loads_every_shard_given(shards: Fleet) -> None:
    farms = shards.farms
    args = [arg for farm in farms[:2] for arg in ("--farm", f"{HOST}:{farm.api_port}")]
    command = ["bench", *args, "-c", "500", "--rate", "500", "--duration", "2", "--timeout", "10"]
    result = farm_cli(*command, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["targets"] == 500 and report["connected"] == 500
    assert report["responses"] > 0 and report["timeouts"] == 0
