"""What the per-client metrics cost the worker (nothing runs per request: they read what the
client statistics keep): the once-a-second fold of a poller's arrivals, at REF and now (now
it also keeps each poll's 99th percentile and its decreasing largest intervals, for
`farm report`'s window max), counted per request; and one tally (the answer to the master's
TALLY, every 5 s) over SERVERS servers polled by one client, one request each.

    python3 -m benchmarks.bench_client_tally [--ref main] [--servers 10000] [--repeat 5]
        [--arrivals 5]

A round is FOLDS seconds of a poller of --arrivals requests a second on each of KEYS
servers, folded as the worker's task does (every FOLD_EVERY_S; now a request once it has
FOLD_AT arrivals or its oldest is FOLD_AGE_NS old, before every request every second); the
rounds alternate REF and now, the best of each is kept and every round shown.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import random
import time
from types import ModuleType
from typing import Any

from benchmarks import bench_fault_hotpath as hotpath
from farm.worker.observe import clients, tally

ARRIVALS = 5  # per key and second: a 0.2 s poller
KEYS = 2_000
FOLDS = 40  # seconds


def fold_ns_per_request(module: ModuleType, seed: int, arrivals: int = ARRIVALS) -> float:
    """Fold KEYS servers' poll by one client (one request each) FOLDS times, `arrivals` new
    arrivals each: ns per arrival."""
    rng = random.Random(seed)
    key = (1, bytes([3, 0, 0, 0, 10]))
    polled = []
    for _ in range(KEYS):
        stats = module.ClientStats("127.0.0.2")
        times = stats.first(key, 0)
        times.append(0)
        polled.append((stats, times))
    taken = 0
    every = 1_000_000_000 // arrivals
    batched = "before" in inspect.signature(polled[0][0].fold_all).parameters
    period = round(module.FOLD_EVERY_S)  # seconds between two runs of the worker's task
    for second in range(1, FOLDS + 1):
        for _, times in polled:
            at = times[-1]
            for _ in range(arrivals):
                at += every + rng.randrange(-every // 40, every // 40)
                times.append(at)
        if second % period:
            continue
        began = time.perf_counter_ns()
        if batched:  # as the worker's task calls it
            before = second * 1_000_000_000 - module.FOLD_AGE_NS
            for stats, _ in polled:
                stats.fold_all(before)
        else:
            for stats, _ in polled:
                stats.fold_all()
        taken += time.perf_counter_ns() - began
    return taken / (KEYS * FOLDS * arrivals)


class _Device:
    def __init__(self, book: Any) -> None:
        self.clients = book


def tally_ms(servers: int) -> float:
    """One tally over `servers` servers, each polled by the same client, one request."""
    now = time.perf_counter_ns()
    devices = {}
    for number in range(servers):
        book = clients.ClientBook()
        client = book.connected("127.0.0.2")
        key = (1, bytes([3, 0, 0, 0, 10]))
        times = client.first(key, now - 400_000_000)  # as a first request makes it
        assert times is not None
        times += [now - 400_000_000, now - 200_000_000, now]
        client.state[key].fold(times)
        devices[number] = _Device(book)
    began = time.perf_counter_ns()
    asyncio.run(tally.tally(devices))  # type: ignore[arg-type]  # only `clients` is read
    first = (time.perf_counter_ns() - began) / 1e6
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="main", help="git ref of the client statistics before")
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--arrivals", type=int, default=ARRIVALS, help="a poll's arrivals a fold (5: every 0.2 s)"
    )
    args = parser.parse_args()
    then = hotpath.baseline_module(args.ref, "observe/clients.py")
    assert then is not None, f"no farm/worker/observe/clients.py at {args.ref}"
    rounds: dict[str, list[float]] = {f"fold, before ({args.ref})": [], "fold, now": []}
    for seed in range(args.repeat):
        rounds[f"fold, before ({args.ref})"].append(fold_ns_per_request(then, seed, args.arrivals))
        rounds["fold, now"].append(fold_ns_per_request(clients, seed, args.arrivals))
    print("| measure | ns per request | every round |")
    print("|---|---:|---|")
    for name, taken in rounds.items():
        shown = " / ".join(f"{each:.1f}" for each in taken)
        print(f"| {name} | {min(taken):.1f} | {shown} |")
    tallies = [tally_ms(args.servers) for _ in range(args.repeat)]
    shown = " / ".join(f"{each:.1f}" for each in tallies)
    print(f"| one tally, {args.servers} servers polled | {min(tallies):.1f} ms | {shown} |")


if __name__ == "__main__":
    main()
