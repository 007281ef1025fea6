"""The API's options are declared once (farm.client) and every command that talks to a farm
takes them; with no farm at the address, each says so in one line and exits 1."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import pytest

from farm.cli.app import main
from farm.client import api_options
from tests.farmproc import free_port, run_together

pytestmark = pytest.mark.timeout(180)
API_OPTIONS = ("api_host", "api_port", "api_token")

# Each command that talks to a farm, with the least it needs to get as far as asking it.
CLIENTS = {
    "status": [],
    "down": [],
    "servers": [],
    "get": ["device-0000"],
    "set": ["device-0000", "uptime_s=1"],
    "server stop": ["device-0000"],
    "server start": ["device-0000"],
    "fault add": ["offline", "--target", "device-0000"],
    "fault list": [],
    "fault clear": ["--all"],
    "scenario run": ["{scenario}"],
    "scenario status": [],
    "scenario stop": [],
    "scale": ["default", "3"],
    "targets": [],
    "bench": ["--duration", "1"],
    "prometheus-config": [],
    "writes": ["device-0000"],
    "clients": [],
    "report": [],
    "trace": ["device-0000", "--for", "1s"],
}
SERVES = {"up"}  # serves the API: takes the same options to say where


def leaf_commands(command: click.Command, path: tuple[str, ...] = ()) -> dict[str, click.Command]:
    if isinstance(command, click.Group):
        found: dict[str, click.Command] = {}
        for name, sub in command.commands.items():
            found |= leaf_commands(sub, (*path, name))
        return found
    return {" ".join(path): command}


def declared(param: click.Parameter) -> tuple[object, ...]:
    assert isinstance(param, click.Option)
    return (param.opts, param.type, param.default, param.help, param.envvar, param.show_default)


def test_every_command_that_talks_to_a_farm_takes_the_options_declared_in_the_client() -> None:
    reference = {
        str(p.name): declared(p) for p in click.command()(api_options(lambda: None)).params
    }
    assert sorted(reference) == sorted(API_OPTIONS)
    taking: dict[str, dict[str, tuple[object, ...]]] = {}
    for name, command in leaf_commands(main).items():
        given = {str(p.name): declared(p) for p in command.params if p.name in API_OPTIONS}
        if given:
            taking[name] = given
    assert sorted(taking) == sorted({*CLIENTS, *SERVES})
    for name, given in taking.items():
        assert given == reference, name


def test_no_farm_there_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """Every command of CLIENTS, each its own process (run a few at a time)."""
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("scenario:\n  steps:\n    - {at: 1s, stop: {target: device-0000}}\n")
    commands = [
        [
            sys.executable, "-m", "farm", *command.split(),
            *[arg.format(scenario=scenario) for arg in args], "--api-port", str(free_port()),
        ]
        for command, args in CLIENTS.items()
    ]  # fmt: skip
    for command, done in zip(CLIENTS, run_together(commands), strict=True):
        assert done.returncode == 1, (command, done.stdout + done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "no farm answers at http://127.0.0.1:" in lines[0], (
            command,
            done.stderr,
        )
