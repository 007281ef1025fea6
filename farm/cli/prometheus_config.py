"""`farm prometheus-config`: a Prometheus configuration that scrapes the running farm.

At the end of the data flow with the CLI (... api -> cli): a client of the control API. It
asks each farm (the one on `--api-port`, or every `--farm HOST:PORT` for a farm run as
shards) where it serves /metrics (`metrics_urls` in `GET /api/v1/status`, the separate
`--metrics-port` listener first) and prints a whole prometheus.yml: run Prometheus on it
as it is, or paste its `scrape_configs` entry into an existing configuration.

The scrape interval follows the farm's size unless `--scrape-interval` says otherwise: a
scrape carries about 25 series per server, and Prometheus should finish one well before
the next starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import click
import yaml

from farm.cli.sharding import ShardSeen, check_cover
from farm.client import FarmClient, api_options, farm_clients, farms_option
from farm.errors import ConfigError, FarmError
from farm.output import exit_with

_DURATION = re.compile(r"^([1-9][0-9]*)(ms|s|m|h)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})
RULES = "recording-rules.yml"  # dashboards/recording-rules.yml, copied beside prometheus.yml


@dataclass(frozen=True, slots=True)
class FarmTarget:
    """One farm (or shard) as its API describes it."""

    metrics: str  # host:port Prometheus scrapes
    path: str
    servers: int
    shard: ShardSeen | None = None  # None: not said (a farm before shards)


def scrape_interval_for(servers: int) -> str:
    if servers <= 2_000:
        return "5s"
    if servers <= 10_000:
        return "15s"
    return "30s"


def seconds(duration: str) -> float:
    """A Prometheus duration (5s, 500ms, 1m) in seconds; ConfigError if it is not one."""
    match = _DURATION.fullmatch(duration)
    if match is None:
        raise ConfigError(f"--scrape-interval {duration!r}: expected a duration such as 5s or 1m")
    return int(match[1]) * _UNIT_S[match[2]]


def describe_farm(client: FarmClient, target_host: str | None = None) -> FarmTarget:
    """Ask the farm behind `client` where its metrics are."""
    status = client.status()
    try:
        metrics_url = str(status["metrics_urls"][0])
        servers = int(status["servers_total"])
        part = status.get("shard") or {"index": 0, "count": 1, "fleet_total": servers}
        shard = ShardSeen(client.netloc, part["index"], part["count"], part["fleet_total"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise FarmError(f"{client.url} does not describe a farm's metrics ({exc!r})") from exc
    parts = urlsplit(metrics_url)
    host = parts.hostname or ""
    if target_host:
        host = target_host
    elif host in _WILDCARDS:
        host = urlsplit(client.url).hostname or "127.0.0.1"  # reachable as the API was
    netloc = f"[{host}]" if ":" in host else host
    return FarmTarget(
        metrics=f"{netloc}:{parts.port}", path=parts.path, servers=servers, shard=shard
    )


def render_config(
    targets: list[FarmTarget],
    job: str,
    interval: str | None = None,
    rules: str = RULES,
) -> str:
    servers = sum(target.servers for target in targets)
    interval = interval or scrape_interval_for(servers)
    timeout = interval if seconds(interval) <= 10 else "10s"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [rules],
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": interval,
                "scrape_timeout": timeout,
                "metrics_path": targets[0].path,
                "static_configs": [{"targets": [target.metrics for target in targets]}],
            }
        ],
    }
    farms = f"{len(targets)} farm{'s' if len(targets) > 1 else ''}"
    header = (
        f"# Prometheus configuration for modbus-farm: {farms}, {servers} servers.\n"
        "# Written by `farm prometheus-config`; use it whole (prometheus --config.file=...)\n"
        "# or copy the scrape_configs entry into your own prometheus.yml. The dashboards'\n"
        f"# fleet selector needs dashboards/recording-rules.yml there as {rules} (a path\n"
        "# relative to this file, or --rules PATH).\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


@click.command(name="prometheus-config")
@api_options
@farms_option
@click.option(
    "--target-host",
    default=None,
    help="Address Prometheus reaches the farm at, if not the one the farm reports.",
)
@click.option(
    "--scrape-interval",
    default=None,
    help="Prometheus duration such as 5s [default: from the farm's size].",
)
@click.option("--job", default="modbus-farm", show_default=True, help="Prometheus job name.")
@click.option(
    "--rules",
    default=RULES,
    show_default=True,
    help="Where Prometheus finds dashboards/recording-rules.yml (the dashboards need it).",
)
def prometheus_config(
    client: FarmClient,
    farms: tuple[str, ...],
    target_host: str | None,
    scrape_interval: str | None,
    job: str,
    rules: str,
) -> None:
    """Print a Prometheus configuration that scrapes the running farm."""
    try:
        if scrape_interval is not None:
            seconds(scrape_interval)  # raises ConfigError for what is not a duration
        clients = farm_clients(client, farms)
        targets = [describe_farm(each, target_host) for each in clients]
        paths = {target.path for target in targets}
        if len(paths) > 1:
            raise FarmError(f"the farms serve metrics on different paths: {sorted(paths)}")
        warning = check_cover([t.shard for t in targets if t.shard is not None])
        if warning is not None:
            click.echo(f"farm: warning: {warning}", err=True)
    except FarmError as error:
        exit_with(error)
    click.echo(render_config(targets, job, scrape_interval, rules), nl=False)
