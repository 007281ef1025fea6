"""Faults at scale (issue 9's budgets), against farms this script starts on free ports.

    python3 -m benchmarks.bench_faults [--duration 4] [--repeat 3] [--skip-10k]

1. apply: a fault on all 10,000 servers of examples/plant.yaml; the API call's time (it
   answers once every worker confirmed), then probes of servers of every worker with raw
   Modbus requests, sent right after the call returned: all must get the injected answer.
   Then an offline fault on all of them: the call, when the sampled ports refuse, the
   slowest status call meanwhile, and the clear (the servers answer again).
2. delay on 10 %: 500 servers, a 500 ms delay fault on 50 of them (a seeded fraction).
   The other 450 get closed-loop load (one connection each); the 50 get 100 requests/s
   pipelined (depth 8) in every run, so the runs differ only by the fault. Rounds alternate
   no fault / fault; the best run of each is kept. The same load against the one-process
   pymodbus design gives the baseline for the 4x target.
3. outstanding: 10,000 delayed answers waiting (100 connections x 100 pipelined requests,
   40 s delay); the workers' RSS before and after, and closed-loop load on the other 400
   servers with them waiting, and without (before and after); every answer is read back,
   and must come in order.
Nothing is asserted: figures and ratios are printed for benchmarks/NOTES.md.
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks import procs
from benchmarks.procs import Server
from farm.bench.command import run_bench
from farm.bench.loadgen import LoadSpec
from farm.bench.spec import parse_mix
from farm.client import FarmClient, Fraction, Glob, ServerInfo, Servers
from farm.modbus import mbap as wire
from farm.modbus import pdu

ROOT = Path(__file__).resolve().parent.parent
PDUS = parse_mix("3:100", address=0, quantity=10)
READ = pdu.read(3, 0, 1)
HELD_S = 40  # how long the 10,000 answers of section 3 are held back


def mbap(transaction: int, body: bytes, unit: int = 1) -> bytes:
    return wire.frame(transaction, unit, body)


def client_of(server: Server) -> FarmClient:
    assert server.api_port is not None
    return FarmClient.at(procs.HOST, server.api_port)


def probe(host: str, port: int) -> bytes:
    """One FC 3 request on a fresh connection; the answer's PDU."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(mbap(1, READ))
        data = b""
        while len(data) < 6 or len(data) < wire.frame_size(data):
            chunk = sock.recv(512)
            if not chunk:
                return b""
            data += chunk
    return data[7:]


def plant_file(folder: Path) -> Path:
    """examples/plant.yaml with its port ranges moved off 127.0.0.1 to 127.30.0.1, where
    no test on this shared machine takes ports."""
    plant = yaml.safe_load((ROOT / "examples" / "plant.yaml").read_text())
    for fleet in plant["fleets"]:
        if fleet["addressing"].get("host") == "127.0.0.1":
            fleet["addressing"]["host"] = "127.30.0.1"
    (folder / "data").symlink_to(ROOT / "examples" / "data")
    path = folder / "plant.yaml"
    path.write_text(yaml.safe_dump(plant))
    return path


def plant_farm(path: Path) -> Server:
    api_port = procs.free_port_range(1)
    command = [
        sys.executable, "-m", "farm", "up", str(path),
        "--workers", "2", "--api-port", str(api_port), "--log-level", "warning",
    ]  # fmt: skip
    return Server("farm, plant.yaml", command, 10_000, 0, api_port)


def apply_everywhere() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        path = plant_file(Path(folder))
        server = procs.start(lambda: plant_farm(path), attempts=2)
    try:
        api = client_of(server)
        servers = api.servers()
        began = time.perf_counter()
        fault = api.fault("exception", target=Glob("*"), code=6)
        call_s = time.perf_counter() - began
        sample = []
        for worker in sorted({each.worker for each in servers}):
            mine = [each for each in servers if each.worker == worker]
            sample += [mine[0], mine[-1], *random.sample(mine, 48)]
        answers = [probe(*each.host_port) for each in sample]
        probed_s = time.perf_counter() - began
        faulted = sum(answer == bytes([0x83, 6]) for answer in answers)
        began = time.perf_counter()
        api.clear_fault(fault.id)
        clear_s = time.perf_counter() - began
        back = sum(probe(*each.host_port) != bytes([0x83, 6]) for each in sample)
        offline_everywhere(api, sample)
    finally:
        server.stop()
    row = {
        "servers": len(fault.servers),
        "call_s": call_s,
        "probes": len(sample),
        "faulted": faulted,
        "probed_s": probed_s,
        "clear_s": clear_s,
        "back": back,
    }
    print(
        f"apply: fault on {row['servers']:,} servers, API call {call_s * 1e3:.0f} ms; "
        f"{faulted}/{len(sample)} probes on both workers faulted at once (all answered "
        f"{probed_s:.2f} s after the call began); clear {clear_s * 1e3:.0f} ms, "
        f"{back}/{len(sample)} answering normally again",
        flush=True,
    )
    return row


