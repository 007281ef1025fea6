"""Where an idle farm's memory goes, process by process (issue 24: at most 14 KiB RSS per
idle server at 10,000 servers, master and workers summed).

    python3 -m benchmarks.bench_memory [--servers 10000] [--workers 2] [--at 1 60 180]

A farm of `--servers` default devices at 127.79.0.1... on one port (benchmarks.procs, as
benchmarks.run's section 3 does at 10,000) is left idle; at each `--at` second after it is
ready, RSS and PSS are read from /proc/PID/smaps_rollup (benchmarks.procs.memory_bytes)
and each process's RSS split as /proc/PID/status does: `anon` (the interpreter's heap),
`file` (libraries and other mapped files, the same pages in every process) and `shmem`
(the pages of the farm's shared memory this process touched: banks, counters, journal).
Later readings show what idle memory grows by (the fleet view's history samples every 5 s).

Prints the figures; nothing is asserted (tests hold behaviour, this holds numbers).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks import procs

FIRST_IP = "127.79.0.1"
MIB = 1 << 20


def status_rss(pid: int) -> dict[str, int]:
    """RSS by kind (anon, file, shmem), in bytes, from /proc/PID/status."""
    kinds = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("RssAnon", "RssFile", "RssShmem"):
                kinds[name[3:].lower()] = int(rest.split()[0]) * 1024
    return kinds


def report(farm: procs.Server, servers: int, at: float) -> None:
    rss, pss = procs.memory_bytes(farm.pids)
    print(
        f"{at:.0f} s after ready: RSS {rss / servers / 1024:.1f} KiB per server, "
        f"PSS {pss / servers / 1024:.1f} KiB ({rss / MIB:.0f} MiB / {pss / MIB:.0f} MiB in all)",
        flush=True,
    )
    for role, pid in zip(
        ["master"] + [f"worker {n}" for n in range(len(farm.pids) - 1)], farm.pids, strict=True
    ):
        own_rss, own_pss = procs.memory_bytes([pid])
        kinds = ", ".join(f"{kind} {size / MIB:.0f}" for kind, size in status_rss(pid).items())
        print(
            f"  {role}: RSS {own_rss / MIB:.0f} MiB ({kinds}), PSS {own_pss / MIB:.0f} MiB",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--at", type=float, nargs="+", default=[1.0], help="Seconds after ready to read memory."
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        farm = procs.start(
            lambda: procs.ip_farm(args.servers, args.workers, FIRST_IP, Path(directory))
        )
        try:
            print(
                f"{args.servers:,} servers, {args.workers} workers: ready in {farm.ready_s:.1f} s"
            )
            ready_at = time.monotonic()
            for at in sorted(args.at):
                time.sleep(max(0.0, ready_at + at - time.monotonic()))
                report(farm, args.servers, at)
        finally:
            farm.stop()


if __name__ == "__main__":
    main()
