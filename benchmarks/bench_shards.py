"""50,000 devices on one machine as shards: start-up, memory, a full read, and scrapes.

    python3 -m benchmarks.bench_shards [--servers 50000] [--shards 3] [--workers 2]
        [--rate 20000] [--bench-seconds 20] [--scrape-interval 15s]

One process holds at most RLIMIT_NOFILE (20,000 here) files, and a farm's master holds a
listening socket per device, so 50,000 devices are 3 farms: shards 0..2 of one fleet of
default devices at 127.77.0.1.. (a 127.x subnet, one address each, one port). The script:

1. starts the shards together (as a StatefulSet with parallel pod management would) and
   times each to ready (`GET /api/v1/status`: every server up);
2. measures RSS and PSS of each farm's processes (master + workers), idle;
3. reads every device: `farm bench --farm A --farm B --farm C` with one connection per
   device (so each device is read), at a fixed total rate, a SCADA-like poll;
4. times one GET /metrics per shard after the load (every series present) and its size;
5. runs one Prometheus on what `farm prometheus-config --farm ...` prints, and reads its
   own `scrape_duration_seconds` and `scrape_samples_scraped` per shard;
6. for the Kubernetes sizing, one pod's worth: 500 devices, 1 worker, RSS and PSS.

Prints Markdown tables. Every process is started here and stopped by PID; nothing is
asserted (tests hold behaviour, this file holds numbers). It takes a few minutes and most
of the machine: run it when nothing else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.procs import HOST, cpu_seconds, free_port_range, memory_bytes, wait_for

SUBNET = "127.77.0.0/16"


@dataclass
class Shard:
    index: int
    api_port: int
    servers: int = 0
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ready_s: float = 0.0
    pids: list[int] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        url = f"http://{HOST}:{self.api_port}/api/v1/status"
        with urllib.request.urlopen(url, timeout=5) as reply:
            body: dict[str, Any] = json.load(reply)
        return body

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise SystemExit(f"shard {self.index} exited with {self.process.returncode}")
        try:
            status = self.status()
        except OSError:
            return False
        if status["servers_ready"] != status["servers_total"]:
            return False
        self.servers = status["servers_total"]
        self.pids = [self.process.pid] + [w["pid"] for w in status["workers"]]
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate(timeout=30)


def farm(*args: str) -> list[str]:
    return [sys.executable, "-m", "farm", *args]


def start_shards(config: Path, shards: int, workers: int) -> list[Shard]:
    started = []
    for index in range(shards):
        shard = Shard(index, free_port_range(1))
        shard.started = time.monotonic()
        # A file, not a pipe nobody reads: a farm that logs much would block on a full pipe.
        log = (config.parent / f"shard-{index}-of-{shards}.log").open("wb")
        shard.process = subprocess.Popen(
            farm(
                "up", str(config), "--workers", str(workers),
                "--shard-index", str(index), "--shard-count", str(shards),
                "--api-port", str(shard.api_port), "--log-level", "warning",
            ),
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        log.close()
        started.append(shard)
    pending = list(started)
    deadline = time.monotonic() + 600
    while pending and time.monotonic() < deadline:
        for shard in list(pending):
            if shard.ready():
                shard.ready_s = time.monotonic() - shard.started
                pending.remove(shard)
        time.sleep(0.1)
    if pending:
        raise SystemExit(f"shards {[s.index for s in pending]} not ready in 600 s")
    return started


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def kib(n: float) -> str:
    return f"{n / 2**10:,.1f} KiB"


def memory_table(shards: list[Shard], title: str) -> list[str]:
    lines = [
        f"\n{title}\n",
        "| shard | servers | ready | RSS | RSS per server | PSS | PSS per server |",
    ]
    lines.append("|---:|---:|---:|---:|---:|---:|---:|")
    total_rss = total_pss = 0
    for shard in shards:
        rss, pss = memory_bytes(shard.pids)
        total_rss, total_pss = total_rss + rss, total_pss + pss
        lines.append(
            f"| {shard.index} | {shard.servers:,} | {shard.ready_s:.1f} s | {mib(rss)} | "
            f"{kib(rss / shard.servers)} | {mib(pss)} | {kib(pss / shard.servers)} |"
        )
    servers = sum(s.servers for s in shards)
    lines.append(
        f"| all | {servers:,} | {max(s.ready_s for s in shards):.1f} s | {mib(total_rss)} | "
        f"{kib(total_rss / servers)} | {mib(total_pss)} | {kib(total_pss / servers)} |"
    )
    return lines


def read_every_device(shards: list[Shard], rate: float, seconds: float) -> list[str]:
    connections = sum(s.servers for s in shards)
    processes = max(1, -(-connections // 15_000))  # each under the open-files limit
    farms = [arg for s in shards for arg in ("--farm", f"{HOST}:{s.api_port}")]
    pids = [pid for s in shards for pid in s.pids]
    cpu_before = cpu_seconds(pids)
    began = time.monotonic()
    result = subprocess.run(
        farm(
            "bench", *farms, "-c", str(connections), "-p", str(processes),
            "--rate", str(rate), "--duration", str(seconds), "--timeout", "5", "--json",
        ),
        capture_output=True, text=True, timeout=seconds + 600,
    )  # fmt: skip
    took = time.monotonic() - began
    if result.returncode != 0:
        raise SystemExit(f"farm bench failed: {result.stderr[-800:]}")
    report = json.loads(result.stdout)
    cpu = cpu_seconds([pid for pid in pids if Path(f"/proc/{pid}").exists()]) - cpu_before
    restarts = sum(w["restarts"] for s in shards for w in s.status()["workers"])
    lat = report["latency_s"]
    per_request = 1e6 * cpu / max(report["responses"], 1)
    return [
        "\n`farm bench` over every shard, one connection per device, open loop:\n",
        "| targets | connected | rate | answered | requests/s | p50 | p99 | max | timeouts | "
        "connection errors | farms' CPU per request | worker restarts | generator processes | "
        "wall time |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {report['targets']:,} | {report['connected']:,} | {rate:,.0f}/s | "
        f"{report['responses']:,} | {report['requests_per_s']:,.0f} | "
        f"{lat['p50'] * 1e3:.2f} ms | {lat['p99'] * 1e3:.2f} ms | {lat['max'] * 1e3:.0f} ms | "
        f"{report['timeouts']} | {report['connection_errors']} | {per_request:.1f} us "
        f"(connections included) | {restarts} | {processes} | {took:.0f} s |",
    ]


def scrape_table(shards: list[Shard]) -> list[str]:
    lines = ["\nOne GET /metrics per shard, after the load:\n"]
    lines += ["| shard | servers | time | size | lines |", "|---:|---:|---:|---:|---:|"]
    for shard in shards:
        began = time.monotonic()
        url = f"http://{HOST}:{shard.api_port}/metrics"
        with urllib.request.urlopen(url, timeout=60) as reply:
            body = reply.read()
        took = time.monotonic() - began
        count = body.count(b"\n")
        lines.append(
            f"| {shard.index} | {shard.servers:,} | {took * 1e3:.0f} ms | "
            f"{len(body) / 1e6:.1f} MB | {count:,} |"
        )
    return lines


def prometheus_table(shards: list[Shard], interval: str, workdir: Path) -> list[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        return ["\n(prometheus not installed: no scrape figures)"]
    farms = [arg for s in shards for arg in ("--farm", f"{HOST}:{s.api_port}")]
    config = subprocess.run(
        farm("prometheus-config", *farms, "--scrape-interval", interval),
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    (workdir / "prometheus.yml").write_text(config)
    port = free_port_range(1)
    process = subprocess.Popen(
        [
            binary, f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={HOST}:{port}", "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def query(expr: str) -> list[dict[str, Any]]:
        url = f"http://{HOST}:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=30) as reply:
            result: list[dict[str, Any]] = json.load(reply)["data"]["result"]
        return result

    try:
        # Three scrapes of every shard: the first fills the TSDB with new series.
        wait_for(
            lambda: len(query("count_over_time(up[10m]) >= 3")) == len(shards),
            600,
            "three scrapes of every shard",
        )
        durations = {r["metric"]["instance"]: float(r["value"][1]) for r in query(
            "max_over_time(scrape_duration_seconds[10m])")}  # fmt: skip
        last = {r["metric"]["instance"]: float(r["value"][1]) for r in query(
            "scrape_duration_seconds")}  # fmt: skip
        samples = {r["metric"]["instance"]: float(r["value"][1]) for r in query(
            "scrape_samples_scraped")}  # fmt: skip
        up = {r["metric"]["instance"]: float(r["value"][1]) for r in query("up")}
        ready = query("sum(modbus_farm_servers_ready)")
    finally:
        process.terminate()
        process.wait(timeout=60)
    lines = [
        f"\nOne Prometheus ({interval} interval, config from `farm prometheus-config --farm ...`),"
        f" its own figures per shard; it saw {float(ready[0]['value'][1]):,.0f} servers ready:\n",
        "| shard | up | samples per scrape | last scrape | slowest of the first scrapes |",
        "|---:|---:|---:|---:|---:|",
    ]
    for shard in shards:
        instance = f"{HOST}:{shard.api_port}"
        lines.append(
            f"| {shard.index} | {up.get(instance, 0):.0f} | {samples.get(instance, 0):,.0f} | "
            f"{last.get(instance, 0) * 1e3:.0f} ms | {durations.get(instance, 0) * 1e3:.0f} ms |"
        )
    return lines


def one_pod(workdir: Path) -> list[str]:
    """What a Kubernetes pod of 500 default devices and one worker holds."""
    config = workdir / "pod.yaml"
    base = free_port_range(500)
    config.write_text(
        "fleets:\n  - {name: pod, template: default, count: 500, "
        f"addressing: {{port_start: {base}, port_end: {base + 499}}}}}\n"
    )
    [shard] = start_shards(config, 1, 1)
    try:
        return memory_table([shard], "One pod's worth (500 devices, 1 worker), idle:")
    finally:
        shard.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=50_000)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=20_000, help="bench requests/s in all")
    parser.add_argument("--bench-seconds", type=float, default=20)
    parser.add_argument("--scrape-interval", default="15s")
    args = parser.parse_args()
    out: list[str] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        workdir = Path(tmp)
        port = free_port_range(1)
        config = workdir / "fleet.yaml"
        config.write_text(
            "fleets:\n  - {name: plant, template: default, "
            f"count: {args.servers}, addressing: {{subnet: {SUBNET}, port: {port}}}}}\n"
        )
        out.append(
            f"{args.servers:,} default devices at {SUBNET} port {port}, {args.shards} shards "
            f"(farms) of {args.workers} workers each, started together."
        )
        began = time.monotonic()
        shards = start_shards(config, args.shards, args.workers)
        try:
            out.append(f"\nAll {args.shards} shards ready in {time.monotonic() - began:.1f} s.")
            out += memory_table(shards, "Idle, right after ready:")
            out += read_every_device(shards, args.rate, args.bench_seconds)
            for shard in shards:
                wait_for(shard.ready, 120, f"shard {shard.index} ready again")  # fresh pids
            out += memory_table(shards, "After the read (every device has had a connection):")
            out += scrape_table(shards)
            out += prometheus_table(shards, args.scrape_interval, workdir)
        finally:
            for shard in shards:
                shard.stop()
        for log in sorted(workdir.glob("shard-*.log")):
            lines = log.read_text(errors="replace").splitlines()
            said = [line.strip() for line in lines if line.strip()][-5:]
            if said:
                out.append(f"\n{log.name}, last lines: " + " / ".join(said))
        out += one_pod(workdir)
    load_after = os.getloadavg()
    out.append(
        f"\nMachine load average (1 min) {load_before[0]:.1f} at the start, {load_after[0]:.1f} "
        f"at the end, on {os.cpu_count()} CPUs: other processes' work is in these figures."
    )
    print("\n".join(out))


if __name__ == "__main__":
    main()