def load(
    server: Server, others: list[tuple[str, int]], slow: list[tuple[str, int]], seconds: float
) -> dict[str, Any]:
    closed = LoadSpec(targets=tuple(others), pdus=PDUS, duration_s=seconds, timeout_s=2.0)
    paced = LoadSpec(
        targets=tuple(slow), pdus=PDUS, depth=8, rate=100.0, duration_s=seconds, timeout_s=2.0
    )
    before = procs.cpu_seconds(server.pids)
    results = run_bench([closed, paced] if slow else [closed])
    cpu = procs.cpu_seconds(server.pids) - before
    fast = results[0]
    delayed = results[1] if slow else None
    answered = fast.responses + (delayed.responses if delayed else 0)
    return {
        "others_per_s": fast.responses / fast.window_s,
        "delayed_per_s": delayed.responses / delayed.window_s if delayed else 0.0,
        "cpu_per_request_us": 1e6 * cpu / answered if answered else None,
        "p99_ms": 1e3 * fast.histogram.percentile(0.99),
        "timeouts": fast.timeouts + (delayed.timeouts if delayed else 0),
    }


def delay_on_a_tenth(seconds: float, repeat: int) -> dict[str, Any]:
    farm = procs.start(lambda: procs.farm(500, 2))
    pym = procs.start(lambda: procs.pymodbus_farm(500))
    try:
        api = client_of(farm)
        fault = api.fault("delay", target=Fraction(0.1, seed=7), ms=500)
        api.clear_fault(fault.id)
        slow_index = {int(name.rsplit("-", 1)[1]) for name in fault.servers}
        runs: dict[str, list[dict[str, Any]]] = {"no fault": [], "fault": [], "pymodbus": []}

        def split(server: Server) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
            targets = server.targets
            return (
                [t for i, t in enumerate(targets) if i not in slow_index],
                [t for i, t in enumerate(targets) if i in slow_index],
            )

        load(farm, *split(farm), 1.0)  # warm up
        for round_number in range(repeat):
            # Which goes first alternates: a burst of load from elsewhere on this shared
            # machine then does not always fall on the same case.
            for faulted in (False, True) if round_number % 2 == 0 else (True, False):
                made = api.fault("delay", target=Fraction(0.1, seed=7), ms=500) if faulted else None
                runs["fault" if faulted else "no fault"].append(load(farm, *split(farm), seconds))
                if made is not None:
                    api.clear_fault(made.id)
            runs["pymodbus"].append(load(pym, *split(pym), seconds))
    finally:
        farm.stop()
        pym.stop()
    best = {name: max(rows, key=lambda r: r["others_per_s"]) for name, rows in runs.items()}
    for name, row in best.items():
        print(
            f"delay 10 %: {name:<9} others {row['others_per_s']:9,.0f}/s  delayed "
            f"{row['delayed_per_s']:5.0f}/s  CPU {row['cpu_per_request_us']:5.1f} us/request  "
            f"p99 {row['p99_ms']:6.2f} ms  timeouts {row['timeouts']}",
            flush=True,
        )
    quiet, slow, pymodbus = best["no fault"], best["fault"], best["pymodbus"]
    print(
        f"delay 10 %: others' throughput {slow['others_per_s'] / quiet['others_per_s']:.2f}x, "
        f"CPU per request {slow['cpu_per_request_us'] / quiet['cpu_per_request_us']:.2f}x "
        f"the no-fault run; {slow['others_per_s'] / pymodbus['others_per_s']:.2f}x pymodbus",
        flush=True,
    )
    return {"best": best, "runs": runs}


