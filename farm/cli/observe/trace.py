"""`farm trace`: every request and answer of one server for a while, decoded.

    farm trace SERVER [--for 10s] [--client ADDR] [--pcap FILE]

One line a request: time, client, unit, function and what it asked, the values written or
read (or the exception), and how long the answer took. `--client` keeps to one client
(HOST or HOST:PORT); `--pcap FILE` also writes the requests and answers as a capture that
Wireshark and tshark dissect as Modbus (farm.cli.observe.pcap). It asks the farm a second at a time
to print as it goes; the server is traced only meanwhile.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from farm.cli.observe.pcap import capture
from farm.client import FarmClient, api_options
from farm.config.faults.selection import parse_duration
from farm.errors import ConfigError, FarmError
from farm.output import exit_with

SLICE_S = 1.0


def line(record: dict[str, Any]) -> str:
    """One line: '02:41:07.312  127.0.0.1:50112  unit 1  fc 3 read holding_registers 0 x4
    -> 1,2,3,4  0.1 ms'."""
    stamp = datetime.fromtimestamp(record["time"]).strftime("%H:%M:%S.%f")[:-3]
    where = "" if record["address"] is None else f" {record['address']}"
    if record["count"] is not None and record["function_code"] not in (5, 6, 22):
        where += f" x{record['count']}"
    values = ",".join(str(value) for value in record["values"])
    if record["exception"] is not None:
        outcome = f"exception {record['exception']:02X}"
    elif not record["answer"]:
        outcome = "no answer"
    elif record["function_code"] in (5, 6, 15, 16, 22):
        outcome = f"= {values}" if values else "ok"
    else:
        outcome = f"-> {values}" if values else "ok"
    return (
        f"{stamp}  {record['client']}  unit {record['unit']}  fc {record['function_code']} "
        f"{record['what']}{where} {outcome}  {1000 * record['latency_s']:.1f} ms"
    )


@click.command()
@api_options
@click.argument("server")
@click.option("--for", "duration", default="10s", show_default=True, help="How long (10s, 1m).")
@click.option("--client", "only", default="", help="Only this client (HOST or HOST:PORT).")
@click.option(
    "--pcap", type=click.Path(dir_okay=False, path_type=Path), help="Also write a capture."
)
def trace(client: FarmClient, server: str, duration: str, only: str, pcap: Path | None) -> None:
    """Trace SERVER: print every request and answer, decoded, for a while."""
    try:
        try:
            seconds = parse_duration(duration)
        except ValueError as error:
            raise ConfigError(f"--for: {error}") from None
        client.timeout = max(client.timeout, SLICE_S + 10)
        records: list[dict[str, Any]] = []
        answer: dict[str, Any] = {}
        left = seconds
        try:
            while left > 0:
                piece = min(SLICE_S, left)
                answer = client.trace(server, seconds=piece, client=only)
                for record in answer["records"]:
                    click.echo(line(record))
                records.extend(answer["records"])
                left -= piece
        except KeyboardInterrupt:
            pass
        if pcap is not None and answer:
            try:
                pcap.write_bytes(capture(answer, records))
            except OSError as error:
                raise ConfigError(f"--pcap {pcap}: {error.strerror or error}") from None
            click.echo(f"{len(records)} requests written to {pcap}", err=True)
    except FarmError as error:
        exit_with(error)
