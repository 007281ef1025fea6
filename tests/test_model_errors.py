"""The model speaks of itself; the CLI names its own options.

The plan and the fleets are used by `farm up`, `farm plan`, `farm validate` and (later)
the API and users' own code: their errors say what is wrong with the farm asked for, and
name the parameters at fault (`ConfigError.about`); the CLI turns those into its flags.
Behaviour kinds are an enum, and a config file takes the same words as before.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from farm.config.fleets import load
from farm.config.plan import build_plan, default_servers
from farm.config.templates import BehaviourKind, default_template
from farm.errors import ConfigError

pytestmark = pytest.mark.timeout(120)
TEMPLATE = default_template()


def config(tmp_path: Path, behaviour: dict[str, object] | None = None, count: int = 2) -> Path:
    point = {"name": "p", "table": "holding_registers", "address": 0}
    if behaviour is not None:
        point["behaviour"] = behaviour
    data = {
        "templates": {"t": {"units": [{"unit_id": 1, "holding_registers": 4}], "points": [point]}},
        "fleets": [
            {"name": "f", "template": "t", "count": count, "addressing": {"port_start": 6100}}
        ],
    }
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


MODEL_MISTAKES: dict[str, tuple[Callable[[Path], object], tuple[str, ...], str]] = {
    "no servers": (
        lambda _: default_servers(0, "127.0.0.1", 5020, TEMPLATE.name),
        ("count",),
        "at least 1 server",
    ),
    "port 0": (
        lambda _: default_servers(3, "127.0.0.1", 0, TEMPLATE.name),
        ("port_base",),
        "TCP port",
    ),
    "past the last port": (
        lambda _: default_servers(600, "127.0.0.1", 65000, TEMPLATE.name),
        ("count", "port_base"),
        "start at port 64936 at most",
    ),
    "no workers": (
        lambda _: build_plan(default_servers(2, "127.0.0.1", 5020, "default"), {}, 0),
        ("workers",),
        "at least 1 worker",
    ),
    "fleets scaled to nothing": (
        lambda tmp_path: load(config(tmp_path)).expand(0),
        ("count",),
        "at least 1 server",
    ),
}


@pytest.mark.parametrize("mistake", MODEL_MISTAKES.values(), ids=MODEL_MISTAKES.keys())
def test_model_errors_name_parameters_not_flags(
    tmp_path: Path, mistake: tuple[Callable[[Path], object], tuple[str, ...], str]
) -> None:
    call, about, words = mistake
    with pytest.raises(ConfigError) as raised:
        call(tmp_path)
    assert raised.value.about == about
    assert words in str(raised.value) and "--" not in str(raised.value), str(raised.value)


def farm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["plan", "--count", "0"], "farm: error: --count: a farm needs at least 1 server, got 0"),
        (["plan", "--workers", "0"], "farm: error: --workers: a farm needs at least 1 worker"),
        (
            ["up", "--count", "600", "--port-base", "65000"],
            "farm: error: --count, --port-base: 600 servers from port 65000 run past port 65535",
        ),
        (["up", "--port-base", "0", "--count", "2"], "farm: error: --port-base: the first port"),
    ],
    ids=["count 0", "workers 0", "past port 65535", "port base 0"],
)
def test_the_cli_names_its_flags(args: list[str], line: str) -> None:
    result = farm(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), result.stderr


def test_the_cli_names_count_for_a_file_scaled_to_nothing(tmp_path: Path) -> None:
    result = farm("plan", str(config(tmp_path)), "--count", "0")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "farm: error: --count: the fleets must hold at least 1 server in all, got 0"
    )


@pytest.mark.parametrize("kind", list(BehaviourKind))
def test_every_behaviour_kind_is_the_word_a_config_file_uses(
    tmp_path: Path, kind: BehaviourKind
) -> None:
    behaviour: dict[str, object] = {"kind": str(kind)}
    if kind is BehaviourKind.REPLAY:
        (tmp_path / "v.csv").write_text("v\n1\n2\n")
        behaviour |= {"csv": "v.csv", "column": "v"}
    templates, _ = load(config(tmp_path, behaviour)).expand()
    loaded = templates["t"].points[0].behaviour.kind
    assert loaded is kind and type(loaded) is BehaviourKind


def test_an_unknown_behaviour_kind_lists_the_words(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load(config(tmp_path, {"kind": "sawtooth"}))
    message = str(raised.value)
    assert "templates.t.points[0].behaviour.kind" in message and "'sawtooth'" in message
    assert all(f"'{kind}'" in message for kind in BehaviourKind), message
