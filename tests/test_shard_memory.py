"""A server's place in its shard's memory is its own: servers joining or leaving the shard
move no one else's bytes or counters, and /metrics follows the servers by their places.

Runtime scaling (adding and removing servers on a running farm) builds on this; here the
places are checked through the plan, the banks, the counters and a real farm's /metrics.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from pymodbus.client import ModbusTcpClient

from farm.config.behaviours import initialize_shard
from farm.config.fleets import load
from farm.config.plan import (
    TABLE_ORDER,
    ServerRequest,
    Shard,
    add_servers,
    build_plan,
    table_bytes,
    table_offset,
)
from farm.config.templates import DeviceTemplate, Table, UnitLayout, default_template
from farm.ipc import stats
from farm.ipc.banks import Segment, server_banks
from farm.ipc.stats import ShardCounters
from farm.master.metrics.servers import FarmMetrics
from farm.master.supervision.slot import SlotState
from tests.farmproc import HOST, FarmProcess, free_port, free_port_range
from tests.prometheus_server import Samples, parse, scrape

pytestmark = pytest.mark.timeout(120)

SMALL = DeviceTemplate(name="small", units=(UnitLayout(unit_id=1, holding_registers=10),))
TEMPLATES = {"default": default_template(), "small": SMALL}


def requests(names: list[str], template: str) -> list[ServerRequest]:
    return [
        ServerRequest(name=name, fleet=template, host=HOST, port=20000 + i, template=template)
        for i, name in enumerate(names)
    ]


def mixed_shard() -> Shard:
    """One worker's shard of two templates, interleaved as fleets are."""
    mixed = [
        r
        for pair in zip(
            requests([f"d{i}" for i in range(5)], "default"),
            requests([f"s{i}" for i in range(5)], "small"),
            strict=True,
        )
        for r in pair
    ]
    return build_plan(mixed, TEMPLATES, workers=1, seed=3).shards[0]


def extents(shard: Shard) -> list[tuple[int, int, str]]:
    """(start, end, server) of every table of every unit of every server."""
    found = []
    for spec in shard.servers:
        template = TEMPLATES[spec.template]
        for unit in template.units:
            for table in TABLE_ORDER:
                start = table_offset(spec, template, unit.unit_id, table)
                found.append((start, start + table_bytes(unit, table), spec.name))
    return sorted(found)


def assert_places_apart(shard: Shard) -> None:
    spans = [span for span in extents(shard) if span[1] > span[0]]
    for (_, end, name), (start, _, other) in itertools.pairwise(spans):
        assert end <= start, f"{name} and {other} share bank bytes"
    assert spans[-1][1] <= shard.bank_bytes
    indexes = [spec.stats_index for spec in shard.servers]
    assert len(set(indexes)) == len(indexes) and max(indexes) < shard.stats_size


def newcomers(shard: Shard, names: list[str], template: str) -> list[tuple[int, ServerRequest]]:
    first = 1 + max(spec.index for spec in shard.servers)
    return list(enumerate(requests(names, template), start=first))


def test_servers_that_join_move_no_one() -> None:
    shard = mixed_shard()
    assert_places_apart(shard)
    joined = newcomers(shard, ["d5", "d6"], "default") + newcomers(shard, ["s5"], "small")
    grown = add_servers(shard, joined, TEMPLATES, seed=3)
    assert grown.servers[: len(shard.servers)] == shard.servers  # every field, every place
    assert grown.blocks[: len(shard.blocks)] == shard.blocks
    assert len(grown.blocks) == len(shard.blocks) + 2  # one new block per template, at the end
    assert grown.bank_bytes > shard.bank_bytes and grown.stats_size == shard.stats_size + 3
    assert_places_apart(grown)


def test_a_place_left_free_goes_to_the_next_server_of_its_template() -> None:
    shard = mixed_shard()
    leaving = next(spec for spec in shard.servers if spec.name == "s2")
    stayed = tuple(spec for spec in shard.servers if spec is not leaving)
    after = dataclasses.replace(shard, servers=stayed)
    joined = newcomers(after, ["s9"], "small") + newcomers(after, ["d9"], "default")
    grown = add_servers(after, joined, TEMPLATES, seed=3)
    assert grown.servers[: len(stayed)] == stayed
    s9, d9 = grown.servers[-2:]
    assert (s9.block_offset, s9.slot, s9.stats_index) == (
        leaving.block_offset,
        leaving.slot,
        leaving.stats_index,
    )
    assert d9.block_offset == grown.blocks[-1].offset == shard.bank_bytes  # a new block
    assert_places_apart(grown)


