"""`farm bench`: a Modbus TCP load generator that behaves like a SCADA master.

Not part of the farm's data flow: it is a client, like a real master, and it knows the farm
only through the control API (`GET /api/v1/servers`) when no explicit `--target` is given.

    farm bench [--api-port A | --farm HOST:PORT ... | --target HOST:PORT[-PORT] ...]
               [--connections C]
               [--rate R] [--depth D] [--mix 3:80,16:20] [--duration S] [--processes P]
               [--transport tcp|rtu-over-tcp|udp|tls [--certs DIR]] [--json]

farm.bench.spec turns the options into one share of the load per process; farm.bench.loadgen runs
a share; with `--processes P > 1` the
shares run in spawned processes (this module starts them, and nothing else does: they are
the generator's, not the farm's), which connect, wait at a barrier, and start together.
The report gives the generator's own CPU use: a process busy most of the window measures
the generator, not the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import click
import uvloop
from rich.live import Live
from rich.table import Table as RichTable
from rich.text import Text

from farm.bench import fan as loadfan
from farm.bench.latency import Histogram
from farm.bench.loadgen import LoadResult, LoadSpec, Snapshot, run_load
from farm.bench.spec import BenchOptions, parse_mix, parse_targets, split
from farm.bench.transports import ClientTls
from farm.client import FarmClient, api_options, farm_clients, farms_option
from farm.config.plan import TRANSPORTS
from farm.config.tlsfiles import CLIENT_SIDE, certs_dir
from farm.errors import ConfigError, FarmError
from farm.openfiles import raise_open_files_limit
from farm.output import console, exit_with

SATURATED = 0.9  # a generator process busier than this fraction of a core is the bottleneck


def run_bench(
    specs: list[LoadSpec], on_progress: Callable[[Snapshot], None] | None = None
) -> list[LoadResult]:
    """Run the shares: in this process when there is one, else one spawned process each."""
    raise_open_files_limit()
    if len(specs) == 1:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return [runner.run(run_load(specs[0], on_progress))]
    return loadfan.run_processes(specs, on_progress)


def summarize(results: list[LoadResult], options: BenchOptions, targets: int) -> dict[str, Any]:
    """The report, as the JSON `--json` prints."""
    histogram = Histogram.merged(r.histogram for r in results)
    window = max((r.window_s for r in results), default=0.0) or 1e-9
    responses = sum(r.responses for r in results)
    exceptions: dict[str, int] = {}
    for result in results:
        for code, count in result.exceptions.items():
            exceptions[f"{code:02X}"] = exceptions.get(f"{code:02X}", 0) + count
    busy = [round(r.cpu_s / r.window_s, 3) if r.window_s else 0.0 for r in results]
    cpu = sum(r.cpu_s for r in results)
    return {
        "mode": "closed" if options.rate is None else "open",
        "targets": targets,
        "connections": options.connections,
        "connected": sum(r.connected for r in results),
        "depth": options.depth,
        "rate": options.rate,
        "duration_s": options.duration_s,
        "window_s": round(window, 4),
        "sent": sum(r.sent for r in results),
        "responses": responses,
        "requests_per_s": round(responses / window, 1),
        "latency_s": {
            name: round(histogram.percentile(q), 6)
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
        }
        | {"max": histogram.max_us / 1e6},
        "exceptions": dict(sorted(exceptions.items())),
        "exceptions_total": sum(exceptions.values()),
        "timeouts": sum(r.timeouts for r in results),
        "connection_errors": sum(r.connection_errors for r in results),
        "lost": sum(r.lost for r in results),
        "unexpected": sum(r.unexpected for r in results),
        "shed": sum(r.shed for r in results),
        "generator": {
            "processes": len(results),
            "cpu_s": round(cpu, 3),
            "cpu_per_request_us": round(1e6 * cpu / responses, 2) if responses else None,
            "busy": busy,
            "saturated": any(b >= SATURATED for b in busy),
        },
    }


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def render(report: dict[str, Any]) -> RichTable:
    lat, gen = report["latency_s"], report["generator"]
    table = RichTable(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    mode = "closed loop" if report["mode"] == "closed" else f"open loop at {report['rate']:g}/s"
    table.add_row(
        "load",
        f"{mode}, {report['connections']} connections over {report['targets']} servers, "
        f"depth {report['depth']}, {report['window_s']:.2f} s",
    )
    table.add_row("requests", f"{report['responses']} answered of {report['sent']} sent")
    table.add_row("throughput", f"{report['requests_per_s']:,.0f} requests/s")
    table.add_row(
        "latency",
        f"p50 {_ms(lat['p50'])}  p90 {_ms(lat['p90'])}  p99 {_ms(lat['p99'])}  "
        f"max {_ms(lat['max'])}",
    )
    codes = ", ".join(f"{code}: {n}" for code, n in report["exceptions"].items()) or "none"
    table.add_row("exceptions", f"{report['exceptions_total']} ({codes})")
    table.add_row(
        "errors",
        f"{report['timeouts']} timeouts, {report['connection_errors']} connection errors, "
        f"{report['lost']} lost in dropped connections, {report['unexpected']} unexpected "
        f"responses, {report['shed']} shed",
    )
    busy = ", ".join(f"{b:.0%}" for b in gen["busy"])
    verdict = (
        ("saturated: these figures measure the generator", "bold red")
        if gen["saturated"]
        else "not saturated"
    )
    table.add_row(
        "generator",
        Text.assemble(
            f"{gen['processes']} process(es), busy {busy} of a core, "
            f"{gen['cpu_per_request_us']} us CPU per request; ",
            verdict,
        ),
    )
    return table


def live_view(snapshot: Snapshot, duration_s: float) -> Text:
    rate = snapshot.responses / snapshot.elapsed_s if snapshot.elapsed_s > 0 else 0.0
    return Text.assemble(
        ("farm bench", "bold"),
        f" {min(snapshot.elapsed_s, duration_s):5.1f} / {duration_s:g} s  "
        f"{snapshot.responses:,} answered  {rate:,.0f}/s  "
        f"exceptions {snapshot.exceptions}  timeouts {snapshot.timeouts}  "
        f"errors {snapshot.errors}",
    )


@click.command()
@click.option("--target", "-t", "target_texts", multiple=True, help="HOST:PORT[-PORT]; repeatable.")
@api_options
@farms_option
@click.option("--connections", "-c", default=50, show_default=True, help="TCP connections.")
@click.option("--rate", "-r", type=float, default=None, help="Open loop: requests/s in total.")
@click.option(
    "--depth", "-d", default=1, show_default=True, help="Requests in flight per connection."
)
@click.option("--mix", default="3:100", show_default=True, help="Function codes, FC:WEIGHT,...")
@click.option("--unit", default=1, show_default=True, help="Unit id of every request.")
@click.option("--address", default=0, show_default=True, help="First address of every request.")
@click.option("--quantity", default=10, show_default=True, help="Registers or bits per request.")
@click.option("--duration", default=10.0, show_default=True, help="Seconds of load.")
@click.option("--max-requests", default=10_000_000, show_default=True, help="Stop after this many.")
@click.option(
    "--timeout", default=1.0, show_default=True, help="Seconds before a request times out."
)
@click.option("--processes", "-p", default=1, show_default=True, help="Generator processes.")
@click.option(
    "--transport",
    type=click.Choice(TRANSPORTS),
    default="tcp",
    show_default=True,
    help="How to frame requests (from a farm's API: only its servers of this transport).",
)
@click.option(
    "--certs",
    type=click.Path(file_okay=False),
    default=None,
    help="For tls: a `farm certs` directory (ca.pem checks the farm, client.pem/.key are sent).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def bench(
    target_texts: tuple[str, ...],
    client: FarmClient,
    farms: tuple[str, ...],
    connections: int,
    rate: float | None,
    depth: int,
    mix: str,
    unit: int,
    address: int,
    quantity: int,
    duration: float,
    max_requests: int,
    timeout: float,
    processes: int,
    transport: str,
    certs: str | None,
    as_json: bool,
) -> None:
    """Load a farm (or any Modbus servers) like a SCADA master, and report."""
    err = console(stderr=True)  # nothing here is Rich markup
    try:
        options = _options(
            connections, rate, depth, duration, max_requests, timeout, unit, processes
        )
        options = replace(options, transport=transport, tls=client_tls(transport, certs))
        pdus = parse_mix(mix, address, quantity)
        targets = parse_targets(target_texts) or [
            target for each in farm_clients(client, farms) for target in each.targets(transport)
        ]
        if not targets:
            raise FarmError(f"no server to load: the farm reports no {transport} server up")
        specs = split(targets, pdus, options)
        live = Live(console=err, auto_refresh=False, transient=True)
        show = err.is_terminal and not as_json
        with live if show else contextlib.nullcontext():
            results = run_bench(
                specs,
                (lambda s: live.update(live_view(s, duration), refresh=True)) if show else None,
            )
        report = summarize(results, options, len(targets))
        if report["connected"] == 0 and report["responses"] == 0:
            raise FarmError(f"no connection to any of the {len(targets)} targets succeeded")
    except FarmError as error:
        exit_with(error)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        console().print(render(report))


def client_tls(transport: str, certs: str | None) -> ClientTls | None:
    """The client side of a `farm certs` directory, each file checked readable."""
    if certs is None:
        return None
    if transport != "tls":
        raise ConfigError("--certs applies only with --transport tls")
    return ClientTls(**certs_dir(certs, CLIENT_SIDE))


def _options(
    connections: int,
    rate: float | None,
    depth: int,
    duration: float,
    max_requests: int,
    timeout: float,
    unit: int,
    processes: int,
) -> BenchOptions:
    checks = (
        (connections >= 1, "--connections must be at least 1"),
        (1 <= processes <= min(connections, 64), "--processes must be 1-64 and <= --connections"),
        (1 <= depth <= 1024, "--depth must be 1-1024"),
        (rate is None or rate > 0, "--rate must be above 0"),
        (0 < duration <= 86_400, "--duration must be above 0 and at most a day"),
        (max_requests >= 1, "--max-requests must be at least 1"),
        (0 < timeout <= 60, "--timeout must be above 0 and at most 60 s"),
        (0 <= unit <= 255, "--unit must be 0-255"),
    )
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return BenchOptions(
        connections=connections,
        rate=rate,
        depth=depth,
        duration_s=duration,
        max_requests=max_requests,
        timeout_s=timeout,
        unit=unit,
        processes=processes,
    )
