"""`farm report`: what the system under test did, per client and fleet.

    farm report [--since 60s] [--fleet F] [--json]

Per client and fleet: servers polled and never polled (named, then counted past 20), poll
intervals (the usual one, p50, p99, the largest gap), writes; per fleet the servers no
client polled; and for every fault that ended in the window, how each client behaved: its
connection attempts per second while the servers were offline (when the farm can count
them) and the time from the fault's end to its first poll of each server again.
"""

from __future__ import annotations

import json
from typing import Any

import click

from farm.client import FarmClient, api_options
from farm.config.faults.selection import parse_duration
from farm.errors import ConfigError, FarmError
from farm.output import exit_with


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms"


def _names(names: dict[str, Any]) -> str:
    shown = ", ".join(names["names"])
    more = names["count"] - len(names["names"])
    return shown + (f" (+{more})" if more > 0 else "")


def lines(data: dict[str, Any]) -> list[str]:
    """The report as `farm report` prints it."""
    out = [f"the last {data['since_s']:g} s"]
    for row in data["clients"]:
        polled, never, times = row["polled"], row["never_polled"], row["intervals"]
        out.append(
            f"client {row['client']}  fleet {row['fleet']}: polled {polled['count']} of "
            f"{row['servers']}, never polled {never['count']}"
            + (f": {_names(never)}" if never["count"] else "")
        )
        out.append(
            f"  poll interval usual {_ms(times['usual_s'])}, p50 {_ms(times['p50_s'])}, "
            f"p99 {_ms(times['p99_s'])}, max {_ms(times['max_s'])}; writes {row['writes']}"
        )
    for fleet in data["fleets"]:
        never = fleet["never_polled"]
        out.append(
            f"fleet {fleet['fleet']}: {fleet['polled']} of {fleet['servers']} polled, "
            f"never polled {never['count']}" + (f": {_names(never)}" if never["count"] else "")
        )
    for fault in data["faults"]:
        out.append(
            f"fault {fault['id']} {fault['kind']} on {fault['servers']} servers for "
            f"{fault['lasted_s']:.1f} s, ended {fault['ended_s_ago']:.1f} s ago"
        )
        for client in fault["clients"]:
            attempts = client["attempts_per_s"]
            tried = "" if attempts is None else f"; {attempts:.1f} connection attempts/s meanwhile"
            missing = client["not_recovered"]
            out.append(
                f"  {client['client']}: polled again {client['recovered']}"
                + (f", not yet {missing['count']} ({_names(missing)})" if missing["count"] else "")
                + (
                    f"; first poll after the end p50 {_ms(client['p50_s'])}, "
                    f"p99 {_ms(client['p99_s'])}, max {_ms(client['max_s'])}"
                    if client["recovered"]
                    else ""
                )
                + tried
            )
    return out


@click.command()
@api_options
@click.option("--since", default="60s", show_default=True, help="The window (30s, 5m).")
@click.option("--fleet", default=None, help="Only this fleet.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def report(client: FarmClient, since: str, fleet: str | None, as_json: bool) -> None:
    """Report what the clients did: coverage, intervals, writes, behaviour around faults."""
    try:
        try:
            seconds = parse_duration(since)
        except ValueError as error:
            raise ConfigError(f"--since: {error}") from None
        data = client.report(since=seconds, fleet=fleet)
    except FarmError as error:
        exit_with(error)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for line in lines(data):
        click.echo(line)
