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

import time
from urllib.parse import urlsplit

import click
from rich.table import Table as RichTable

from farm import __version__
from farm.bench.command import bench
from farm.cli.certs import certs as certs_command
from farm.cli.control import get, server, servers, set_values
from farm.cli.faults import fault
from farm.cli.net import net
from farm.cli.observe.clients import clients
from farm.cli.observe.report import report
from farm.cli.observe.trace import trace
from farm.cli.observe.writes import writes
from farm.cli.prometheus_config import prometheus_config
from farm.cli.scenario import scale, scenario
from farm.cli.targets import targets
from farm.cli.up import up
from farm.cli.validate import plan_command, validate
from farm.client import FarmClient, api_options
from farm.errors import FarmError, FarmUnreachable
from farm.master.run import loopback_host
from farm.output import console, exit_with

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


main.add_command(up)
main.add_command(validate)
main.add_command(plan_command)
main.add_command(bench)
main.add_command(prometheus_config)
main.add_command(servers)
main.add_command(get)
main.add_command(set_values)
main.add_command(server)
main.add_command(fault)
main.add_command(certs_command)
main.add_command(scenario)
main.add_command(scale)
main.add_command(targets)
main.add_command(net)
main.add_command(writes)
main.add_command(clients)
main.add_command(report)
main.add_command(trace)
