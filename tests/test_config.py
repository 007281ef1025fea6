"""Config files: every mistake named with file and path; scaling; TOML; plan properties."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farm.config.fleets import load
from farm.config.plan import build_plan
from farm.errors import ConfigError

pytestmark = pytest.mark.timeout(120)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def base() -> dict[str, Any]:
    return {
        "templates": {
            "meter": {
                "units": [{"unit_id": 1, "holding_registers": 10, "input_registers": 10}],
                "points": [
                    {"name": "v", "table": "input_registers", "address": 0, "type": "float32"},
                    {"name": "set", "table": "holding_registers", "address": 2, "value": 7},
                ],
            }
        },
        "fleets": [
            {
                "name": "a",
                "template": "meter",
                "count": 3,
                "addressing": {"port_start": 6000, "port_end": 6009},
            },
            {
                "name": "b",
                "template": "meter",
                "count": 2,
                "addressing": {"ip_start": "127.5.0.1", "port": 6000},
            },
        ],
    }


def write(tmp_path: Path, data: dict[str, Any], name: str = "farm.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def error_of(tmp_path: Path, data: dict[str, Any]) -> str:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as raised:
        load(path).expand()
    message = str(raised.value)
    assert message.startswith(f"{path}: "), message
    return message


def test_a_good_file_expands_to_servers(tmp_path: Path) -> None:
    templates, requests = load(write(tmp_path, base())).expand()
    assert [(r.name, r.host, r.port) for r in requests] == [
        ("a-0000", "127.0.0.1", 6000),
        ("a-0001", "127.0.0.1", 6001),
        ("a-0002", "127.0.0.1", 6002),
        ("b-0000", "127.5.0.1", 6000),
        ("b-0001", "127.5.0.2", 6000),
    ]
    assert set(templates) == {"meter"}


def test_toml_reads_like_yaml(tmp_path: Path) -> None:
    toml = """
[templates.meter]
units = [{unit_id = 1, holding_registers = 10}]
points = [{name = "x", table = "holding_registers", address = 0, type = "int32", value = -5}]

