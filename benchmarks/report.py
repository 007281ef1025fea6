"""benchmarks/README.md from the suite's figures: tables, ratios, and targets met or missed."""

from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

FARM2, FARM1 = "farm, 2 workers", "farm, 1 worker"
PYMODBUS, PYMODBUS_UV = "pymodbus, 1 process, asyncio", "pymodbus, 1 process, uvloop"
CEILING = "minimal uvloop responder"
NATIVE = "libmodbus C server, 1 process"  # benchmarks.cserver.NAME


def one_line(row: dict[str, Any]) -> str:
    lat = row["latency_s"]
    return (
        f"{row['server']:<30} C={row['connections']:<4} depth={row['depth']}  "
        f"{row['requests_per_s']:>9,.0f}/s  p50 {lat['p50'] * 1e3:.2f} p99 {lat['p99'] * 1e3:.2f} "
        f"ms  server {_us(row['server_cpu_per_request_us'])}/req  "
        f"generator busy {max(row['generator']['busy'], default=0):.0%}  "
        f"others {row['others_cores']:.2f} cores  errors {_errors(row)}"
    )


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} us"


def _errors(row: dict[str, Any]) -> int:
    """Timeouts, connection errors, requests lost with a connection, unexpected answers,
    and (open loop) requests shed because the server was behind."""
    keys = ("timeouts", "connection_errors", "lost", "unexpected", "shed")
    return sum(int(row[key]) for key in keys)


def _find(rows: list[dict[str, Any]], server: str, connections: int) -> dict[str, Any]:
    return next(r for r in rows if r["server"] == server and r["connections"] == connections)


def _runs(row: dict[str, Any]) -> str:
    return " / ".join(f"{rate / 1000:.1f}k" for rate in row.get("all_requests_per_s", ()))


def _get(row: dict[str, Any] | None, key: str) -> float | None:
    return None if row is None else row[key]


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def _load_table(rows: list[dict[str, Any]], reference: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| server | C x depth | requests/s | runs | vs pymodbus | of ceiling | p50 | p90 | p99 "
        "| max | server CPU/request | vs ceiling | vs C | generator busy | others | errors |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        c, lat = row["connections"], row["latency_s"]
        pym = _find(reference, PYMODBUS, c) if not row["rate"] else None
        top = next((r for r in reference if r["server"] == CEILING and r["connections"] == c), None)
        top = top if not row["rate"] else None
        native = next(
            (r for r in reference if r["server"] == NATIVE and r["connections"] == c), None
        )
        native = native if not row["rate"] else None
        cpu = row["server_cpu_per_request_us"]
        busy = ", ".join(f"{b:.0%}" for b in row["generator"]["busy"])
        saturated = " (saturated)" if row["generator"]["saturated"] else ""
        load = f"{c} x {row['depth']}"
        if row["rate"]:
            load += f" at {row['rate']:,.0f}/s"
        lines.append(
            f"| {row['server']} | {load} | {row['requests_per_s']:,.0f} | {_runs(row)} "
            f"| {_ratio(row['requests_per_s'], _get(pym, 'requests_per_s'))} "
            f"| {_ratio(row['requests_per_s'], _get(top, 'requests_per_s'))} "
            + "".join(f"| {lat[k] * 1e3:.2f} ms " for k in ("p50", "p90", "p99", "max"))
            + f"| {_us(cpu)} | {_ratio(cpu, _get(top, 'server_cpu_per_request_us'))} "
            f"| {_ratio(cpu, _get(native, 'server_cpu_per_request_us'))} "
            f"| {busy}{saturated} | {row['others_cores']:.2f} | {_errors(row)} |"
        )
    return lines


def _machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("pymodbus", "uvloop", "modbus-farm")
    )
    return (
        f"{os.cpu_count()} x {model}, Linux {platform.release()}, "
        f"Python {platform.python_version()}; {versions}"
    )