def test_values_stay_where_they_were_when_the_segment_grows() -> None:
    """A shard grows by extending its segment (ftruncate; the kernel adds zeros after the
    end) and mapping it again: every value already there is read back at its place."""
    shard = mixed_shard()
    owner = Segment.create(shard.bank_bytes)
    grown_view: Segment | None = None
    try:
        initialize_shard(owner.buf, shard, TEMPLATES)
        for number, spec in enumerate(shard.servers):
            banks = server_banks(owner.buf, spec, TEMPLATES[spec.template])
            banks[1].write_registers(Table.HOLDING_REGISTERS, 7, [1000 + number])
            del banks
        before = bytes(owner.buf)
        joined = newcomers(shard, ["d5"], "default") + newcomers(shard, ["s5"], "small")
        grown = add_servers(shard, joined, TEMPLATES, seed=3)
        os.truncate(f"/dev/shm/{owner.name}", grown.bank_bytes)
        grown_view = Segment.attach(owner.name)
        assert len(grown_view.buf) == grown.bank_bytes
        newcomers_only = dataclasses.replace(grown, servers=grown.servers[len(shard.servers) :])
        initialize_shard(grown_view.buf, newcomers_only, TEMPLATES)
        assert bytes(grown_view.buf[: len(before)]) == before  # newcomers wrote past the end
        for number, spec in enumerate(grown.servers[: len(shard.servers)]):
            banks = server_banks(grown_view.buf, spec, TEMPLATES[spec.template])
            assert banks[1].read_registers(Table.HOLDING_REGISTERS, 7, 1) == [1000 + number]
            del banks
    finally:
        if grown_view is not None:
            grown_view.close()
        owner.close()


def counters_for(shard: Shard, counts: dict[str, int]) -> ShardCounters:
    """Counters in private memory with `counts[name]` FC 3 requests at each server's index."""
    memory = memoryview(bytearray(ShardCounters.size(shard.stats_size)))
    counters = ShardCounters(cast(Any, SimpleNamespace(buf=memory)), shard.stats_size)
    for spec in shard.servers:
        counters.server(spec.stats_index)[stats.REQUEST_SLOT[3]] = counts[spec.name]
    return counters


def fc3_counts(samples: Samples) -> dict[str, float]:
    return {
        dict(labels)["server"]: count
        for (name, labels), count in samples.items()
        if name == "modbus_farm_requests_total" and ("function_code", "3") in labels
    }


def test_metrics_follow_servers_that_join_and_leave() -> None:
    shard = mixed_shard()
    counts = {spec.name: 10 + number for number, spec in enumerate(shard.servers)}
    slot = SimpleNamespace(
        shard=shard,
        counters=counters_for(shard, counts),
        heartbeat=None,
        last_heartbeat=0.0,
        state=SlotState.READY,
        restarts=0,
        servers_up=len(shard.servers),
    )
    farm = SimpleNamespace(
        slots=[slot], plan=SimpleNamespace(servers_total=10), servers_ready=lambda: 10
    )
    metrics = FarmMetrics(cast(Any, farm))
    assert fc3_counts(parse(metrics.render().decode())) == counts
    grown = add_servers(
        shard, newcomers(shard, ["d5"], "default") + newcomers(shard, ["s5"], "small"), TEMPLATES, 3
    )
    counts |= {"d5": 50, "s5": 51}
    slot.shard, slot.counters = grown, counters_for(grown, counts)
    assert fc3_counts(parse(metrics.render().decode())) == counts
    slot.shard = dataclasses.replace(
        grown, servers=tuple(s for s in grown.servers if s.name not in ("d1", "s3"))
    )
    del counts["d1"], counts["s3"]
    assert (
        fc3_counts(parse(metrics.render().decode())) == counts
    )  # the others keep their own counts


def test_a_real_farm_counts_each_server_at_its_own_place(tmp_path: Path) -> None:
    """Fleets a and c share a template, b sits between them: in each shard the servers of a
    and c share a block, so a server's counters place is not its position among the shard's
    servers. Worker, /metrics and the server's counters in the API agree on every place:
    each server's count is what its own client sent."""
    base = free_port_range(9)
    fleets = (("a", "default", base), ("b", "small", base + 3), ("c", "default", base + 6))
    config = {
        "templates": {"small": {"units": [{"unit_id": 1, "holding_registers": 10}]}},
        "fleets": [
            {"name": name, "template": template, "count": 3,
             "addressing": {"port_start": start, "port_end": start + 2}, "name_pattern": name + "-{i}"}
            for name, template, start in fleets
        ],
    }  # fmt: skip
    path = tmp_path / "three.yaml"
    path.write_text(yaml.safe_dump(config))
    templates, requests = load(path).expand()
    shards = build_plan(requests, templates, workers=2).shards
    assert any(
        spec.stats_index != position
        for shard in shards
        for position, spec in enumerate(shard.servers)
    ), "the layout under test must set places apart from positions"
    farm = FarmProcess(count=9, workers=2, port_base=base, api_port=free_port(), file=str(path))
    farm.start()
    try:
        farm.wait_ready()
        wanted = {}
        for i in range(9):
            wanted[f"{'abc'[i // 3]}-{i % 3}"] = i + 1
            client = ModbusTcpClient(HOST, port=base + i, timeout=5, retries=0)
            assert client.connect()
            try:
                for _ in range(i + 1):
                    assert not client.read_holding_registers(0, count=1).isError()
            finally:
                client.close()
        assert fc3_counts(scrape(farm)) == wanted
        for name, count in wanted.items():
            answer = farm.api(f"/api/v1/servers/{name}/counters")
            assert answer["requests"]["3"] == count, (name, answer["requests"])
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
