"""The fault model (farm.config.faults.spec): what a user may ask for, and the one line they get
when the ask is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from farm.config.faults.spec import (
    DelayFault,
    FaultSpecError,
    Target,
    parse_duration,
    parse_fault,
    pick_fraction,
    rule,
    select,
)

ONE = {"servers": ["device-0001"]}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2", 2.0),
        (1.5, 1.5),
        (".5s", 0.5),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5q", "", "ms", "-1s", "1 2s", True])
def test_bad_durations(text: Any) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_a_delay_fault_as_the_api_takes_it() -> None:
    spec = parse_fault(
        {
            "kind": "delay",
            "ms": 300,
            "target": {"fleet": "meters", "fraction": 0.1, "seed": 7},
            "duration": "30s",
            "start_in": "500ms",
            "probability": 0.2,
            "function_codes": [3, 4],
            "addresses": {"start": 0, "end": 9},
        }
    )
    assert isinstance(spec, DelayFault)
    assert (spec.ms, spec.duration, spec.start_in, spec.probability) == (300, 30.0, 0.5, 0.2)
    made = rule(4, spec)
    assert (made.id, made.kind, made.ms, made.function_codes) == (4, "delay", 300, (3, 4))
    assert (made.first_address, made.last_address, made.probability) == (0, 9, 0.2)


def test_every_kind_parses_with_its_parameters() -> None:
    cases: list[dict[str, Any]] = [
        {"kind": "delay", "ms": 100, "jitter_ms": 20, "distribution": "normal"},
        {"kind": "exception", "code": 4},
        {"kind": "drop"},
        {"kind": "disconnect"},
        {"kind": "reset"},
        {"kind": "offline", "duration": "2s"},
        {"kind": "garble", "mode": "truncate"},
        {"kind": "wrong_tid"},
        {"kind": "wrong_unit"},
        {"kind": "slice", "segments": 3, "gap_ms": 20},
        {"kind": "reboot", "duration": "1s"},
    ]
    for case in cases:
        assert parse_fault({**case, "target": ONE}).kind == case["kind"]
    assert parse_fault({"kind": "reboot", "target": ONE}).duration == 5.0  # down 5 s by default


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"kind": "delay", "target": ONE}, "ms", "required"),
        ({"kind": "zap", "target": ONE}, "kind", "one of delay, exception"),
        ({"target": ONE}, "kind", "missing"),
        ({"kind": "exception", "code": 12, "target": ONE}, "code", "less than or equal to 11"),
        ({"kind": "exception", "code": 6, "ms": 3, "target": ONE}, "ms", "not a parameter"),
        ({"kind": "drop", "target": {}}, "target", "servers (names), fleet, glob or fraction"),
        ({"kind": "drop", "target": {"glob": "*", "fraction": 1.5}}, "target.fraction", "1"),
        ({"kind": "drop", "target": ONE, "duration": "soon"}, "duration", "500ms, 30s or 5m"),
        ({"kind": "drop", "target": ONE, "duration": 0}, "duration", "greater than 0"),
        ({"kind": "drop", "target": ONE, "probability": 0}, "probability", "greater than 0"),
        ({"kind": "drop", "target": ONE, "unit": 256}, "unit", "255"),
        ({"kind": "drop", "target": ONE, "function_codes": [0]}, "function_codes.0", "1"),
        (
            {"kind": "drop", "target": ONE, "addresses": {"start": 9, "end": 2}},
            "addresses",
            "below start",
        ),
        ({"kind": "offline", "target": ONE, "probability": 0.5}, "probability", "remove it"),
        (
            {"kind": "delay", "ms": 5, "jitter_ms": 2, "target": ONE},
            "jitter_ms",
            "uniform or normal",
        ),
        (
            {"kind": "delay", "ms": 5, "distribution": "normal", "target": ONE},
            "jitter_ms",
            "above 0",
        ),
        ({"kind": "slice", "segments": 1, "target": ONE}, "segments", "greater than or equal to 2"),
        ([1, 2], "body", "object"),
    ],
)
def test_bad_faults_name_the_field(body: Any, field: str, words: str) -> None:
    with pytest.raises(FaultSpecError) as caught:
        parse_fault(body)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


SERVERS = [(f"meter-{i:03d}", "meters") for i in range(40)] + [
    (f"plc-{i:03d}", "plcs") for i in range(10)
]


def test_targets_select_by_name_fleet_and_glob() -> None:
    assert select(Target(servers=("plc-003", "meter-001")), SERVERS) == ["meter-001", "plc-003"]
    assert len(select(Target(fleet="plcs"), SERVERS)) == 10
    assert select(Target(glob="meter-00[12]"), SERVERS) == ["meter-001", "meter-002"]
    assert select(Target(fleet="plcs", glob="meter-*"), SERVERS) == []  # filters combine


def test_a_fraction_is_the_same_for_a_seed_and_another_for_another_seed() -> None:
    picked = select(Target(fleet="meters", fraction=0.1, seed=7), SERVERS)
    assert len(picked) == 4 and all(name.startswith("meter-") for name in picked)
    assert select(Target(fleet="meters", fraction=0.1, seed=7), reversed(SERVERS)) == picked
    others = {
        tuple(select(Target(fleet="meters", fraction=0.1, seed=s), SERVERS)) for s in range(8)
    }
    assert len(others) > 1
    # A server added to the fleet does not reshuffle the ones already picked.
    grown = pick_fraction([name for name, _ in SERVERS[:40]] + ["meter-999"], 0.1, 7)
    assert len(set(grown) & set(picked)) >= 3
    assert pick_fraction(["only"], 0.01, 1) == ["only"]  # at least one
    assert select(Target(fraction=1.0), SERVERS) == sorted(name for name, _ in SERVERS)
