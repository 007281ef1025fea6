"""`farm validate` and `farm plan`: what a config would build, without binding anything.

Part of the CLI (the last stop of the data flow), and the one place that turns command-line
options into a Plan: `make_plan` serves `farm up` too, so the dry run and the real run can
never disagree.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
from rich.table import Table as RichTable

from farm.cli.budget import check_fleet_size
from farm.cli.sharding import ShardChoice, shard_options
from farm.config.growth import FleetSpec, default_fleet
from farm.config.plan import (
    Plan,
    ServerRequest,
    TlsSettings,
    Transport,
    build_plan,
    default_servers,
)
from farm.config.shards import fleet_slice, fleet_slices
from farm.config.templates import (
    TABLES_SHORT,
    DeviceTemplate,
    UnitLayout,
    default_template,
    with_connections,
)
from farm.config.tlsfiles import SERVER_SIDE, certs_dir, check_tls
from farm.errors import ConfigError, FarmError, InputError
from farm.master.supervision.listeners import describe
from farm.output import console, exit_with
from farm.words import counted

out = console()  # file, fleet and template names are printed as they are


# The CLI's names for the model's parameters (ConfigError.about).
FLAGS = {"count": "--count", "port_base": "--port-base", "workers": "--workers"}


@dataclass(frozen=True, slots=True)
class Fleet:
    """The whole fleet, before any shard takes its slice."""

    templates: dict[str, DeviceTemplate]
    requests: list[ServerRequest]
    seed: int
    fleets: tuple[FleetSpec, ...]  # how each fleet grows and shrinks (farm.config.growth)


def expand(
    file: str | None,
    count: int | None,
    host: str | None,
    port_base: int | None,
    transport: Transport | None = None,
    certs: str | None = None,
    allowed: Sequence[Path] = (),
    shards: int = 1,
) -> Fleet:
    """The whole fleet: a config file, or `count` built-in default devices. Its size is
    checked first (farm.cli.budget, for `shards` shards); `allowed`: places outside the
    config's directory its data files may be in (--allow-outside)."""
    if file is None:
        template = default_template()
        count = 100 if count is None else count
        check_fleet_size([("default", count, template)], shards)
        host = host or "127.0.0.1"
        port_base = 5020 if port_base is None else port_base
        tls = tls_from(certs, transport or "tcp")
        requests = default_servers(count, host, port_base, template.name, transport or "tcp", tls)
        fleet = default_fleet(count, host, port_base, template.name, transport or "tcp", tls)
        return Fleet({template.name: template}, requests, 0, (fleet,))
    if host is not None or port_base is not None or transport is not None:
        raise ConfigError(
            "--host, --port-base and --transport apply only without a config file "
            "(fleets give addresses and transports)"
        )
    # Here, not at the top: `farm up --count N` needs no config file, nor pydantic.
    from farm.config.fleets import load

    farm_file = load(file, allowed)
    counts = farm_file.counts(count)
    check_fleet_size(
        [
            (fleet.name, n, template)
            for fleet, n, template in zip(
                farm_file.model.fleets, counts, farm_file.fleet_templates, strict=True
            )
        ],
        shards,
    )
    templates, requests = farm_file.expand(count)
    if not requests:
        raise ConfigError(f"{file}: the fleets hold no servers (every count is 0)")
    specs = farm_file.fleet_specs(farm_file.counts(count))
    return Fleet(templates, requests, farm_file.seed, specs)


