"""The `farm` command: the last stop of the data flow, and a client of the control API.

    farm up [FILE] [--count N] [--workers W] ...   (farm.cli.up)
    farm status [--api-host H] [--api-port A] [--json]
    farm down [--api-host H] [--api-port A] [--timeout S]
    farm validate FILE / farm plan [FILE]   (farm.cli.validate)
    farm servers | get | set | server stop|start ...          (farm.cli.control)
    farm bench [--api-port A | --target HOST:PORT-PORT] ...   (farm.bench.command)
    farm prometheus-config [--api-port A | --farm HOST:PORT ...]   (farm.cli.prometheus_config)
    farm fault add KIND --target NAME ... | list | clear [ID | --all]   (farm.cli.faults)
    farm certs DIR [--role R]   (farm.cli.certs: throwaway certificates for a TLS test)
    farm writes SERVER [--since 30s] [--follow] [--json]   (farm.cli.observe.writes)
    farm clients [--server NAME] [--json]   (farm.cli.observe.clients)
    farm report [--since 60s] [--fleet F] [--json]   (farm.cli.observe.report)
    farm trace SERVER [--for 10s] [--client ADDR] [--pcap FILE]   (farm.cli.observe.trace, pcap)

Every error a user can meet is one line on stderr and a non-zero exit (FarmError.exit_code).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from farm import __version__
from farm.client.options import api_options
from farm.errors import FarmError, FarmUnreachable
from farm.output import console, exit_with

if TYPE_CHECKING:
    from farm.client import FarmClient

out = console()  # what the farm answers is printed as it is


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modbus-farm")
def main() -> None:
    """A farm of simulated Modbus TCP devices for load-testing SCADA systems."""


@main.command()
@api_options
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def status(client: FarmClient, as_json: bool) -> None:
    """Show the running farm: servers ready and one row per worker."""
    try:
        data = client.status()
    except FarmError as error:
        exit_with(error)
    if as_json:
        out.print_json(data=data)
        return
    out.print(
        f"servers ready {data['servers_ready']} / {data['servers_total']}"
        + (f" ({data['servers_stopped']} stopped)" if data.get("servers_stopped") else "")
        + "   "
        f"uptime {data['uptime_s']:.0f} s   version {data['version']}",
        highlight=False,
    )
    from rich.table import Table as RichTable  # here: only this command draws a table

    table = RichTable(
        "worker", "pid", "state", "servers", "heartbeat age", "restarts", "connections", "rss"
    )
    for w in data["workers"]:
        age = "-" if w["heartbeat_age_s"] is None else f"{w['heartbeat_age_s']:.2f} s"
        rss = "-" if w["rss_bytes"] is None else f"{w['rss_bytes'] / 2**20:.0f} MiB"
        table.add_row(
            str(w["worker"]),
            str(w["pid"]),
            w["state"],
            f"{w['servers_up']}/{w['servers']}",
            age,
            str(w["restarts"]),
            str(w["connections"]),
            rss,
        )
    out.print(table)
    for w in data["workers"]:  # why a worker was replaced: one line each
        if w.get("last_failure") and w["restarts"]:
            out.print(f"worker {w['worker']} last replaced: {w['last_failure']}", highlight=False)
    state = data.get("state")
    if state:
        age = state["last_saved_age_s"]
        saved = "not saved yet" if age is None else f"last saved {age:.0f} s ago"
        failed = state["saves_failed"]
        trouble = f", {failed} saves failed (last: {state['last_error']})" if failed else ""
        out.print(f"state file {state['file']}: {saved}{trouble}", highlight=False)


@main.command()
@api_options
@click.option("--timeout", default=15.0, show_default=True, help="Seconds to wait for the stop.")
def down(client: FarmClient, timeout: float) -> None:
    """Stop the running farm gracefully and wait until it is gone."""
    try:
        master = client.status().get("pid")
        client.shutdown()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # The API closes first: the farm is gone when it stops answering and, on this
            # host, its master has exited (only then are the servers' ports released).
            if not _answers(client) and not _farm_runs_here(client, master):
                out.print("farm stopped")
                return
            time.sleep(0.1)
        raise FarmError(f"the farm was asked to stop but still runs after {timeout:.0f} s")
    except FarmError as error:
        exit_with(error)


def _answers(client: FarmClient) -> bool:
    try:
        client.status()
    except FarmUnreachable:
        return False
    return True


def _farm_runs_here(client: FarmClient, pid: object) -> bool:
    """Whether the farm's master `pid` still runs, when the API is on this host's loopback."""
    from farm.master.run import loopback_host  # here: the other commands need no master

    host = urlsplit(client.url).hostname or ""
    if not isinstance(pid, int) or not loopback_host(host):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read()
    except (OSError, IndexError):  # gone, or another PID namespace: nothing to wait for
        return False
    return state != b"Z" and b"farm" in command  # a zombie has released everything


# Each command's module is imported when that command runs (or `farm --help` lists them):
# `farm status` need not load the master, the load generator and numpy, and `farm up` starts
# its workers sooner for not loading every other command first.
COMMANDS = {
    "up": "farm.cli.up:up",
    "validate": "farm.cli.validate:validate",
    "plan": "farm.cli.validate:plan_command",
    "bench": "farm.bench.command:bench",
    "prometheus-config": "farm.cli.prometheus_config:prometheus_config",
    "servers": "farm.cli.control:servers",
    "get": "farm.cli.control:get",
    "set": "farm.cli.control:set_values",
    "server": "farm.cli.control:server",
    "fault": "farm.cli.faults:fault",
    "certs": "farm.cli.certs:certs",
    "scenario": "farm.cli.scenario:scenario",
    "scale": "farm.cli.scenario:scale",
    "targets": "farm.cli.targets:targets",
    "net": "farm.cli.net:net",
    "writes": "farm.cli.observe.writes:writes",
    "clients": "farm.cli.observe.clients:clients",
    "report": "farm.cli.observe.report:report",
    "trace": "farm.cli.observe.trace:trace",
}


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands by name, each imported from its `module:attribute` on first use."""

    def __init__(self, loaded: MutableMapping[str, click.Command], where: dict[str, str]):
        self.loaded = loaded
        self.where = where

    def __getitem__(self, name: str) -> click.Command:
        if name not in self.loaded:
            module, _, attribute = self.where[name].partition(":")  # KeyError: no such command
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command), self.where[name]
            self.loaded[name] = command
        return self.loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self.loaded[name] = command

    def __delitem__(self, name: str) -> None:
        self.loaded.pop(name, None)
        self.where.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self.where), **dict.fromkeys(self.loaded)})

    def __len__(self) -> int:
        return len(set(self.where) | set(self.loaded))


main.commands = LazyCommands(main.commands, dict(COMMANDS))