[[fleets]]
name = "a"
template = "meter"
count = 2
addressing = {port_start = 7000}
"""
    path = tmp_path / "farm.toml"
    path.write_text(toml)
    templates, requests = load(path).expand()
    assert [r.port for r in requests] == [7000, 7001]
    assert templates["meter"].points[0].behaviour.value == -5


@pytest.mark.parametrize(
    ("mutate", "path", "words"),
    [
        (lambda d: d["fleets"][1]["addressing"].update(ip_start="127.0.0.1", port=6001), "fleets[1].addressing", "overlaps fleet a"),
        (lambda d: d["templates"]["meter"]["points"].append({"name": "w", "table": "input_registers", "address": 1}), "templates.meter.points[2].address", "overlaps v"),
        (lambda d: d["templates"]["meter"]["points"].append({"name": "w", "table": "holding_registers", "address": 9, "type": "uint32"}), "templates.meter.points[2].address", "has 10"),
        (lambda d: d["templates"]["meter"]["units"][0].update(unit_id=256), "templates.meter.units[0].unit_id", "less than or equal to 255"),
        (lambda d: d["fleets"][0].update(count=11), "fleets[0].addressing.port_end", "range holds 10"),
        (lambda d: d["templates"]["meter"]["points"][0].update(behaviour={"kind": "wobble"}), "templates.meter.points[0].behaviour.kind", "'wobble'"),
        (lambda d: d["templates"]["meter"]["points"][0].update(behaviour={"kind": "replay", "csv": "missing.csv", "column": 0}), "templates.meter.points[0].behaviour.csv", "missing.csv"),
        (lambda d: d["fleets"][0]["addressing"].update(port_start=70000), "fleets[0].addressing.port_start", "found 70000"),
        (lambda d: d["fleets"][0].update(template="nope"), "fleets[0].template", "'nope'"),
        (lambda d: d["fleets"][0].update(name_pattern="same"), "fleets[0].name_pattern", "'same'"),
        (lambda d: d["fleets"][0].update(colour="red"), "fleets[0].colour", "no such key"),
        (lambda d: d["fleets"][0].update(overrides={"ghost": {"kind": "sine"}}), "fleets[0].overrides.ghost", "no point 'ghost'"),
    ],
    ids=[
        "overlapping-addresses", "overlapping-points", "point-past-table", "unit-id-256",
        "count-over-range", "unknown-behaviour", "missing-csv", "port-out-of-range",
        "unknown-template", "duplicate-names", "typo-key", "override-unknown-point",
    ],
)  # fmt: skip
def test_each_mistake_is_named(tmp_path: Path, mutate: Any, path: str, words: str) -> None:
    data = base()
    mutate(data)
    message = error_of(tmp_path, data)
    assert f": {path}: " in message and words in message, message


def test_validate_cli_exit_2_one_line_no_traceback(tmp_path: Path) -> None:
    data = base()
    data["fleets"][0]["addressing"]["port_start"] = 70000
    path = write(tmp_path, data)
    result = subprocess.run(
        [sys.executable, "-m", "farm", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "fleets[0].addressing.port_start" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_validate_and_plan_cli_describe_the_farm(tmp_path: Path) -> None:
    path = write(tmp_path, base())
    wide = {**os.environ, "COLUMNS": "200"}  # rich wraps table cells at 80 columns in a pipe
    shown = subprocess.run(
        [sys.executable, "-m", "farm", "validate", str(path)],
        capture_output=True, text=True, timeout=60, env=wide,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert (
        "valid" in shown.stdout
        and "127.0.0.1:6000-6002" in shown.stdout
        and "5 servers" in shown.stdout
    )
    planned = subprocess.run(
        [sys.executable, "-m", "farm", "plan", str(path), "--workers", "2", "--servers"],
        capture_output=True, text=True, timeout=60, env=wide,
    )  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    assert "a-0001" in planned.stdout and "127.5.0.2:6000" in planned.stdout


@pytest.mark.parametrize(
    ("ip_start", "last"),
    [("127.20.0.1", "127.255.255.254"), ("10.1.0.1", "223.255.255.255")],
)
def test_an_open_ended_ip_range_stops_where_devices_can_be(
    tmp_path: Path, ip_start: str, last: str
) -> None:
    """With ip_start and no ip_end, a fleet grows within loopback, or short of multicast."""
    config = tmp_path / "farm.yaml"
    config.write_text(
        "fleets:\n"
        f"  - {{name: a, template: default, count: 2, addressing: {{ip_start: {ip_start}}}}}\n"
    )
    farm = load(config)
    capacity = farm.fleet_specs(farm.counts(None))[0].capacity
    assert capacity == int(ipaddress.IPv4Address(last)) - int(ipaddress.IPv4Address(ip_start)) + 1


def test_count_scales_every_fleet_to_the_total(tmp_path: Path) -> None:
    farm = load(EXAMPLES / "plant.yaml")
    assert sum(farm.counts(None)) == 10_000
    for total in (1, 4, 333, 500, 12_345):
        counts = farm.counts(total)
        assert sum(counts) == total
    assert farm.counts(500) == [350, 50, 75, 25]


def test_overrides_make_a_fleet_template(tmp_path: Path) -> None:
    data = base()
    data["fleets"][1]["overrides"] = {"v": {"kind": "sine", "low": 1, "high": 2}}
    templates, requests = load(write(tmp_path, data)).expand()
    assert {r.template for r in requests} == {"meter", "meter@b"}
    assert templates["meter@b"].points[0].behaviour.kind == "sine"
    assert templates["meter"].points[0].behaviour.kind == "constant"


fleet_strategy = st.lists(
    st.tuples(st.integers(0, 40), st.booleans(), st.integers(0, 5)),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fleets=fleet_strategy,
    workers=st.integers(1, 8),
    total=st.one_of(st.none(), st.integers(1, 200)),
)
def test_plans_give_unique_addresses_and_cover_fleets_once(
    tmp_path: Path, fleets: list[tuple[int, bool, int]], workers: int, total: int | None
) -> None:
    data = base()
    data["fleets"] = []
    for i, (count, by_ip, gap) in enumerate(fleets):
        addressing = (
            {"ip_start": f"127.{10 + i}.0.1", "port": 6000}
            if by_ip
            else {"port_start": 10000 + i * 1000 + gap, "port_end": 10000 + i * 1000 + 999}
        )
        data["fleets"].append(
            {"name": f"f{i}", "template": "meter", "count": count, "addressing": addressing}
        )
    path = write(tmp_path, data)
    templates, requests = load(path).expand(total)
    if not requests:
        return
    plan = build_plan(requests, templates, workers)
    everyone = [spec for shard in plan.shards for spec in shard.servers]
    assert sorted(spec.index for spec in everyone) == list(range(len(requests)))
    assert len({(s.host, s.port) for s in everyone}) == len(everyone)
    assert len({s.name for s in everyone}) == len(everyone)
    sizes = [len(shard.servers) for shard in plan.shards]
    assert max(sizes) - min(sizes) <= 1
    if total is not None:
        assert len(requests) == total


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_examples_are_valid(example: str) -> None:
    templates, requests = load(EXAMPLES / example).expand()
    assert requests and templates


def test_readme_example_is_valid(tmp_path: Path) -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    block = readme.split("## Describe your fleet")[1].split("```yaml")[1].split("```")[0]
    path = tmp_path / "readme.yaml"
    path.write_text(block)
    templates, requests = load(path).expand()
    assert len(requests) == 520 and "meter@spare-meters" in templates


point_fields = st.fixed_dictionaries(
    {
        "name": st.text("abcxyz_", min_size=1, max_size=6),
        "table": st.sampled_from(
            ["coils", "discrete_inputs", "holding_registers", "input_registers", "attic"]
        ),
        "address": st.integers(-3, 70_000),
        "type": st.sampled_from(
            ["bool", "int16", "uint32", "float32", "float64", "string", "int128"]
        ),
    },
    optional={
        "length": st.integers(-1, 130),
        "scale": st.sampled_from([0, 0.1, 1, -2]),
        "word_order": st.sampled_from(["big", "little", "middle"]),
        "behaviour": st.fixed_dictionaries(
            {"kind": st.sampled_from(["sine", "counter", "random_walk", "wobble"])},
            optional={
                "low": st.integers(-5, 5),
                "high": st.integers(-5, 5),
                "period_s": st.integers(-1, 5),
            },
        ),
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(points=st.lists(point_fields, max_size=4))
def test_any_point_list_loads_or_names_the_point(
    tmp_path: Path, points: list[dict[str, Any]]
) -> None:
    """Whatever the points say, the file loads, or the error names a point and the file."""
    data = base()
    data["templates"]["meter"]["points"] = points
    data["templates"]["meter"]["units"] = [
        {
            "unit_id": 1,
            "coils": 50,
            "discrete_inputs": 50,
            "holding_registers": 50,
            "input_registers": 50,
        }
    ]
    path = write(tmp_path, data)
    try:
        templates, requests = load(path).expand()
    except ConfigError as error:
        assert str(error).startswith(f"{path}: templates.meter.points["), str(error)
        return
    for point in templates["meter"].points:
        assert point.address >= 0 and point.address + point.width <= 50
    assert len(requests) == 5


def test_workers_default_to_the_cpus_this_process_may_use() -> None:
    """Pinned to one CPU (as taskset or a container's cpuset would), a farm plans one worker."""
    one_cpu = min(os.sched_getaffinity(0))
    pinned = subprocess.run(
        [sys.executable, "-m", "farm", "plan", "--count", "8"],
        capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: os.sched_setaffinity(0, {one_cpu}),
    )  # fmt: skip
    assert pinned.returncode == 0, pinned.stderr
    assert "8 servers on 1 worker\n" in pinned.stdout, pinned.stdout
    free = subprocess.run(
        [sys.executable, "-m", "farm", "plan", "--count", "8"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert f"8 servers on {len(os.sched_getaffinity(0))} workers" in free.stdout, free.stdout


def test_a_certs_directory_is_checked_file_by_file(tmp_path: Path) -> None:
    from farm.config.tlsfiles import CLIENT_SIDE, SERVER_SIDE, certs_dir

    for name in ("ca.pem", "server.pem", "server.key", "client.pem"):
        (tmp_path / name).write_text("x")
    assert certs_dir(str(tmp_path), SERVER_SIDE) == {
        "certificate": str(tmp_path / "server.pem"),
        "key": str(tmp_path / "server.key"),
        "client_ca": str(tmp_path / "ca.pem"),
    }
    with pytest.raises(ConfigError, match=r"--certs .*: cannot read client.key: No such file"):
        certs_dir(str(tmp_path), CLIENT_SIDE)
