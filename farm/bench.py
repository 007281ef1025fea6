"""`farm bench`: a Modbus TCP load generator that behaves like a SCADA master.

Not part of the farm's data flow: it is a client, like a real master, and it knows the farm
only through the control API (`GET /api/v1/servers`) when no explicit `--target` is given.

    farm bench [--api-port A | --target HOST:PORT[-PORT] ...] [--connections C]
               [--rate R] [--depth D] [--mix 3:80,16:20] [--duration S] [--processes P]
               [--json]

The load itself runs in farm.loadgen, one share per process; with `--processes P > 1` the
shares run in spawned processes (this module starts them, and nothing else does: they are
the generator's, not the farm's), which connect, wait at a barrier, and start together.
The report gives the generator's own CPU use: a process busy most of the window measures
the generator, not the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import resource
import struct
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
import uvloop
from rich.console import Console
from rich.live import Live
from rich.table import Table as RichTable

from farm import loadfan
from farm.errors import ConfigError, FarmError, FarmUnreachable
from farm.latency import Histogram
from farm.loadgen import LoadResult, LoadSpec, Snapshot, run_load

SATURATED = 0.9  # a generator process busier than this fraction of a core is the bottleneck
READS = {1: 2000, 2: 2000, 3: 125, 4: 125}  # function code -> largest quantity


def parse_targets(texts: tuple[str, ...]) -> list[tuple[str, int]]:
    """`127.0.0.1:5020-5519` or `127.0.0.1:5020` (repeatable) -> [(host, port), ...]."""
    targets: list[tuple[str, int]] = []
    for text in texts:
        host, _, ports = text.rpartition(":")
        first, _, last = ports.partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise ConfigError(f"--target {text!r}: expected HOST:PORT or HOST:PORT-PORT") from None
        if not host or not 1 <= low <= high <= 65535:
            raise ConfigError(f"--target {text!r}: expected HOST:PORT or HOST:PORT-PORT")
        targets.extend((host.strip("[]"), port) for port in range(low, high + 1))
    return targets


def farm_targets(api_host: str, api_port: int) -> list[tuple[str, int]]:
    """Every server the farm reports up, from its control API."""
    url = f"http://{api_host}:{api_port}/api/v1/servers"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            rows = json.load(response)["servers"]
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError, KeyError) as exc:
        raise FarmUnreachable(
            f"no farm answers at {url} ({getattr(exc, 'reason', exc)}); start one with "
            "`farm up`, pass its --api-port, or give --target HOST:PORT-PORT"
        ) from exc
    targets = []
    for row in rows:
        if row.get("up"):
            host, _, port = str(row["address"]).rpartition(":")
            targets.append((host.strip("[]"), int(port)))
    return targets


def request_pdu(function_code: int, address: int, quantity: int) -> bytes:
    """The request a master sends for one entry of the mix."""
    if function_code in READS:
        return struct.pack(">BHH", function_code, address, quantity)
    if function_code == 5:
        return struct.pack(">BHH", 5, address, 0xFF00)
    if function_code == 6:
        return struct.pack(">BHH", 6, address, quantity)
    if function_code == 15:
        data = bytes(0x55 for _ in range((quantity + 7) // 8))
        return struct.pack(">BHHB", 15, address, quantity, len(data)) + data
    values = struct.pack(f">{quantity}H", *range(quantity))
    return struct.pack(">BHHB", 16, address, quantity, len(values)) + values


def parse_mix(text: str, address: int, quantity: int) -> tuple[bytes, ...]:
    """`3:70,4:20,16:10` -> a cycle of request PDUs in those proportions, interleaved."""
    weights: dict[int, int] = {}
    for part in text.split(","):
        fc_text, _, weight_text = part.strip().partition(":")
        try:
            fc, weight = int(fc_text), int(weight_text or 1)
        except ValueError:
            raise ConfigError(f"--mix {text!r}: expected FC:WEIGHT,... e.g. 3:80,16:20") from None
        if fc not in (*READS, 5, 6, 15, 16) or weight < 0:
            raise ConfigError(f"--mix: function code {fc} is not one of 1-6, 15, 16")
        weights[fc] = weights.get(fc, 0) + weight
    if not 1 <= quantity <= 65535 or not 0 <= address <= 65535:
        raise ConfigError("--quantity must be 1-65535 and --address 0-65535")
    if (16 in weights and quantity > 123) or (15 in weights and quantity > 1968):
        raise ConfigError("--quantity is too large for one write request (FC 16: 123, FC 15: 1968)")
    total = sum(weights.values())
    if not 0 < total <= 10_000:
        raise ConfigError(f"--mix {text!r}: weights must add up to 1-10000")
    divisor = math.gcd(*weights.values())
    # Smooth weighted round-robin: each function code spread evenly through the cycle.
    credit = dict.fromkeys(weights, 0)
    cycle = []
    for _ in range(total // divisor):
        for fc in credit:
            credit[fc] += weights[fc]
        chosen = max(credit, key=lambda fc: credit[fc])
        credit[chosen] -= total
        cycle.append(request_pdu(chosen, address, quantity))
    return tuple(cycle)


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchOptions:
    connections: int = 50
    rate: float | None = None
    depth: int = 1
    duration_s: float = 10.0
    max_requests: int = 10_000_000
    timeout_s: float = 1.0
    unit: int = 1
    processes: int = 1


def split(
    targets: list[tuple[str, int]], pdus: tuple[bytes, ...], options: BenchOptions
) -> list[LoadSpec]:
    """Spread C connections evenly over the servers, then over the processes."""
    c, p = options.connections, options.processes
    per_connection = [targets[i * len(targets) // c] for i in range(c)]
    return [
        LoadSpec(
            targets=tuple(per_connection[share::p]),
            pdus=pdus,
            unit=options.unit,
            depth=options.depth,
            rate=None if options.rate is None else options.rate / p,
            duration_s=options.duration_s,
            max_requests=options.max_requests // p + (share < options.max_requests % p),
            timeout_s=options.timeout_s,
        )
        for share in range(p)
    ]


def run_bench(
    specs: list[LoadSpec], on_progress: Callable[[Snapshot], None] | None = None
) -> list[LoadResult]:
    """Run the shares: in this process when there is one, else one spawned process each."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
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
        "[bold red]saturated: these figures measure the generator[/]"
        if gen["saturated"]
        else "not saturated"
    )
    table.add_row(
        "generator",
        f"{gen['processes']} process(es), busy {busy} of a core, "
        f"{gen['cpu_per_request_us']} us CPU per request; {verdict}",
    )
    return table


