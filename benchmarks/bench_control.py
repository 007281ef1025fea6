"""What the control API costs: stop/start of a server, and value reads and writes.

    python3 -m benchmarks.bench_control [--servers 1000] [--workers 2] [--cycles 50]

Against a farm this starts on free loopback ports (benchmarks.procs):
1. stop/start: `--cycles` times, stop one server and start it again through FarmClient.
   For each: how long the API call took; whether, when it returned, a connection was
   refused (after stop) or accepted (after start). A start binds in the master and hands
   the socket to the running worker over its pipe (SCM_RIGHTS): the other servers of that
   worker never notice. The alternative it is set against: replacing the worker with a new
   one holding the new socket, which is what a kill -9 costs (measured here as kill -9 of
   one worker until every server is ready again), and which drops every connection of
   the shard. Then every server stopped and started at once (concurrent requests), as a
   fault taking a whole fleet offline would.
2. the values API: GET of 10 registers, PUT of one point, GET of one server's detail and a
   GET /api/v1/servers of every server, each repeated `--cycles` times.

Prints medians and maxima; nothing is asserted (tests hold behaviour, this holds numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import time
import urllib.request
from collections.abc import Callable

from benchmarks import procs
from farm.client import FarmClient

HOST = "127.0.0.1"


def timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def connects(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        try:
            sock.connect((HOST, port))
        except ConnectionRefusedError:
            return False
    return True


def line(what: str, seconds: list[float]) -> str:
    median, most = statistics.median(seconds) * 1e3, max(seconds) * 1e3
    return f"  {what:<44} median {median:7.2f} ms   max {most:7.2f} ms   (n={len(seconds)})"


def stop_start(client: FarmClient, server: procs.Server, cycles: int) -> None:
    stops, starts, refused, served = [], [], 0, 0
    for cycle in range(cycles):
        index = (cycle * 7) % server.count
        name, port = f"device-{index:04d}", server.port_base + index
        stops.append(timed(lambda: client.stop(name)))  # noqa: B023 (called at once)
        refused += not connects(port)
        starts.append(timed(lambda: client.start(name)))  # noqa: B023
        served += connects(port)
    print("stop/start through the API")
    print(line("POST /stop (port closed in master and worker)", stops))
    print(line("POST /start (bind, SCM_RIGHTS to the worker)", starts))
    print(f"  refused right after stop returned: {refused}/{cycles}; "
          f"accepted right after start returned: {served}/{cycles}")  # fmt: skip


def many_at_once(server: procs.Server) -> None:
    """Stop, then start, every server at once in the master (as an offline fault on a whole
    fleet would), over the API: concurrent requests, each answered once its worker confirmed."""
    assert server.api_port is not None
    base = f"http://{HOST}:{server.api_port}/api/v1/servers"

    def post(name: str, action: str) -> None:
        request = urllib.request.Request(f"{base}/{name}/{action}", data=b"{}", method="POST")
        request.add_header("Content-Type", "application/json")
        urllib.request.urlopen(request, timeout=30).close()

    async def all_of(action: str) -> float:
        began = time.perf_counter()
        names = [f"device-{index:04d}" for index in range(server.count)]
        await asyncio.gather(*(asyncio.to_thread(post, name, action) for name in names))
        return time.perf_counter() - began

    for action in ("stop", "start"):
        took = asyncio.run(all_of(action))
        print(f"  {action} all {server.count} servers, concurrent requests: {took * 1e3:.0f} ms")
    closed = sum(not connects(server.port_base + index) for index in range(server.count))
    print(f"  refused after the starts: {closed}/{server.count}")


def respawn(client: FarmClient, server: procs.Server) -> None:
    status = client.status()
    row = status["workers"][0]
    began = time.perf_counter()
    os.kill(row["pid"], signal.SIGKILL)
    procs.wait_for(
        lambda: (
            (s := client.status())["servers_ready"] == server.count
            and s["workers"][0]["restarts"] > row["restarts"]
        ),
        120,
        "the worker to be replaced",
    )
    took = time.perf_counter() - began
    print(f"  for comparison, replacing worker 0 ({row['servers']} servers) after kill -9: "
          f"{took * 1e3:.0f} ms until every server was ready again")  # fmt: skip


def values(client: FarmClient, server: procs.Server, cycles: int) -> None:
    reads, writes, details, lists = [], [], [], []
    for cycle in range(cycles):
        name = f"device-{(cycle * 13) % server.count:04d}"
        reads.append(timed(lambda: client.read(name, "holding_registers", 0, 10)))  # noqa: B023
        writes.append(timed(lambda: client.set_point(name, "load_pct", cycle)))  # noqa: B023
        details.append(timed(lambda: client.server(name)))  # noqa: B023
        lists.append(timed(client.servers))
    print("values API")
    print(line("GET 10 holding registers", reads))
    print(line("PUT one point (encode, write in place)", writes))
    print(line("GET one server's detail (5 points decoded)", details))
    print(line(f"GET /api/v1/servers ({server.count} servers)", lists))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cycles", type=int, default=50)
    args = parser.parse_args()
    server = procs.start(lambda: procs.farm(args.servers, args.workers))
    try:
        assert server.api_port is not None
        client = FarmClient.at(HOST, server.api_port)
        print(f"farm of {args.servers} servers, {args.workers} workers")
        stop_start(client, server, args.cycles)
        many_at_once(server)
        respawn(client, server)
        values(client, server, args.cycles)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
