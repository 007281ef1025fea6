"""`farm targets`: every device as a SCADA imports it, from one farm or every shard.

A client of the control API (GET /api/v1/targets, see farm.config.targets): name, IP, port,
transport, unit ids, template and, per point, table, address, type, byte and word order, scale and
writability. CSV has one row per point (a device without points gets one row with the
point columns empty); JSON has one object per device with its points inside.

A farm whose servers listen on every address (0.0.0.0, as in a container) cannot say which
address a SCADA reaches: those devices are listed at the address the farm's API was
reached at, or at `--target-host`.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict, replace
from typing import Any
from urllib.parse import urlsplit

import click

from farm.cli.sharding import ShardSeen, check_cover
from farm.client import (
    DeviceList,
    DeviceTarget,
    FarmClient,
    api_options,
    farm_clients,
    farms_option,
)
from farm.errors import FarmError
from farm.output import exit_with

WILDCARDS = frozenset({"0.0.0.0", "::", ""})
DEVICE_COLUMNS = ("device", "ip", "port", "transport", "unit_ids", "template")
POINT_COLUMNS = (
    "unit_id", "point", "table", "address", "count", "type",
    "byte_order", "word_order", "scale", "writable",
)  # fmt: skip


def collect(clients: list[FarmClient], target_host: str | None) -> list[DeviceTarget]:
    """Every farm's devices in fleet order, wildcard addresses replaced; raises FarmError."""
    lists: list[tuple[FarmClient, DeviceList]] = [(c, c.device_list()) for c in clients]
    warning = check_cover(
        [
            ShardSeen(c.netloc, part.shard_index, part.shard_count, part.fleet_total)
            for c, part in lists
        ]
    )
    if warning is not None:
        click.echo(f"farm: warning: {warning}", err=True)
    devices: list[DeviceTarget] = []
    for client, part in lists:
        reachable = target_host or urlsplit(client.url).hostname or "127.0.0.1"
        for device in part.devices:
            wildcard = device.ip in WILDCARDS
            devices.append(replace(device, ip=reachable) if wildcard else device)
    return sorted(devices, key=lambda device: device.index)


def write_csv(devices: list[DeviceTarget], stream: Any) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(DEVICE_COLUMNS + POINT_COLUMNS)
    for device in devices:
        head = [device.name, device.ip, device.port, device.transport]
        head.append(" ".join(map(str, device.unit_ids)))
        head.append(device.template)
        if not device.points:
            writer.writerow(head + [""] * len(POINT_COLUMNS))
        for p in device.points:
            where = [p.unit_id, p.name, p.table, p.address, p.count, p.type]
            encoding = [p.byte_order, p.word_order, p.scale, str(p.writable).lower()]
            writer.writerow([*head, *where, *encoding])


def write_json(devices: list[DeviceTarget], stream: Any) -> None:
    rows = []
    for device in devices:
        row = asdict(device)
        row["unit_ids"] = list(device.unit_ids)
        rows.append(row)
    json.dump({"devices": rows}, stream)
    stream.write("\n")


@click.command(name="targets")
@api_options
@farms_option
@click.option(
    "--format",
    "output",
    type=click.Choice(["csv", "json"]),
    default="csv",
    show_default=True,
    help="CSV: a row per point; JSON: an object per device.",
)
@click.option(
    "--target-host",
    default=None,
    help="Address a SCADA reaches devices at when the farm listens on 0.0.0.0.",
)
def targets(
    client: FarmClient, farms: tuple[str, ...], output: str, target_host: str | None
) -> None:
    """List every device of the running farm (or of every --farm shard) for a SCADA."""
    try:
        devices = collect(farm_clients(client, farms), target_host)
    except FarmError as error:
        exit_with(error)
    (write_csv if output == "csv" else write_json)(devices, sys.stdout)