def outstanding(seconds: float, repeat: int) -> dict[str, Any]:
    """Runs without answers waiting, before and after; runs with them, between."""
    farm = procs.start(lambda: procs.farm(500, 2))
    sockets: list[socket.socket] = []
    try:
        api = client_of(farm)
        names = [f"device-{i:04d}" for i in range(100)]
        others = farm.targets[100:]
        quiet = [load(farm, others, [], seconds) for _ in range(repeat)]
        rss_before = procs.memory_bytes(farm.extra_pids)[0]
        fault = api.fault("delay", target=Servers(*names), ms=HELD_S * 1000)
        began = time.monotonic()
        for host, port in farm.targets[:100]:
            sock = socket.create_connection((host, port), timeout=HELD_S * 2)
            sock.sendall(b"".join(mbap(tid, READ) for tid in range(1, 101)))
            sockets.append(sock)
        procs.wait_for(lambda: injected(farm) >= 10_000, 20, "10,000 requests to be held")
        rss_after = procs.memory_bytes(farm.extra_pids)[0]
        busy = [load(farm, others, [], seconds) for _ in range(repeat)]
        held_s = time.monotonic() - began
        api.clear_fault(fault.id)
        in_order = sum(read_in_order(sock, 100) for sock in sockets)
        waited = time.monotonic() - began
        after = [load(farm, others, [], seconds) for _ in range(repeat)]
    finally:
        for sock in sockets:
            sock.close()
        farm.stop()
    grown = (rss_after - rss_before) / 2**20
    print(
        f"outstanding: 10,000 delayed answers grew the workers' RSS by {grown:.1f} MiB; "
        f"{in_order} came back in order, {waited:.1f} s after they were sent. The other 400 "
        f"servers (best of {repeat} runs; the {held_s:.0f} s hold spans the middle runs):",
        flush=True,
    )
    for name, rows in (("before", quiet), ("while held", busy), ("after", after)):
        best = max(rows, key=lambda r: r["others_per_s"])
        print(
            f"  {name:<10} {best['others_per_s']:9,.0f}/s  p99 {best['p99_ms']:6.2f} ms  "
            f"CPU {best['cpu_per_request_us']:5.1f} us/request",
            flush=True,
        )
    return {"rss_mib": grown, "before": quiet, "held": busy, "after": after, "in_order": in_order}


def injected(farm: Server) -> int:
    assert farm.api_port is not None
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in _metrics(farm).splitlines()
        if line.startswith("modbus_farm_fault_injections_total{") and 'kind="delay"' in line
    )


def _metrics(farm: Server) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://{procs.HOST}:{farm.api_port}/metrics") as response:
        return str(response.read().decode())


def read_in_order(sock: socket.socket, count: int) -> int:
    """Read `count` answers; how many carry the transaction ids 1, 2, ... in order."""
    data, expected = b"", 1
    while expected <= count:
        while len(data) < 6 or len(data) < wire.frame_size(data):
            chunk = sock.recv(65536)
            if not chunk:
                return expected - 1
            data += chunk
        size = wire.frame_size(data)
        if struct.unpack(">H", data[:2])[0] != expected:
            return expected - 1
        data, expected = data[size:], expected + 1
    return count


def refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def answers(host: str, port: int) -> bool:
    try:
        return bool(probe(host, port))  # any Modbus answer (a gateway may say 0B)
    except OSError:
        return False


def offline_everywhere(api: FarmClient, sample: list[ServerInfo]) -> dict[str, Any]:
    """An offline fault on all 10,000 servers (farm.master.fleet.switch stops them in batches):
    the API call, how long after it the sampled ports refuse, the slowest status call while
    they go down, then clearing it and the time until the sample answers again."""
    began = time.perf_counter()
    fault = api.fault("offline", target=Glob("*"))
    call_s = time.perf_counter() - began
    status_s, waiting = 0.0, {each.host_port for each in sample}
    while waiting and time.perf_counter() - began < 60:
        asked = time.perf_counter()
        api.status()
        status_s = max(status_s, time.perf_counter() - asked)
        waiting = {each for each in waiting if not refused(*each)}
    refused_s = time.perf_counter() - began - call_s
    down = len(sample) - len(waiting)
    began = time.perf_counter()
    api.clear_fault(fault.id)
    clear_s = time.perf_counter() - began
    waiting = {each.host_port for each in sample}
    while waiting and time.perf_counter() - began < 60:
        waiting = {each for each in waiting if not answers(*each)}
    back_s = time.perf_counter() - began
    print(
        f"offline: fault on {len(fault.servers):,} servers, API call {call_s * 1e3:.0f} ms; "
        f"{down}/{len(sample)} sampled ports refused "
        f"{refused_s * 1e3:.0f} ms after it returned; slowest status call meanwhile "
        f"{status_s * 1e3:.0f} ms; clear {clear_s * 1e3:.0f} ms, "
        f"{len(sample) - len(waiting)}/{len(sample)} answering again {back_s:.2f} s after it began",
        flush=True,
    )
    return {"call_s": call_s, "refused_s": refused_s, "clear_s": clear_s, "back_s": back_s}


def main() -> None:
    parser = argparse.ArgumentParser(description="Faults at scale (issue 9's budgets).")
    parser.add_argument("--duration", type=float, default=4.0, help="Seconds per load run.")
    parser.add_argument("--repeat", type=int, default=3, help="Rounds; the best run is kept.")
    parser.add_argument("--skip-10k", action="store_true", help="Skip the plant (10,000).")
    parser.add_argument("--only-10k", action="store_true", help="Only the plant (10,000).")
    args = parser.parse_args()
    if not args.skip_10k:
        apply_everywhere()
    if args.only_10k:
        return
    delay_on_a_tenth(args.duration, args.repeat)
    outstanding(args.duration, args.repeat)


if __name__ == "__main__":
    main()
