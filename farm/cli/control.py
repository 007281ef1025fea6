"""`farm servers`, `farm get`, `farm set`, `farm server stop|start`: drive a running farm.

    farm servers [--fleet F] [--name GLOB] [--worker W] [--state up|offline|faulted] [--json]
    farm get SERVER [POINT | TABLE:ADDR[:COUNT]] [--unit U] [--json]
    farm set SERVER POINT=VALUE | TABLE:ADDR=V1,V2 ... [--unit U]
    farm server stop|start NAME...

Clients of the control API through farm.client.FarmClient (--api-host/--api-port/--api-token).
TABLE is coils, discrete_inputs, holding_registers or input_registers (or co, di, hr, ir);
addresses count from 0, as on the wire. A refusal from the farm is its message on one line
and a non-zero exit.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict
from typing import Any

import click
from rich.table import Table as RichTable
from rich.text import Text

from farm.cli.faults import describe
from farm.client import FarmClient, FaultInfo, PointValue, api_options
from farm.config import codec
from farm.config.templates import TABLES_SHORT, Table
from farm.errors import ConfigError, FarmError
from farm.output import console, exit_with
from farm.words import counted

out = console()  # server, fleet and point names are printed as they are
TABLE_NAMES = {table.value: table for table in Table} | {
    short: table for table, short in TABLES_SHORT
}


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def parse_table_spec(text: str) -> tuple[Table, int, int] | None:
    """'holding_registers:10:2' -> (table, 10, 2); None when `text` names no table."""
    parts = text.split(":")
    if parts[0] not in TABLE_NAMES:
        if len(parts) > 1 and parts[1].strip().isdigit():  # TABLE:ADDR with a table misspelt
            raise ConfigError(f"{parts[0]!r} is no table{did_you_mean(parts[0], TABLE_NAMES)}")
        return None
    if not 2 <= len(parts) <= 3:
        raise ConfigError(f"{text!r}: expected TABLE:ADDRESS or TABLE:ADDRESS:COUNT")
    try:
        numbers = [int(part, 0) for part in parts[1:]]
    except ValueError as error:
        raise ConfigError(f"{text!r}: address and count are whole numbers") from error
    return TABLE_NAMES[parts[0]], numbers[0], numbers[1] if len(numbers) == 2 else 1


def did_you_mean(word: str, names: Any) -> str:
    """'; did you mean holding_registers? tables: coils, ...' for a misspelt table name."""
    close = difflib.get_close_matches(word, list(names), n=1)
    tables = ", ".join(table.value for table in Table)
    shorts = ", ".join(short for _, short in TABLES_SHORT)
    guess = f"; did you mean {close[0]}?" if close else ""
    return f"{guess} tables: {tables} (or {shorts})"


def parse_entries(text: str) -> list[int]:
    """'1234,0x10,true' -> [1234, 16, 1]."""
    values = []
    for item in text.split(","):
        try:
            values.append(codec.whole_from_text(item))
        except ValueError as error:
            raise ConfigError(f"{item!r} is not a whole number (or true/false)") from error
    return values


@click.command()
@api_options
@click.option("--fleet", default=None, help="Only servers of this fleet.")
@click.option("--name", "glob", default=None, help="Only names matching this glob ('plc-*').")
@click.option("--worker", type=int, default=None, help="Only servers of this worker.")
@click.option(
    "--state",
    type=click.Choice(["up", "offline", "faulted"]),
    default=None,
    help="up: serving; offline: not serving; faulted: a fault is active on it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def servers(
    client: FarmClient,
    fleet: str | None,
    glob: str | None,
    worker: int | None,
    state: str | None,
    as_json: bool,
) -> None:
    """List the farm's servers: name, address, fleet, template, worker, state."""
    try:
        found = client.servers(fleet=fleet, name=glob, worker=worker, state=state)
    except FarmError as error:
        exit_with(error)
    if as_json:
        _print_json([asdict(server) for server in found])
        return
    if not found:
        click.echo("no servers match")  # not a table of headers alone
        return
    table = RichTable("name", "address", "fleet", "template", "worker", "state")
    for server in found:
        cells = (server.name, server.address, server.fleet, server.template, str(server.worker))
        state_text = server.state + (f" ({server.error})" if server.error else "")
        table.add_row(*(Text(cell) for cell in (*cells, state_text)))
    out.print(table)
    click.echo(counted(len(found), "server"))


