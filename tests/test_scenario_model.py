"""Scenarios as data: the timeline a file compiles to, and every mistake named with the
file, the step and the fix (farm.config.scenario.model, scenario_check, `farm validate`)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from farm.cli.scenario import scenario_for_up
from farm.cli.validate import make_plan
from farm.config.scenario.model import compile_scenario
from farm.errors import ConfigError

pytestmark = pytest.mark.timeout(60)

ISSUE_SCENARIO = """
scenario:
  seed: 7
  steps:
    - {at: 1s, for: 2s, fault: {kind: offline, fleet: meters, fraction: 0.1}}
    - {at: 2s, for: 5s, fault: {kind: stuck, target: meter-0003, point: voltage_l1}}
    - {at: 3s, for: 1s, fault: {kind: spike, target: meter-0004, point: voltage_l1, value: 999}}
    - {at: 4s, set: {target: meter-0005, point: setpoint, value: 42}}
    - {at: 5s, scale: {fleet: meters, count: 30}}
"""


def farm_file() -> dict[str, Any]:
    return {
        "templates": {
            "meter": {
                "units": [{"unit_id": 1, "input_registers": 20, "holding_registers": 10}],
                "points": [
                    {"name": "voltage_l1", "table": "input_registers", "address": 0,
                     "type": "float32"},
                    {"name": "setpoint", "table": "holding_registers", "address": 2,
                     "type": "int16", "scale": 0.1},
                    {"name": "alarm", "table": "holding_registers", "address": 3, "type": "bool"},
                ],
            }
        },
        "fleets": [
            {"name": "meters", "template": "meter", "count": 20, "name_pattern": "meter-{i:04d}",
             "addressing": {"port_start": 6000, "port_end": 6039}},
        ],
        **yaml.safe_load(ISSUE_SCENARIO),
    }  # fmt: skip


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_issue_scenario_reads_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, farm_file())
    timeline = scenario_for_up(str(path), None, make_plan(str(path), None, None, None, 1))
    assert timeline is not None
    assert [(s.at, s.duration, s.action) for s in timeline.steps] == [
        (1.0, 2.0, "fault"), (2.0, 5.0, "fault"), (3.0, 1.0, "fault"),
        (4.0, None, "set"), (5.0, None, "scale"),
    ]  # fmt: skip
    assert (timeline.seed, timeline.repeat, timeline.length) == (7, 1, 7.0)
    offline = timeline.steps[0].fault
    assert offline is not None and offline.target.seed == 7  # the scenario's seed
    assert offline.duration == 2.0
    assert timeline.steps[2].name == "spike voltage_l1 on meter-0004"


def test_after_counts_from_a_steps_end_and_repeat_forever() -> None:
    timeline = compile_scenario(
        {
            "repeat": "forever",
            "steps": [
                {"name": "trip", "at": "1s", "for": "30s", "stop": {"fleet": "m"}},
                {"after": "500ms", "set": {"fleet": "m", "point": "p", "value": 1}},
                {"after": "2s", "from": "trip", "start": {"glob": "m-*"}},
            ],
        }
    )
    assert [step.at for step in timeline.steps] == [1.0, 31.5, 33.0]
    assert timeline.repeat is None and timeline.length == 33.0


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda s: s["steps"].reverse(), "scenario.steps[1].at: starts at 4 s, before the step above it, steps[0] (5 s); list the steps in the order they happen"),
        (lambda s: s["steps"][1]["fault"].update(kind="melt"), "scenario.steps[1].fault.kind: 'melt' is not a fault kind"),
        (lambda s: s["steps"][1]["fault"].update(kind="delay"), "scenario.steps[1].fault.ms: required, missing"),
        (lambda s: s["steps"][0].update(at="soon"), "scenario.steps[0].at: 'soon' is not a duration"),
        (lambda s: s["steps"][4]["scale"].update(count=-1), "scenario.steps[4].scale.count: -1 is below 0"),
        (lambda s: s.update(duration="6s"), "scenario.steps[1]: ends at 7 s, past the scenario's duration (6 s)"),
        (lambda s: s["steps"][0].pop("fault"), "scenario.steps[0]: a step does one thing"),
        (lambda s: s["steps"][3].update(at=None, after="1s", **{"from": "x"}), "scenario.steps[3].from: no earlier step named 'x'"),
        (lambda s: s.update(repeat=0), "scenario.repeat: at least 1"),
        (lambda s: s["steps"][3]["set"].pop("target"), "scenario.steps[3].set: say which servers"),
    ],
)  # fmt: skip
def test_shape_and_order_mistakes_name_the_step(change: Any, words: str) -> None:
    scenario = copy.deepcopy(yaml.safe_load(ISSUE_SCENARIO)["scenario"])
    change(scenario)
    with pytest.raises(ConfigError) as raised:
        compile_scenario(scenario, "plant.yaml")
    assert str(raised.value).startswith("plant.yaml: " + words), str(raised.value)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda s: s[0]["fault"].update(fleet="meterz"), "scenario.steps[0].fault.fleet: no fleet 'meterz'; fleets: meters"),
        (lambda s: s[1]["fault"].update(point="voltage_l9"), "scenario.steps[1].fault.point: meter has no point 'voltage_l9'"),
        (lambda s: s[2]["fault"].update(target="meter-0099"), "scenario.steps[2].fault.target: no server 'meter-0099' when this step runs"),
        (lambda s: s[3]["set"].update(value=5000), "scenario.steps[3].set.value: setpoint is int16: int16 with scale 0.1 holds"),
        (lambda s: s[4]["scale"].update(count=41), "scenario.steps[4].scale.count: 41 is past the address range of fleet meters, which holds 40"),
        (lambda s: s[4]["scale"].update(fleet="pumps"), "scenario.steps[4].scale.fleet: no fleet 'pumps'"),
        (lambda s: s[1]["fault"].update(kind="flap"), "scenario.steps[1].fault.point: voltage_l1 is float32; flap needs a bool point"),
        (lambda s: s.append({"at": "6s", "stop": {"target": "meter-0031"}}), "scenario.steps[5].stop.target: no server 'meter-0031' when this step runs (at 6 s)"),
    ],
)  # fmt: skip
def test_what_the_farm_lacks_is_named_with_the_file(
    tmp_path: Path, change: Any, words: str
) -> None:
    data = farm_file()
    change(data["scenario"]["steps"])
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as raised:
        scenario_for_up(str(path), None, make_plan(str(path), None, None, None, 1))
    assert str(raised.value).startswith(f"{path}: {words}"), str(raised.value)


def test_a_step_may_name_a_server_an_earlier_scale_added(tmp_path: Path) -> None:
    data = farm_file()
    data["scenario"]["steps"].append({"at": "6s", "stop": {"target": "meter-0029"}})
    path = write(tmp_path, data)
    assert scenario_for_up(str(path), None, make_plan(str(path), None, None, None, 1))


def test_validate_cli_checks_the_scenario_exit_2_one_line(tmp_path: Path) -> None:
    data = farm_file()
    data["scenario"]["steps"][1]["fault"]["point"] = "volts"
    path = write(tmp_path, data)
    bad = subprocess.run(
        [sys.executable, "-m", "farm", "validate", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2, bad
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    assert "scenario.steps[1].fault.point" in bad.stderr and str(path) in bad.stderr
    good = subprocess.run(
        [sys.executable, "-m", "farm", "validate", str(write(tmp_path, farm_file()))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert good.returncode == 0 and "scenario: 5 steps, 7 s a play" in good.stdout, good


def test_a_scenario_file_of_its_own(tmp_path: Path) -> None:
    plant = farm_file()
    del plant["scenario"]
    farm_path = write(tmp_path, plant)
    own = tmp_path / "story.yaml"
    own.write_text(ISSUE_SCENARIO)
    plan = make_plan(str(farm_path), None, None, None, 1)
    assert scenario_for_up(str(farm_path), None, plan) is None
    timeline = scenario_for_up(str(farm_path), str(own), plan)
    assert timeline is not None and len(timeline.steps) == 5
    (tmp_path / "empty.yaml").write_text("seed: 1\n")
    with pytest.raises(ConfigError, match=r"empty\.yaml: has no scenario: section"):
        scenario_for_up(str(farm_path), str(tmp_path / "empty.yaml"), plan)


ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_scenario_plays_on_the_readme_fleet(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    fleet = readme.split("## Describe your fleet")[1].split("```yaml")[1].split("```")[0]
    story = readme.split("## Tell a story: scenarios")[1].split("```yaml")[1].split("```")[0]
    assert yaml.safe_load(story) == yaml.safe_load(ISSUE_SCENARIO)  # as the issue wrote it
    path = tmp_path / "plant.yaml"
    path.write_text(fleet + story)
    timeline = scenario_for_up(str(path), None, make_plan(str(path), None, None, None, 1))
    assert timeline is not None and len(timeline.steps) == 5


@pytest.mark.parametrize("story", sorted(p.name for p in (ROOT / "examples/scenarios").glob("*")))
def test_example_scenarios_play_on_the_energy_meters(story: str) -> None:
    meters = str(ROOT / "examples/energy-meter.yaml")
    plan = make_plan(meters, None, None, None, 1)
    assert scenario_for_up(meters, str(ROOT / "examples/scenarios" / story), plan)