def make_plan(
    file: str | None,
    count: int | None,
    host: str | None,
    port_base: int | None,
    workers: int | None,
    transport: Transport | None = None,
    certs: str | None = None,
    shard: ShardChoice | None = None,
    connections: dict[str, Any] | None = None,
    counts: dict[str, int] | None = None,
    allowed: Sequence[Path] = (),
) -> Plan:
    """The plan for `farm up/plan`: a config file, or `count` built-in default devices.

    With `shard`, the whole fleet is expanded and the plan keeps that shard's slice.
    `connections` overrides fields of every template's ConnectionLimits. `counts` resizes
    fleets by name, as `farm scale` would have (a state file's sizes: `farm up --state`).
    """
    try:
        if workers is None:
            # The CPUs this process may run on (taskset, a container's cpuset), not all there are.
            workers = len(os.sched_getaffinity(0)) or 1
        shards = shard.count if shard is not None else 1
        fleet = expand(file, count, host, port_base, transport, certs, allowed, shards)
        if counts is not None:
            fleet = resized(fleet, counts)
        part = None
        if shard is not None:
            assert shard.index is not None
            part = fleet_slice(len(fleet.requests), shard.index, shard.count)
        templates = with_connections(fleet.templates, **(connections or {}))
        plan = build_plan(fleet.requests, templates, workers, fleet.seed, part)
        # A shard does not grow its fleet: its next names and addresses are another
        # shard's servers (growth sees no fleet, as for a plan made without one).
        return replace(plan, fleets=fleet.fleets if part is None else ())
    except ConfigError as error:
        if not error.about:
            raise
        flags = ", ".join(FLAGS[name] for name in error.about)
        raise ConfigError(f"{flags}: {error}") from error


def resized(fleet: Fleet, counts: dict[str, int]) -> Fleet:
    """The fleet with some fleets at other counts: the servers and addresses `farm scale`
    gives them (farm.config.growth), in the fleets' order."""
    fleets = tuple(replace(spec, count=counts.get(spec.name, spec.count)) for spec in fleet.fleets)
    requests = [request for spec in fleets for request in spec.servers(spec.count)]
    if not requests:
        raise ConfigError("the fleets hold no servers (every count is 0)")
    return replace(fleet, requests=requests, fleets=fleets)


def tls_from(certs: str | None, transport: Transport) -> TlsSettings | None:
    """TLS settings from a `farm certs` directory: its server certificate and key, and its
    CA for client certificates (each must be readable)."""
    if transport != "tls":
        if certs is not None:
            raise ConfigError("--certs applies only with --transport tls")
        return None
    if certs is None:
        raise ConfigError("--transport tls needs --certs DIR (make one with `farm certs DIR`)")
    paths = certs_dir(certs, SERVER_SIDE)
    try:
        check_tls(Path(paths["certificate"]), Path(paths["key"]), Path(paths["client_ca"]))
    except InputError as exc:
        raise ConfigError(f"--certs {certs}: {exc}") from exc
    return TlsSettings(**paths)


def span(addresses: list[tuple[str, int]]) -> str:
    """Addresses compressed into runs; past three runs, just the first and the last."""
    runs = describe(addresses)
    if runs.count(",") < 3:
        return runs
    first, last = min(addresses), max(addresses)
    return f"{first[0]}:{first[1]} … {last[0]}:{last[1]}"


def registers(template: DeviceTemplate) -> str:
    """'400 ir, 100 hr' per unit; '8 units x 10 ir' when every unit is alike."""

    def tables(unit: UnitLayout) -> str:
        sizes = [f"{unit.size(t)} {short}" for t, short in TABLES_SHORT if unit.size(t)]
        return ", ".join(sizes) or "none"

    described = [tables(unit) for unit in template.units]
    if len(described) > 1 and len(set(described)) == 1:
        return f"{len(described)} units x {described[0]}"
    if len(described) == 1:
        return described[0]
    return "; ".join(
        f"unit {u.unit_id}: {d}" for u, d in zip(template.units, described, strict=True)
    )


