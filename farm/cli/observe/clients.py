"""`farm clients`: the system under test's clients, one row each.

    farm clients [--server NAME] [--json]

A row: the client's address, how many servers it polls, its requests/s, its poll interval
(p50/p99 over its polls), and the servers it polled before and has not polled for 3
intervals. `--server` shows that server's clients with each poll in detail.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import click
from rich.table import Table as RichTable

from farm.client import ClientInfo, FarmClient, api_options
from farm.errors import FarmError
from farm.output import console, exit_with

out = console()
SHOWN_NAMES = 5  # stale servers named in a row; the rest counted


def _names(names: tuple[str, ...]) -> str:
    if not names:
        return "-"
    shown = ", ".join(names[:SHOWN_NAMES])
    more = len(names) - SHOWN_NAMES
    return f"{shown} (+{more})" if more > 0 else shown


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms" if seconds else "-"


def table(rows: list[ClientInfo]) -> RichTable:
    shown = RichTable(
        "client", "servers", "requests/s", "poll p50", "poll p99", "writes", "exceptions",
        "stopped polling",
    )  # fmt: skip
    for row in rows:
        shown.add_row(
            row.client,
            str(len(row.servers)),
            f"{row.requests_per_s:.1f}",
            _ms(row.poll_p50_s),
            _ms(row.poll_p99_s),
            str(row.writes),
            str(row.exceptions),
            _names(row.stale),
        )
    return shown


def polls_table(rows: list[ClientInfo]) -> RichTable:
    shown = RichTable(
        "client", "unit", "fc", "address", "count", "requests", "p50", "p99", "max gap"
    )
    for row in rows:
        for poll in row.polls:
            shown.add_row(
                row.client, str(poll.unit), str(poll.function_code), str(poll.address),
                str(poll.count), str(poll.requests), _ms(poll.p50_s), _ms(poll.p99_s),
                _ms(poll.max_gap_s),
            )  # fmt: skip
    return shown


@click.command()
@api_options
@click.option("--server", default=None, help="Only this server's clients, with every poll.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def clients(client: FarmClient, server: str | None, as_json: bool) -> None:
    """Show who polls the farm: one row a client (an address)."""
    try:
        rows = client.clients(server)
    except FarmError as error:
        exit_with(error)
    if as_json:
        click.echo(json.dumps([asdict(row) for row in rows], indent=2))
        return
    if not rows:
        out.print("no client has polled" + (f" {server}" if server else " the farm"))
        return
    out.print(table(rows))
    if server is not None:
        out.print(polls_table(rows))