def _targets(figures: dict[str, Any]) -> list[str]:
    rows = figures["throughput"]
    farm, pym, top = (_find(rows, s, 500) for s in (FARM2, PYMODBUS, CEILING))
    paced = _find(figures["paced"], FARM2, 500)
    startup = {r["servers"]: r for r in figures["startup"]}
    checks: list[tuple[str, str, bool | None]] = [
        (
            "farm throughput >= 4x one-process pymodbus (500 servers, C = 500)",
            _ratio(farm["requests_per_s"], pym["requests_per_s"]),
            farm["requests_per_s"] >= 4 * pym["requests_per_s"],
        ),
        (
            "farm server CPU per request <= 1.5x the minimal responder's (C = 500)",
            _ratio(farm["server_cpu_per_request_us"], top["server_cpu_per_request_us"]),
            farm["server_cpu_per_request_us"] <= 1.5 * top["server_cpu_per_request_us"],
        ),
        (
            # A closed loop at C = 500 saturates the generator by design (it sends as fast as
            # answers come), so the run this target asks for, a generator with room to spare,
            # is the open loop of section 5 at C = 500; the closed loop's figure is shown too.
            "farm p99 <= 10 ms at C = 500, generator not saturated",
            f"{paced['latency_s']['p99'] * 1e3:.2f} ms open loop at {paced['rate']:,.0f}/s, "
            f"generator {max(paced['generator']['busy']):.0%} busy (section 5); "
            f"{farm['latency_s']['p99'] * 1e3:.2f} ms closed loop, generator "
            + ("saturated" if farm["generator"]["saturated"] else "not saturated"),
            any(
                run["latency_s"]["p99"] <= 0.010 and not run["generator"]["saturated"]
                for run in (farm, paced)
            ),
        ),
    ]
    for c in (50, 500):
        ours, theirs = _find(rows, FARM2, c), _find(rows, NATIVE, c)
        cpu = ours["server_cpu_per_request_us"], theirs["server_cpu_per_request_us"]
        checks.append(
            (
                f"farm CPU per request <= 1.0x the libmodbus C server's (C = {c})",
                _ratio(*cpu) + f" (median of rounds {_median_round(figures, c, 'cpu')})",
                cpu[0] <= cpu[1],
            )
        )
    p99 = farm["latency_s"]["p99"], _find(rows, NATIVE, 500)["latency_s"]["p99"]
    checks.append(
        (
            "farm p99 <= 1.5x the libmodbus C server's (C = 500)",
            _ratio(*p99) + f" (median of rounds {_median_round(figures, 500, 'p99')})",
            p99[0] <= 1.5 * p99[1],
        )
    )
    # The first limits are the project's standing ones; issue 24 asks for the tighter ones.
    for count, limits in ((500, (2.0, 0.5)), (10000, (10.0, 1.5))):
        if count in startup:
            ready = startup[count]["ready_s"]
            runs = len(startup[count].get("ready_runs", ()))
            shown = f"{ready:.2f} s" + (f" (median of {runs} starts)" if runs > 1 else "")
            checks += [
                (f"{count:,} servers ready <= {limit:g} s", shown, ready <= limit)
                for limit in limits
            ]
    biggest = startup[max(startup)]
    kib: tuple[tuple[str, tuple[int, ...]], ...] = (("rss", (25, 14)), ("pss", (25,)))
    for kind, bounds in kib:
        per = biggest[kind] / biggest["servers"] / 1024
        checks += [
            (
                f"<= {bound} KiB {kind.upper()} per idle server at {biggest['servers']:,} servers",
                f"{per:.1f} KiB",
                per <= bound,
            )
            for bound in bounds
        ]
    lines = ["| target | measured | met |", "|---|---|---|"]
    lines += [f"| {what} | {value} | {'yes' if ok else '**no**'} |" for what, value, ok in checks]
    return lines


def _round_ratios(figures: dict[str, Any], c: int) -> list[tuple[float, float, float]]:
    """Per round at concurrency c: the farm's CPU per request and p99 over the C server's,
    and its requests/s over one-process pymodbus's, each pair measured minutes apart."""
    ratios = []
    for rows in figures.get("throughput_rounds", ()):
        farm, native, pym = (_find(rows, s, c) for s in (FARM2, NATIVE, PYMODBUS))
        ratios.append(
            (
                farm["server_cpu_per_request_us"] / native["server_cpu_per_request_us"],
                farm["latency_s"]["p99"] / native["latency_s"]["p99"],
                farm["requests_per_s"] / pym["requests_per_s"],
            )
        )
    return ratios


def _median_round(figures: dict[str, Any], c: int, what: str) -> str:
    values = sorted(r[0 if what == "cpu" else 1] for r in _round_ratios(figures, c))
    return "-" if not values else f"{values[len(values) // 2]:.2f}x"


