"""`farm up`: start a farm in this process and serve it until Ctrl-C, SIGTERM or `farm down`.

    farm up [FILE] [--count N] [--workers W] [--host H] [--port-base P] [--api-host H]
            [--api-port A] [--api-token T] [--generate-api-token] [--api-insecure]
            [--api-allow-host NAME] [--allow-outside PATH] [--metrics-port M]
            [--metrics-host H] [--transport T [--certs DIR]] [--max-connections N]
            [--connection-policy P] [--idle-timeout S] [--frame-timeout S] [--journal-size N]
            [--state FILE]
            [--state-interval S] [--view-stall-timeout S]
            [--log-level L] [--log-format text|json] [--log-file FILE]

The front of the master (farm.master.run.serve): builds the plan (farm.cli.validate), restores
a scaled fleet's size from --state, finds the scenario, then runs the master on uvloop with a
progress bar on stderr and the ready summary on stdout. Registered on the `farm` group by
farm.cli.app. Every error a user can meet is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import uvloop
from rich.text import Text

from farm.cli.net import bind_privilege_problem
from farm.cli.sharding import ShardChoice, shard_options
from farm.cli.validate import allow_outside_option, make_plan
from farm.client.options import (
    api_host_option,
    api_port_option,
    api_token_option,
    generate_token_option,
    token_or_generated,
)
from farm.config.plan import TRANSPORTS, Plan, Transport
from farm.config.shards import FleetSlice
from farm.config.templates import ConnectionPolicy
from farm.errors import ConfigError, FarmError
from farm.files import read_structured
from farm.ipc.journal import DEFAULT_WRITES, MAX_WRITES
from farm.master import logs
from farm.master.fleetview.stream import STALL_S
from farm.master.options import MasterOptions
from farm.master.run import ReadySummary, serve
from farm.master.state.restore import sized_plan
from farm.master.state.statefile import fleet_digest
from farm.master.supervision.supervisor import SupervisorOptions
from farm.output import console, exit_with
from farm.words import counted

if TYPE_CHECKING:
    from rich.progress import Progress

# Markup and emoji codes off: what these print carries user text (names, addresses, file
# names) that may hold square brackets or `:fire:`; styled words are Text spans instead.
out = console()
err = console(stderr=True)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--count", type=int, default=None, help="Devices to serve [default: 100; with FILE: scale to]."
)
@click.option(
    "--workers", type=int, default=None, help="Worker processes [default: CPUs it may use]."
)
@click.option("--host", default=None, help="Address devices listen on [default: 127.0.0.1].")
@click.option(
    "--port-base", type=int, default=None, help="Port of the first device [default: 5020]."
)
@api_port_option
@api_host_option
@api_token_option
@generate_token_option
@click.option(
    "--api-insecure",
    is_flag=True,
    help="Serve the API on a non-loopback --api-host without a token (anyone reaching it can "
    "change values and stop the farm).",
)
@click.option(
    "--api-allow-host",
    "api_allow_hosts",
    multiple=True,
    metavar="NAME",
    envvar="FARM_API_ALLOW_HOST",
    help="A Host name the API and /metrics answer to besides their own address (repeatable; "
    "'*': any). Not needed with a token on a non-loopback --api-host [env: FARM_API_ALLOW_HOST].",
)
@click.option("--metrics-port", type=int, default=None, help="Also serve /metrics on this port.")
@click.option(
    "--metrics-host", default=None, help="Address for --metrics-port [default: api host]."
)
@click.option(
    "--transport",
    type=click.Choice(TRANSPORTS),
    default=None,
    help="How devices frame Modbus [default: tcp]; with FILE, the fleets say.",
)
@click.option(
    "--certs",
    type=click.Path(file_okay=False),
    default=None,
    help="For --transport tls: a `farm certs` directory (server.pem, server.key, ca.pem).",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=None,
    help="Connections one device accepts [default: the template's; built-in: 64].",
)
@click.option(
    "--connection-policy",
    type=click.Choice([p.value for p in ConnectionPolicy]),
    default=None,
    help="Past --max-connections: refuse the newcomer, or close the oldest [default: refuse].",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Close a connection silent this many seconds; 0: never [default: 300].",
)
@click.option(
    "--frame-timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Close a connection stuck this many seconds on half a frame; 0: never [default: 10].",
)
@click.option(
    "--journal-size",
    type=int,  # checked in the body: a bad value is one line, not click's usage screen
    default=DEFAULT_WRITES,
    show_default=True,
    help="Client writes each server's journal keeps, the newest (`farm writes`).",
)
@click.option(
    "--state",
    "state_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Restore every bank from FILE at start; save to it every --state-interval and at stop.",
)
@click.option(
    "--state-interval",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds between saves of --state.",
)
@click.option(
    "--view-stall-timeout",
    type=click.FloatRange(min=0.1),
    default=STALL_S,
    show_default=True,
    help="Close a fleet view stream whose bytes have not drained for this many seconds "
    "(a page that stopped reading).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="debug: also every connection opened and closed, with the peer's address.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object a line (time, level, worker, server, event, message, fields).",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append the log to FILE instead of stderr.",
)
@click.option(
    "--scenario",
    "scenario_file",
    default=None,
    help="Play this file's scenario [default: FILE's scenario: section, if any].",
)
@shard_options(need_index=True)
@allow_outside_option
def up(
    file: str | None,
    count: int | None,
    workers: int | None,
    host: str | None,
    port_base: int | None,
    transport: Transport | None,
    certs: str | None,
    api_port: int,
    api_host: str,
    api_token: str | None,
    generate_api_token: bool,
    api_insecure: bool,
    api_allow_hosts: tuple[str, ...],
    metrics_port: int | None,
    metrics_host: str | None,
    max_connections: int | None,
    connection_policy: str | None,
    idle_timeout: float | None,
    frame_timeout: float | None,
    journal_size: int,
    state_file: Path | None,
    state_interval: float,
    view_stall_timeout: float,
    log_level: str,
    log_format: logs.LogFormat,
    log_file: str | None,
    scenario_file: str | None,
    shard: ShardChoice | None,
    allow_outside: tuple[Path, ...],
) -> None:
    """Start the farm (from FILE, or COUNT default devices) until Ctrl-C or SIGTERM.

    With --shard-index I --shard-count N, serve only shard I of the fleet: N farms started
    the same way with I = 0..N-1 serve it exactly once.
    """
    # JSON lines on stderr stay JSON lines: no progress bar there, no closing words.
    plain = log_format == "text" or log_file is not None
    try:
        try:
            logs.configure(log_level, log_format, log_file, err)
        except OSError as exc:
            raise ConfigError(f"--log-file {log_file}: {exc.strerror or exc}") from exc
        if not 1 <= journal_size <= MAX_WRITES:
            raise ConfigError(
                f"--journal-size {journal_size}: a journal keeps 1 to {MAX_WRITES} writes"
            )
        connections: dict[str, Any] = {
            name: value
            for name, value in (
                ("max", max_connections),
                ("policy", connection_policy and ConnectionPolicy(connection_policy)),
                ("idle_timeout_s", idle_timeout),
                ("frame_timeout_s", frame_timeout),
            )
            if value is not None
        }
        plan = make_plan(
            file, count, host, port_base, workers, transport, certs, shard, connections,
            allowed=allow_outside,
        )  # fmt: skip
        origin = fleet_digest(plan)
        if state_file is not None:  # a fleet scaled while it ran comes back at its size
            plan = sized_plan(
                state_file,
                plan,
                lambda counts: make_plan(
                    file, count, host, port_base, workers, transport, certs, shard, connections,
                    counts, allow_outside,
                ),
            )  # fmt: skip
        timeline = None
        if scenario_file is not None or (file is not None and _has_scenario(file)):
            # Here, not at the top: the scenario model loads pydantic and numpy, which a farm
            # without a scenario loads after its workers are started, while they boot.
            from farm.cli.scenario import scenario_for_up

            timeline = scenario_for_up(file, scenario_file, plan)
        problem = bind_privilege_problem(spec.port for spec in plan.servers())
        if problem is not None:
            raise ConfigError(problem)
        api_token, generated = token_or_generated(api_token, generate_api_token)
        if generated:  # the one place it is shown: a client needs it for mutating calls
            line = f"farm: API token for this run (none was given): {api_token}"
            out.print(line, highlight=False)
        options = MasterOptions(
            scenario=timeline,
            api_host=api_host,
            api_port=api_port,
            api_token=api_token,
            api_insecure=api_insecure,
            api_allow_hosts=api_allow_hosts,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            state_file=state_file,
            state_origin=origin,
            state_interval_s=state_interval,
            view_stall_s=view_stall_timeout,
            supervisor=SupervisorOptions(
                log_level=logging.getLevelName(log_level.upper()), journal_writes=journal_size
            ),
        )
        _run_up(
            plan, lambda progress, ready: serve(plan, options, progress, ready), show_progress=plain
        )
    except FarmError as error:
        logs.drain()  # the log's lines before the error's
        exit_with(error)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        logs.drain()
    # After a hangup the terminal is gone and writing to it fails (EIO): the stop was clean.
    if plain:
        with contextlib.suppress(OSError):
            err.print("farm stopped")


def _has_scenario(file: str) -> bool:
    """Whether the config FILE (read already: a bad one failed before this) has a scenario."""
    data = read_structured(Path(file))
    return isinstance(data, dict) and "scenario" in data


ProgressCallback = Callable[[int, int], None]
ReadyCallback = Callable[[ReadySummary], None]


def _run_up(
    plan: Plan,
    make: Callable[[ProgressCallback, ReadyCallback], Coroutine[Any, Any, None]],
    show_progress: bool = True,
) -> None:
    # On a terminal only: anywhere else (a pipe, a file, a service's log) Rich draws nothing
    # of it but blank lines around the log's, and its refresh thread and its import (0.01 s)
    # would be all a start got from it.
    progress = _progress(plan.servers_total) if show_progress and err.is_terminal else None

    def on_progress(up: int, total: int) -> None:
        if progress is not None:
            progress.update(progress.task_ids[0], completed=up)

    def on_ready(summary: ReadySummary) -> None:
        if progress is not None:
            progress.stop()
        age = process_age()
        if age is not None:  # what the user waited: the interpreter and the CLI included
            summary = dataclasses.replace(summary, seconds=age)
        _print_summary(summary, plan.fleet_slice)

    with (
        progress or contextlib.nullcontext(),
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        runner.run(make(on_progress, on_ready))


def _progress(servers: int) -> Progress:
    """The bar a terminal shows while the servers start (gone once they are up)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("starting servers"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    progress.add_task("servers", total=servers)
    return progress


def process_age() -> float | None:
    """Seconds since this process started: its start in /proc/self/stat (clock ticks since
    boot) against the boot clock now. None where /proc cannot tell."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            ticks = int(stat.read().rsplit(b")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _print_summary(summary: ReadySummary, part: FleetSlice) -> None:
    out.print(
        Text.assemble(
            ("farm ready", "bold green"),
            f" in {summary.seconds:.2f} s: {summary.servers_ready} of "
            f"{counted(summary.servers, 'server')} up",
        ),
        highlight=False,
    )
    for number, line in enumerate(summary.addresses):
        out.print(f"  {'servers' if number == 0 else '':7}  {line}", highlight=False)
    if not part.whole:
        out.print(
            f"  shard    {part.index} of {part.count}: servers {part.start}-{part.stop - 1} "
            f"of a fleet of {part.total}",
            highlight=False,
        )
    pids = ", ".join(str(pid) for pid in summary.pids)
    out.print(f"  workers  {summary.workers} (pids {pids})", highlight=False)
    out.print(f"  api      {summary.api_url}", highlight=False)
    out.print(f"  metrics  {summary.metrics_url}", highlight=False)
    for line in summary.failed:
        out.print(Text.assemble("  ", ("failed", "red"), f"   {line}"), highlight=False)
    out.print("Ctrl-C or `farm down` stops the farm.", highlight=False)
