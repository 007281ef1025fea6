"""`farm scenario run | status | stop` and `farm scale`: stories played on a running farm.

    farm scenario run FILE        play FILE's `scenario:` section from now
    farm scenario status          the timeline, each step's state, the current step
    farm scenario stop            stop it, and undo what it applied
    farm scale FLEET N            grow or shrink a fleet to N servers

Clients of the API (farm.client). `scenario_for_up` is how `farm up FILE [--scenario S]`
and `farm validate` find a file's scenario and check it against the farm the file
describes, before anything binds. A mistake is one line naming the file, the step and the
fix, exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table as RichTable

from farm.client import FarmAPIError, FarmClient, api_options
from farm.config.plan import Plan
from farm.config.scenario.check import check_scenario
from farm.config.scenario.model import Timeline, compile_scenario, load_scenario
from farm.config.schema import read
from farm.errors import ConfigError, FarmError
from farm.output import console, exit_with
from farm.words import counted

out = console()  # file, server and fleet names are printed as they are


def scenario_for_up(file: str | None, scenario_file: str | None, plan: Plan) -> Timeline | None:
    """The scenario `farm up` plays: `--scenario FILE`'s, else the config file's, checked
    against `plan` (ConfigError naming the file and the step)."""
    source = scenario_file or file
    if source is None:
        return None
    timeline = load_scenario(source)
    if timeline is None:
        if scenario_file is not None:
            raise ConfigError(f"{scenario_file}: has no scenario: section")
        return None
    check_scenario(timeline, plan.fleets, plan.templates, source=source)
    return timeline


def describe(timeline: Timeline) -> str:
    plays = "forever" if timeline.repeat is None else counted(timeline.repeat, "play")
    steps = counted(len(timeline.steps), "step")
    return f"scenario: {steps}, {timeline.length:g} s a play, {plays}"


@click.group()
def scenario() -> None:
    """Play a scenario (a timeline of faults, values, stops and scaling) on the running farm."""


@scenario.command()
@click.argument("file", type=click.Path(dir_okay=False))
@api_options
def run(client: FarmClient, file: str) -> None:
    """Play FILE's scenario: section from now (the farm checks it first)."""
    try:
        data = _section(file)
        compile_scenario(data, file)  # the file's own mistakes, named with the file
        try:
            view = client.play_scenario(data)
        except FarmAPIError as error:
            if error.status == 422:  # what this farm cannot play: the file's mistake too
                message = str(error).split(" 422 ", 1)[-1]
                raise ConfigError(f"{file}: {message}") from None
            raise
    except FarmError as error:
        exit_with(error)
    out.print(f"playing {file}: {counted(len(view['steps']), 'step')}", highlight=False)
    _timeline(view)


@scenario.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@api_options
def status(client: FarmClient, as_json: bool) -> None:
    """Show the scenario's timeline with the current step."""
    try:
        view = client.scenario()
    except FarmError as error:
        exit_with(error)
    if as_json:
        out.print_json(data=view)
        return
    current = view.get("current")
    now = f", at step {current['step']}: {current['name']}" if current else ""
    elapsed = f", {view['elapsed_s']:.1f} s in" if view.get("elapsed_s") is not None else ""
    out.print(
        f"scenario {view['state']}: play {view['play']} of {view['repeat']}{elapsed}{now}",
        highlight=False,
    )
    _timeline(view)


@scenario.command()
@api_options
def stop(client: FarmClient) -> None:
    """Stop the scenario and undo what it applied."""
    try:
        client.stop_scenario()
    except FarmError as error:
        exit_with(error)
    out.print("scenario stopped; its faults, stops, values and scaling undone", highlight=False)


# A negative COUNT is an argument (the API says what is wrong with it), not an unknown option.
@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("fleet")
@click.argument("count", type=int)
@api_options
def scale(client: FarmClient, fleet: str, count: int) -> None:
    """Grow or shrink FLEET to COUNT servers while the farm runs."""
    try:
        done = client.scale(fleet, count)
    except FarmError as error:
        exit_with(error)
    out.print(
        f"{fleet}: {done['before']} -> {counted(done['count'], 'server')} "
        f"(+{len(done['added'])}, -{len(done['removed'])}) in {done['seconds']:.2f} s",
        highlight=False,
    )


def _section(file: str) -> Any:
    data = read(Path(file))
    if not isinstance(data, dict) or "scenario" not in data:
        raise ConfigError(f"{file}: has no scenario: section; see README (Scenarios)")
    return data["scenario"]


def _timeline(view: dict[str, Any]) -> None:
    current = (view.get("current") or {}).get("step")
    table = RichTable("", "step", "at", "for", "state", "name")
    for step in view["steps"]:
        state = step["state"] + (f": {step['error']}" if step.get("error") else "")
        table.add_row(
            ">" if step["step"] == current else "",
            str(step["step"]),
            f"{step['at_s']:g} s",
            "-" if step["for_s"] is None else f"{step['for_s']:g} s",
            state,
            step["name"],
        )
    out.print(table)
