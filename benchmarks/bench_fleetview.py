"""What the fleet view's update stream costs the master (issue 13's budget: under 5 % of one
core at 10,000 servers).

    python3 -m benchmarks.bench_fleetview [--servers 10000] [--clients 5] [--seconds 10]
                                          [--rounds 3] [--rate 5000] [--connections 1000]

1. On a real farm of --servers servers (2 workers, two fleets, each server at its own
   127.77.x.y / 127.78.x.y address on one port), under a steady `farm bench` load of
   --rate requests/s over --connections connections for the whole run: the master's CPU
   (utime + stime from /proc) over --seconds with no page open, then with --clients pages'
   event streams open and read (in this process), alternating for --rounds rounds. The
   difference is what the stream costs; one producer serves every page, so it should hardly
   depend on --clients. Faults of three kinds are on about 1 server in 10 throughout (a
   delay on 10 % of one fleet, an exception on 10 % of the other, a rare drop on 2 % of
   all, so some cells show "+"), so the stream and the page carry and draw their letters.
   Then, still under load, the page itself in Debian's headless Chromium (if installed):
   time to draw every cell, tasks over 50 ms, a filter's time, "large cells" on and off.
2. The worst case, in process: FleetView.tick() over counters of --servers servers where
   every server's rate bucket changes at every tick (so every cell is in every delta): CPU
   per tick, and the event's size, at the view's two ticks a second; then the same with
   every server's fault kinds changing at every tick as well (every mask in every delta).

Prints both, with the share of one core; there is no pass/fail here.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import numpy as np
import yaml

from benchmarks import procs
from benchmarks.procs import HOST, Server
from farm.client import FarmClient
from farm.config.plan import ServerRequest, build_plan
from farm.config.templates import default_template
from farm.ipc.stats import HEADER_SLOTS, REQUEST_SLOT, SERVER_SLOTS, ShardCounters
from farm.master.fleetview.view import FleetView, ViewSources
from farm.master.supervision.supervisor import Supervisor


def farm_on_addresses(servers: int, folder: Path) -> Server:
    """A farm of `servers` default devices in two fleets, each device at its own loopback
    address (127.77.x.y) on one port: no range of 10,000 free ports needed on a machine
    where other programs hold ports here and there."""
    port = procs.free_port_range(1)
    half = servers // 2
    fleets = [
        {"name": name, "template": "default", "count": count, "name_pattern": name + "-{i:05d}",
         "addressing": {"ip_start": start, "port": port}}
        for name, count, start in (
            ("meters", half, "127.77.0.1"), ("plcs", servers - half, "127.78.0.1")
        )
    ]  # fmt: skip
    config = folder / "fleet.yaml"
    config.write_text(yaml.safe_dump({"fleets": fleets}))
    api = procs.free_port_range(1)
    command = [
        sys.executable, "-m", "farm", "up", str(config), "--workers", "2",
        "--api-port", str(api), "--log-level", "warning",
    ]  # fmt: skip
    return Server("farm, 2 workers", command, servers, port, api)


async def read_streams(api_port: int, clients: int, seconds: float) -> tuple[int, int, float]:
    """Open `clients` event streams and read them for `seconds`: events and bytes read, and
    the farm's requests/s as the last tick reported it (the load, seen from the master)."""
    url = f"http://{HOST}:{api_port}/api/v1/view/stream"
    totals = [0, 0]
    last = [b"{}"]

    async def client(session: aiohttp.ClientSession) -> None:
        async with session.get(url) as response:
            async for line in response.content:
                totals[1] += len(line)
                totals[0] += line.startswith(b"event:")
                if line.startswith(b"data:"):
                    last[0] = line[5:]

    timeout = aiohttp.ClientTimeout(total=None, sock_read=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = [asyncio.create_task(client(session)) for _ in range(clients)]
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    load = json.loads(last[0]).get("totals", {}).get("requests_per_s", 0.0)
    return totals[0], totals[1], float(load)


def master_cpu(server: Server) -> float:
    assert server.process is not None
    return procs.cpu_seconds([server.process.pid])


def measure_farm(args: argparse.Namespace) -> None:
    folder = tempfile.TemporaryDirectory()
    server = procs.start(functools.partial(farm_on_addresses, args.servers, Path(folder.name)))
    load = None
    try:
        duration = args.rounds * 2 * args.seconds + args.seconds + 30  # and the page's turn
        assert server.api_port is not None
        load = subprocess.Popen(
            [
                sys.executable, "-m", "farm", "bench", "--api-port", str(server.api_port),
                "-c", str(args.connections), "-r", str(args.rate), "--duration", str(duration),
                "--json",
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(3)  # the load's connections open
        faulted = put_faults(server.api_port)
        print(f"faults of 3 kinds on {faulted} of {args.servers} servers throughout")
        idle, open_, events, received, answered = [], [], 0, 0, 0.0
        for _ in range(args.rounds):
            before = master_cpu(server)
            time.sleep(args.seconds)
            idle.append((master_cpu(server) - before) / args.seconds)
            before = master_cpu(server)
            got = asyncio.run(read_streams(server.api_port, args.clients, args.seconds))
            open_.append((master_cpu(server) - before) / args.seconds)
            events, received, answered = events + got[0], received + got[1], got[2]
        report_farm(args, idle, open_, events, received, answered)
        measure_page(server.api_port, args.servers, args.seconds)
    finally:
        if load is not None:
            load.terminate()
            load.wait(10)
        server.stop()
        folder.cleanup()


def put_faults(api_port: int) -> int:
    """A delay, an exception and a rare drop, on seeded fractions: the servers they are on."""
    api = FarmClient.at(HOST, api_port)
    made = [
        api.fault("delay", {"fleet": "meters", "fraction": 0.1, "seed": 1}, ms=1),
        api.fault("exception", {"fleet": "plcs", "fraction": 0.1, "seed": 2}, code=6,
                  probability=0.01),
        api.fault("drop", {"glob": "*", "fraction": 0.02, "seed": 3}, probability=0.001),
    ]  # fmt: skip
    return len({name for fault in made for name in fault.servers})


def report_farm(
    args: argparse.Namespace,
    idle: list[float],
    open_: list[float],
    events: int,
    received: int,
    answered: float,
) -> None:
    seconds = args.rounds * args.seconds
    cost = statistics.median(open_) - statistics.median(idle)
    print(
        f"farm of {args.servers} servers, 2 workers, under {args.rate:.0f} requests/s "
        f"over {args.connections} connections; {args.rounds} rounds of {args.seconds:.0f} s"
    )
    print(f"  the farm answered {answered:,.0f} requests/s (the stream's last totals)")
    print(f"  master CPU, no page open:      {_rounds(idle)}")
    print(f"  master CPU, {args.clients} pages open:     {_rounds(open_)}")
    print(f"  the stream costs the master:   {cost * 100:5.2f} % of one core (medians)")
    print(
        f"  each page read {events / seconds / args.clients:.1f} events/s, "
        f"{received / seconds / args.clients / 1024:.1f} KiB/s"
    )


# Debian's chromium on a machine with no display and no network (as in the browser test).
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# In the page: how long a filter takes to show, from the input to the frame after it.
FILTER_JS = """async (pattern) => {
    const input = document.getElementById('f-name');
    const began = performance.now();
    input.value = pattern;
    input.dispatchEvent(new Event('input'));
    await new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));
    return [performance.now() - began, Number(document.getElementById('grid').dataset.cells)];
}"""
# In the page: how long "large cells" takes to show, and how many cells show a fault's letter.
LARGE_JS = """async () => {
    const began = performance.now();
    document.getElementById('cells-toggle').click();
    await new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));
    return performance.now() - began;
}"""
LONG_TASKS_JS = """() => {
    window.longTasks = [];
    new PerformanceObserver((list) => {
        for (const entry of list.getEntries()) longTasks.push(entry.duration);
    }).observe({entryTypes: ['longtask']});
}"""


def measure_page(api_port: int, servers: int, seconds: float) -> None:
    """The page in headless Chromium on the loaded farm: time to draw every cell, tasks over
    50 ms while deltas arrive, time for a filter to show."""
    chromium = shutil.which("chromium")
    if chromium is None:
        print("  the page in Chromium: not measured (chromium is not installed)")
        return
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            profile, executable_path=chromium, args=CHROMIUM_FLAGS, headless=True,
            viewport={"width": 1400, "height": 900},
        )  # fmt: skip
        try:
            page = context.new_page()
            began = time.monotonic()
            page.goto(f"http://{HOST}:{api_port}/")
            cells = "Number(document.getElementById('grid').dataset.cells)"
            procs.wait_for(lambda: page.evaluate(cells) == servers, 60, "every cell drawn")
            drawn = time.monotonic() - began
            page.evaluate(LONG_TASKS_JS)
            time.sleep(seconds)
            long_tasks = page.evaluate("longTasks")
            filtered_ms, shown = page.evaluate(FILTER_JS, "meters-000*")
            restored_ms, _ = page.evaluate(FILTER_JS, "")
            marked = page.evaluate(
                "(n) => Array.from({length: n}, (_, i) => i).filter((i) => {"
                " const name = (i < n / 2 ? 'meters-' + String(i).padStart(5, '0')"
                " : 'plcs-' + String(i - Math.floor(n / 2)).padStart(5, '0'));"
                " return window.farmView.markOf(name); }).length",
                servers,
            )
            large_ms = page.evaluate(LARGE_JS)
            small_ms = page.evaluate(LARGE_JS)
        finally:
            context.close()
    print(f"  the page in Chromium: {servers} cells drawn {drawn:.2f} s after loading;")
    print(
        f"  {len(long_tasks)} tasks over 50 ms in {seconds:.0f} s of deltas "
        f"(longest {max(long_tasks, default=0):.0f} ms); a name filter showed {shown} cells "
        f"in {filtered_ms:.0f} ms, all {servers} again in {restored_ms:.0f} ms"
    )
    print(
        f"  {marked} cells showed a fault kind's letter; large cells (14 px) drawn in "
        f"{large_ms:.0f} ms, small (6 px) again in {small_ms:.0f} ms"
    )


def _rounds(values: list[float]) -> str:
    shares = " / ".join(f"{v * 100:.2f}" for v in values)
    return f"{statistics.median(values) * 100:5.2f} % of one core (rounds: {shares})"


def measure_worst_case(servers: int, ticks: int = 40) -> None:
    requests = [
        ServerRequest(name=f"d{i:05d}", fleet="f", host=HOST, port=1, template="default")
        for i in range(servers)
    ]
    plan = build_plan(requests, {"default": default_template()}, workers=2)
    slots = [
        SimpleNamespace(
            shard=shard,
            counters=_private_counters(len(shard.servers)),
            state="ready",
            failed={},
            stopped=set(),
            pid=1,
            last_heartbeat=1.0,
            restarts=0,
            servers_up=len(shard.servers),
        )
        for shard in plan.shards
    ]
    farm = SimpleNamespace(slots=slots, plan=plan, stopping=False, servers_ready=lambda: servers)
    now = [0.0]
    masks: list[dict[str, int]] = [{}]
    sources = ViewSources(fault_kinds=lambda: masks[0])
    view = FleetView(
        cast(Supervisor, farm), sources=sources, interval_s=0.5, window_s=0.5,
        clock=lambda: now[0],
    )  # fmt: skip
    view.tick()
    print(f"worst case, in process: every one of {servers} cells changes at every tick")
    _ticks(view, slots, now, ticks, lambda k: None)
    names = [spec.name for shard in plan.shards for spec in shard.servers]

    def churn(k: int) -> None:  # a new mapping each tick: every mask is rebuilt and sent
        masks[0] = {name: 1 << (k % 2) | 1 << ((k + i) % 3 + 2) for i, name in enumerate(names)}

    print("  and every cell's fault kinds change at every tick too (the mapping built each tick):")
    _ticks(view, slots, now, ticks, churn)


def _ticks(
    view: FleetView, slots: list[Any], now: list[float], ticks: int, before_tick: Any
) -> None:
    cpu, size = 0.0, 0
    for k in range(ticks):
        # Every server alternates between 2 and 200 requests per 0.5 s: buckets 3 and 5.
        step = 100 if k % 2 == 0 else 1
        for slot in slots:
            counts = np.frombuffer(slot.counters.slots, dtype=np.uint64)
            counts[HEADER_SLOTS + REQUEST_SLOT[3] :: SERVER_SLOTS] += np.uint64(step)
            del counts
        now[0] += 0.5
        before = time.process_time()
        before_tick(k)
        event = view.tick()
        cpu += time.process_time() - before
        size += len(event)
    per_tick = cpu / ticks
    print(
        f"  {per_tick * 1000:.1f} ms CPU per tick, {size / ticks / 1024:.0f} KiB per event: "
        f"{per_tick * 2 * 100:.1f} % of one core at 2 ticks/s"
    )


def _private_counters(servers: int) -> Any:
    buffer = memoryview(bytearray(ShardCounters.size(servers)))
    return ShardCounters(cast(Any, SimpleNamespace(buf=buffer, close=lambda: None)), servers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    measure_farm(args)
    measure_worst_case(args.servers)


if __name__ == "__main__":
    main()
