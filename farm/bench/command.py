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
from click.core import ParameterSource
from rich.console import Console
from rich.live import Live
from rich.table import Table as RichTable
from rich.text import Text

from farm.bench import fan as loadfan
from farm.bench.latency import Histogram
from farm.bench.loadgen import LoadResult, LoadSpec, Snapshot, run_load
from farm.bench.spec import BenchOptions, first_read, parse_mix, parse_targets, split
from farm.bench.transports import ClientTls, tls_refusal
from farm.client import FarmClient, api_options, farm_clients, farms_option
from farm.config.plan import TRANSPORTS
from farm.config.tlsfiles import CLIENT_SIDE, certs_dir
from farm.errors import ConfigError, FarmError
from farm.openfiles import raise_open_files_limit
from farm.output import console, exit_with
from farm.words import counted

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
        "tls_refused": sum(r.tls_refused for r in results),
        "tls_reason": next((r.tls_reason for r in results if r.tls_reason), None),
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
        f"{mode}, {counted(report['connections'], 'connection')} over "
        f"{counted(report['targets'], 'server')}, "
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
            f"{counted(gen['processes'], 'process', 'processes')}, busy {busy} of a core, "
            f"{_cpu_per_request(gen['cpu_per_request_us'])}; ",
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
        targets = parse_targets(target_texts)
        reads: list[tuple[int, bytes]] | None = None
        if not targets:
            clients = farm_clients(client, farms)
            if _told_what_to_send():
                targets = [target for each in clients for target in each.targets(transport)]
            else:
                targets, reads = _first_reads(clients, transport, (unit, pdus[0]), err)
        if not targets:
            raise FarmError(f"no server to load: the farm reports no {transport} server up")
        specs = split(targets, pdus, options, reads)
        live = Live(console=err, auto_refresh=False, transient=True)
        show = err.is_terminal and not as_json
        with live if show else contextlib.nullcontext():
            results = run_bench(
                specs,
                (lambda s: live.update(live_view(s, duration), refresh=True)) if show else None,
            )
        report = summarize(results, options, len(targets))
        if transport == "tls":
            refused_tls(report, certs, targets[0], options.tls)
        if report["connected"] == 0 and report["responses"] == 0:
            raise FarmError(f"no connection to any of the {len(targets)} targets succeeded")
    except FarmError as error:
        exit_with(error)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        console().print(render(report))


def refused_tls(
    report: dict[str, Any], certs: str | None, target: tuple[str, int], tls: ClientTls | None
) -> None:
    """A TLS run that no server answered is an error, not a report of zeros, when TLS
    refused it: say what OpenSSL said and what to give.

    With TLS 1.3 a server that wants a client certificate refuses it after the client's side
    of the handshake is done, and uvloop then closes the connection without an error; so a
    run with no answer asks once more, with the standard library, to hear the reason.
    """
    if report["responses"]:
        return
    reason = report["tls_reason"] or tls_refusal(target, tls or ClientTls())
    if reason is None:
        return
    fix = (
        "it most likely wants a client certificate: give --certs DIR, a `farm certs` "
        "directory whose client.pem the farm's client_ca signed"
        if certs is None
        else f"check that the farm's client_ca signed {certs}/client.pem and that "
        f"{certs}/ca.pem signed the farm's certificate"
    )
    raise FarmError(
        f"the TLS handshake with {target[0]}:{target[1]} refused this client ({reason}), "
        f"so no request was answered; {fix}"
    )


def _cpu_per_request(us: float | None) -> str:
    return "no request answered" if us is None else f"{us} us CPU per request"


def _told_what_to_send() -> bool:
    """Whether the command line chose the requests (else a farm's templates do)."""
    context = click.get_current_context()
    return any(
        context.get_parameter_source(name) is not ParameterSource.DEFAULT
        for name in ("mix", "address", "quantity", "unit")
    )


def _first_reads(
    clients: list[FarmClient], transport: str, fallback: tuple[int, bytes], err: Console
) -> tuple[list[tuple[str, int]], list[tuple[int, bytes]]]:
    """Every server up of `transport`, each with its template's first point as the request:
    FC 3 at address 0 is exception 02 on a device without holding registers."""
    targets: list[tuple[str, int]] = []
    reads: list[tuple[int, bytes]] = []
    said: dict[str, str] = {}
    for each in clients:
        templates = {device.template: device.points for device in each.device_list().devices}
        chosen = {name: first_read(points) for name, points in templates.items()}
        for server in each.servers():
            if not server.up or server.transport != transport:
                continue
            read = chosen.get(server.template)
            targets.append(server.host_port)
            reads.append(fallback if read is None else (read[0], read[1]))
            if read is not None:
                said[server.template] = f"{server.template}: {read[2]} (unit {read[0]})"
    if said:
        err.print(
            "reading each template's first point: " + "; ".join(said.values()) + " "
            "(--mix, --address, --quantity or --unit to send something else)",
            highlight=False,
            soft_wrap=True,
        )
    return targets, reads


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