def _rounds_table(figures: dict[str, Any]) -> list[str]:
    lines = [
        "| C | round | farm CPU/request vs C | farm p99 vs C | farm vs pymodbus (req/s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for c in (50, 500):
        for number, (cpu, p99, speed) in enumerate(_round_ratios(figures, c), 1):
            lines.append(f"| {c} | {number} | {cpu:.2f}x | {p99:.2f}x | {speed:.2f}x |")
    return lines


def _startup_table(figures: dict[str, Any]) -> list[str]:
    lines = [
        "| servers | ready | RSS total | RSS per server | PSS total | PSS per server |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in figures["startup"]:
        n = row["servers"]
        runs = row.get("ready_runs", [row["ready_s"]])
        spread = f" ({min(runs):.2f}-{max(runs):.2f}, {len(runs)} starts)" if len(runs) > 1 else ""
        lines.append(
            f"| {n:,} | {row['ready_s']:.2f} s{spread} | {row['rss'] / 2**20:.0f} MiB "
            f"| {row['rss'] / n / 1024:.1f} KiB | {row['pss'] / 2**20:.0f} MiB "
            f"| {row['pss'] / n / 1024:.1f} KiB |"
        )
    lines += ["", "Idle memory of the 500-server sets used for the load runs:", ""]
    lines += ["| server | RSS per server | PSS per server |", "|---|---:|---:|"]
    for name, (rss, pss) in figures["idle_memory_500"].items():
        lines.append(f"| {name} | {rss / 500 / 1024:.1f} KiB | {pss / 500 / 1024:.1f} KiB |")
    return lines


def readme(
    figures: dict[str, Any], command: str, duration_s: float, repeat: int, elapsed_s: float
) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = figures["throughput"]
    return "\n".join(
        [
            "# Benchmarks",
            "",
            f"Written by `{command}` on {when} ({elapsed_s:.0f} s); do not edit by hand.",
            "",
            f"- Machine: {_machine()}.",
            f"- Load: `farm bench`'s engine (farm.bench.loadgen), closed loop, FC 3 x 10 registers "
            f"of unit 1, {duration_s:g} s per run after a 1 s warm-up, on 127.0.0.1. Every "
            "server and the generator share the same cores.",
            f"- Each case ran {repeat} time(s), in rounds over all cases; a row shows the least "
            "disturbed run (closed loop: the fastest; open loop: the lowest p99) and `runs` "
            "the requests/s of every run. `others` is the CPU that processes outside the "
            "benchmark took during the chosen run (this machine is shared), in cores.",
            "- Server CPU/request: utime + stime of every server process (the farm's master "
            "and workers) around the run, over the requests answered. `of ceiling` and "
            "`vs ceiling` compare with the minimal uvloop responder in the same run.",
            "- A generator process busier than 90 % of a core is marked saturated: that row "
            "measures the generator as much as the server.",
            "",
            "## Targets",
            "",
            *_targets(figures),
            "",
            "## 1. Throughput and latency, 500 servers",
            "",
            *_load_table(rows, rows),
            "",
            "Every round's ratios, each pair measured in the same round (the rows above "
            "are the best of the rounds; these show the noise):",
            "",
            *_rounds_table(figures),
            "",
            "## 2. Scaling: 1 worker against 2",
            "",
            *_load_table(figures["scaling"] + [r for r in rows if r["server"] == FARM2], rows),
            "",
            "## 3. Start-up and memory (farm, 2 workers)",
            "",
            *_startup_table(figures),
            "",
            "## 4. Pipelined requests (depth 8)",
            "",
            "pymodbus's server handles one frame per read and drops the others: its `errors` "
            "are the pipelined requests it never answered (they time out).",
            "",
            *_load_table(figures["pipelined"], rows),
            "",
            "## 5. Latency at a fixed rate (open loop)",
            "",
            "Latency counts from each request's scheduled time, so a server that falls behind "
            "shows it; `errors` includes requests shed because 8 were already in flight.",
            "",
            *_load_table(figures["paced"], rows),
            "",
            *_notes(),
        ]
    )


def _notes() -> list[str]:
    """The hand-written analysis beside this file, kept when the figures are rewritten."""
    path = Path(__file__).with_name("NOTES.md")
    if not path.exists():
        return []
    return ["## Notes (written by hand, in benchmarks/NOTES.md)", "", path.read_text().strip(), ""]