allow_outside_option = click.option(
    "--allow-outside",
    "allow_outside",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="PATH",
    help="Let replay CSVs be read from PATH (a file or directory) outside the config "
    "file's directory (repeatable).",
)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--count", type=int, default=None, help="Scale the fleets to this many servers in all."
)
@click.option(
    "--scenario", "scenario_file", default=None, help="Check this file's scenario instead."
)
@allow_outside_option
def validate(
    file: str, count: int | None, scenario_file: str | None, allow_outside: tuple[Path, ...]
) -> None:
    """Check a config file (and its scenario) and show the fleets it describes."""
    from farm.cli.scenario import describe as describe_scenario  # see scenario_for_up in up
    from farm.cli.scenario import scenario_for_up

    try:
        plan = make_plan(file, count, None, None, 1, allowed=allow_outside)
        timeline = scenario_for_up(file, scenario_file, plan)
    except FarmError as error:
        exit_with(error)
    servers = plan.servers()
    table = RichTable(
        "fleet", "template", "transport", "servers", "addresses", "points", "registers per device"
    )
    for fleet in dict.fromkeys(spec.fleet for spec in servers):
        members = [spec for spec in servers if spec.fleet == fleet]
        template = plan.templates[members[0].template]
        table.add_row(
            fleet,
            template.name,
            members[0].transport,
            str(len(members)),
            span([(s.host, s.port) for s in members]),
            str(len(template.points)),
            registers(template),
        )
    out.print(f"{file}: valid", highlight=False)
    out.print(table)
    templates = counted(len(plan.templates), "template")
    out.print(f"{counted(len(servers), 'server')} in {templates}", highlight=False)
    if timeline is not None:
        out.print(describe_scenario(timeline), highlight=False)


@click.command(name="plan")
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--count", type=int, default=None, help="Servers in all (scales a file's fleets).")
@click.option(
    "--workers", type=int, default=None, help="Worker processes [default: CPUs it may use]."
)
@click.option(
    "--servers", "every_server", is_flag=True, help="List every server, not one row per worker."
)
@shard_options(need_index=False)
@allow_outside_option
def plan_command(
    file: str | None,
    count: int | None,
    workers: int | None,
    every_server: bool,
    shard: ShardChoice | None,
    allow_outside: tuple[Path, ...],
) -> None:
    """Dry run: the servers, their addresses and each worker's shard; binds nothing.

    With --shard-count N alone: each shard's slice of the fleet; with --shard-index too: that
    shard's workers.
    """
    try:
        if shard is not None and shard.index is None:
            _print_slices(file, count, shard.count, allow_outside)
            return
        plan = make_plan(file, count, None, None, workers, shard=shard, allowed=allow_outside)
    except FarmError as error:
        exit_with(error)
    if every_server:
        rows = RichTable("server", "fleet", "address", "worker")
        for worker in plan.shards:
            for spec in worker.servers:
                rows.add_row(spec.name, spec.fleet, spec.address, str(worker.worker))
        out.print(rows)
        return
    table = RichTable("worker", "servers", "fleets", "addresses", "bank memory")
    for worker in plan.shards:
        fleets = Counter(spec.fleet for spec in worker.servers)
        table.add_row(
            str(worker.worker),
            str(len(worker.servers)),
            ", ".join(f"{name} {n}" for name, n in fleets.items()),
            span([(s.host, s.port) for s in worker.servers]),
            f"{worker.bank_bytes / 1024:.0f} KiB",
        )
    out.print(table)
    part = plan.fleet_slice
    where = ""
    if not part.whole:
        where = (
            f" (shard {part.index} of {part.count}: "
            f"servers {part.start}-{part.stop - 1} of {part.total})"
        )
    on = counted(len(plan.shards), "worker")
    out.print(f"{counted(plan.servers_total, 'server')} on {on}{where}", highlight=False)


def _print_slices(
    file: str | None, count: int | None, shards: int, allowed: Sequence[Path]
) -> None:
    """One row per shard: which servers it serves, by index, name and address."""
    requests = expand(file, count, None, None, allowed=allowed, shards=shards).requests
    table = RichTable("shard", "servers", "indices", "names", "addresses")
    for part in fleet_slices(len(requests), shards):
        mine = requests[part.start : part.stop]
        table.add_row(
            str(part.index),
            str(part.servers),
            f"{part.start}-{part.stop - 1}",
            f"{mine[0].name} … {mine[-1].name}" if len(mine) > 1 else mine[0].name,
            span([(r.host, r.port) for r in mine]),
        )
    out.print(table)
    out.print(f"{counted(len(requests), 'server')} in {counted(shards, 'shard')}", highlight=False)
