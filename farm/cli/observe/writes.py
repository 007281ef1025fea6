"""`farm writes`: what was written to a server, by whom, and what it held before.

    farm writes SERVER [--since 30s] [--follow] [--json]

One line a write: time, client, unit, `table address = values (was previous)`; the farm's
own writes (API, scenario, page) name the client `farm`. `--follow` keeps printing new
writes until Ctrl-C; `--json` prints one JSON object a line (with `--follow` too).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import datetime

import click

from farm.client import FarmClient, WriteRecord, api_options
from farm.config.faults.selection import parse_duration
from farm.errors import ConfigError, FarmError
from farm.output import exit_with

FOLLOW_EVERY_S = 0.2


def line(write: WriteRecord) -> str:
    """'2026-12-07 02:41:07.312  127.0.0.1:50112  unit 1  holding_registers 10 = 42 (was 0)'"""
    stamp = datetime.fromtimestamp(write.time).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    values = ",".join(str(value) for value in write.values)
    previous = ",".join(str(value) for value in write.previous)
    return f"{stamp}  {write.client}  unit {write.unit}  {write.where} = {values} (was {previous})"


def _show(writes: list[WriteRecord], as_json: bool) -> None:
    for write in writes:
        click.echo(json.dumps(asdict(write)) if as_json else line(write))


@click.command()
@api_options
@click.argument("server")
@click.option("--since", default=None, help="Only writes of the last DURATION (30s, 5m).")
@click.option("--follow", is_flag=True, help="Keep printing new writes until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
def writes(client: FarmClient, server: str, since: str | None, follow: bool, as_json: bool) -> None:
    """Show the writes clients (and the farm) made to SERVER, oldest first."""
    try:
        oldest = 0.0 if since is None else time.time() - _seconds(since)
        found = client.writes(server)
        after = found[-1].seq if found else 0
        _show([write for write in found if write.time >= oldest], as_json)
        while follow:
            time.sleep(FOLLOW_EVERY_S)
            found = client.writes(server, after=after)
            if found:
                after = found[-1].seq
                _show(found, as_json)
    except FarmError as error:
        exit_with(error)
    except KeyboardInterrupt:
        return


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise ConfigError(f"--since: {error}") from None