def live_view(snapshot: Snapshot, duration_s: float) -> str:
    rate = snapshot.responses / snapshot.elapsed_s if snapshot.elapsed_s > 0 else 0.0
    return (
        f"[bold]farm bench[/] {min(snapshot.elapsed_s, duration_s):5.1f} / {duration_s:g} s  "
        f"{snapshot.responses:,} answered  {rate:,.0f}/s  "
        f"exceptions {snapshot.exceptions}  timeouts {snapshot.timeouts}  "
        f"errors {snapshot.errors}"
    )


@click.command()
@click.option("--target", "-t", "target_texts", multiple=True, help="HOST:PORT[-PORT]; repeatable.")
@click.option("--api-port", default=9502, show_default=True, help="Farm API port (no --target).")
@click.option("--api-host", default="127.0.0.1", show_default=True, help="Farm API address.")
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
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def bench(
    target_texts: tuple[str, ...],
    api_port: int,
    api_host: str,
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
    as_json: bool,
) -> None:
    """Load a farm (or any Modbus TCP servers) like a SCADA master, and report."""
    err = Console(stderr=True)
    try:
        options = _options(
            connections, rate, depth, duration, max_requests, timeout, unit, processes
        )
        pdus = parse_mix(mix, address, quantity)
        targets = parse_targets(target_texts) if target_texts else farm_targets(api_host, api_port)
        if not targets:
            raise FarmError("no server to load: the farm reports none up")
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
        err.print(f"[bold red]farm: error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        Console().print(render(report))


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