@click.command()
@api_options
@click.argument("server")
@click.argument("what", required=False)
@click.option("--unit", type=click.IntRange(0, 255), default=255, help="Unit id [default: first].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def get(client: FarmClient, server: str, what: str | None, unit: int, as_json: bool) -> None:
    """Show a server, one of its points (POINT) or table entries (TABLE:ADDR[:COUNT])."""
    try:
        if what is None:
            _show_server(client, server, as_json)
            return
        spec = parse_table_spec(what)
        if spec is None:
            _show_point(client.point(server, what), as_json)
            return
        table, address, count = spec
        values = client.read(server, table, address, count, unit)
        _show_entries(table, address, values, as_json)
    except FarmError as error:
        exit_with(error)


@click.command(name="set")
@api_options
@click.argument("server")
@click.argument("assignments", nargs=-1, required=True)
@click.option("--unit", type=click.IntRange(0, 255), default=255, help="Unit id [default: first].")
def set_values(client: FarmClient, server: str, assignments: tuple[str, ...], unit: int) -> None:
    """Write POINT=VALUE (an engineering value) or TABLE:ADDR=V1,V2 (raw entries).

    Writes as the operator: any table, read-only points too. Prints what reads back.
    """
    try:
        for assignment in assignments:
            target, equals, value = assignment.partition("=")
            if not equals:
                raise ConfigError(f"{assignment!r}: expected POINT=VALUE or TABLE:ADDR=V1,V2")
            spec = parse_table_spec(target)
            if spec is None:
                _show_point(client.set_point(server, target, value), as_json=False)
                continue
            table, address, _ = spec
            written = client.write(server, table, address, parse_entries(value), unit)
            _show_entries(table, address, written, as_json=False)
    except FarmError as error:
        exit_with(error)


@click.group()
def server() -> None:
    """Stop or start servers: offline means its port is closed (connections refused)."""


@server.command()
@api_options
@click.argument("names", nargs=-1, required=True)
def stop(client: FarmClient, names: tuple[str, ...]) -> None:
    """Take servers offline: ports closed, open connections dropped, values kept."""
    _switch(client.stop, names, "stopped")


@server.command()
@api_options
@click.argument("names", nargs=-1, required=True)
def start(client: FarmClient, names: tuple[str, ...]) -> None:
    """Bring stopped servers back on their addresses, with their values."""
    _switch(client.start, names, "started")


def _switch(action: Any, names: tuple[str, ...], done: str) -> None:
    try:
        for name in names:
            result = action(name)
            click.echo(f"{name} {done}" if result.changed else f"{name} was already {done}")
    except FarmError as error:
        exit_with(error)


def _show_entries(table: Table, address: int, values: list[int], as_json: bool) -> None:
    if as_json:
        _print_json({"table": table.value, "address": address, "values": values})
        return
    for offset, value in enumerate(values):
        click.echo(f"{table.value}:{address + offset} = {value}")


def _show_point(point: PointValue, as_json: bool) -> None:
    if as_json:
        _print_json(asdict(point))
    else:
        click.echo(f"{point.name} = {point.value}")


def _show_server(client: FarmClient, name: str, as_json: bool) -> None:
    detail = client.server(name)
    if as_json:
        _print_json(asdict(detail))
        return
    info = detail.info
    click.echo(f"{info.name}  {info.address}  fleet {info.fleet}  template {info.template}")
    click.echo(
        f"worker {info.worker}  state {info.state}  connections {detail.connections}"
        + (f"  error: {info.error}" if info.error else "")
    )
    for unit in detail.units:
        sizes = ", ".join(f"{count} {table}" for table, count in unit.items() if table != "unit_id")
        click.echo(f"unit {unit['unit_id']}: {sizes}")
    table = RichTable("point", "table:address", "type", "behaviour", "value")
    for point in detail.points:
        where = f"{point.table}:{point.address}"
        cells = (point.name, where, point.type, point.behaviour, str(point.value))
        table.add_row(*(Text(cell) for cell in cells))
    if detail.points:
        out.print(table)
    for fault in detail.faults:  # as `farm fault add` and `clear` say them
        shown = FaultInfo.from_json(fault)
        out.print(f"fault {shown.id}: {describe(shown)}", highlight=False, soft_wrap=True)
