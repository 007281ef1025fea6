"""A neighbour's latency before and during a flood of clients that never read (issue 18, 4).

A farm of 2 servers on 1 worker. `--clients` connections to server 0 pipeline FC 3 x 125
as fast as their send buffers take it and never read an answer; a probe on server 1 (same
worker) reads one register at a time. The probe's p50/p99/max before (`--seconds`) and
during the flood (the same time, from its first send) are printed per transport:

    python3 -m benchmarks.bench_flood --clients 50 --seconds 10 --transports tcp rtu-over-tcp tls

Results and the machine they were taken on: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.bench_transports import Case, farm
from farm.modbus import mbap, pdu, rtu

READ_125 = pdu.read(3, 0, 125)
READ_1 = pdu.read(3, 0, 1)


def request(transport: str, pdu_bytes: bytes, transaction: int) -> bytes:
    if transport == "rtu-over-tcp":
        return rtu.frame(1, pdu_bytes)
    return mbap.frame(transaction, 1, pdu_bytes)


def connect(port: int, context: ssl.SSLContext | None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(sock, server_hostname="127.0.0.1") if context else sock


def answer_length(transport: str) -> int:
    """The length of the answer to READ_1 (2 data bytes)."""
    return 7 if transport == "rtu-over-tcp" else 11


def probe(port: int, transport: str, context: ssl.SSLContext | None, seconds: float) -> list[float]:
    """Latencies of one-register reads, one at a time, for `seconds` (a timeout or a lost
    connection ends it, counted as 5 s)."""
    latencies: list[float] = []
    with connect(port, context) as sock:
        sock.settimeout(5)
        deadline = time.monotonic() + seconds
        transaction = 0
        while time.monotonic() < deadline:
            transaction = (transaction + 1) & 0xFFFF
            began = time.perf_counter()
            sock.sendall(request(transport, READ_1, transaction))
            got = b""
            try:
                while len(got) < answer_length(transport):
                    chunk = sock.recv(64)
                    if not chunk:
                        raise ConnectionError("closed")
                    got += chunk
                latencies.append(time.perf_counter() - began)
            except (TimeoutError, ConnectionError):  # the worker stalled, or was replaced
                latencies.append(5.0)
                print(f"  the probe lost its connection after {len(latencies)} reads")
                return latencies
            time.sleep(0.005)
    return latencies


def flood(
    port: int, transport: str, context: ssl.SSLContext | None, clients: int, stop: threading.Event
) -> None:
    batch = b"".join(request(transport, READ_125, t) for t in range(150))
    hogs = [connect(port, context) for _ in range(clients)]
    try:
        for hog in hogs:
            hog.setblocking(False)
        while not stop.is_set():
            for hog in hogs:
                with contextlib.suppress(BlockingIOError, ssl.SSLError, ConnectionError):
                    hog.send(batch)
            time.sleep(0.001)
    finally:
        for hog in hogs:
            hog.close()


def summary(latencies: list[float]) -> str:
    ms = sorted(x * 1e3 for x in latencies)
    p99 = statistics.quantiles(ms, n=100)[-1] if len(ms) > 1 else ms[0]
    return f"p50 {statistics.median(ms):7.2f}  p99 {p99:7.2f}  max {ms[-1]:7.1f} ms ({len(ms)})"


def run(transport: str, clients: int, seconds: float, certs: Path) -> None:
    server = farm(Case(transport, transport), 2, certs)
    try:
        context = None
        if transport == "tls":
            context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
            context.load_cert_chain(certs / "client.pem", certs / "client.key")
        hog_port, neighbour = server.port_base, server.port_base + 1
        before = probe(neighbour, transport, context, seconds)
        stop = threading.Event()
        flooding = threading.Thread(
            target=flood, args=(hog_port, transport, context, clients, stop), daemon=True
        )
        flooding.start()
        try:
            during = probe(neighbour, transport, context, seconds)
        finally:
            stop.set()
            flooding.join(30)
        print(f"{transport:13} before  {summary(before)}")
        print(f"{transport:13} during  {summary(during)}  ({clients} never-reading clients)")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--transports", nargs="+", default=["tcp", "rtu-over-tcp", "tls"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        certs = Path(directory)
        subprocess.run([sys.executable, "-m", "farm", "certs", directory], check=True, timeout=60)
        for transport in args.transports:
            run(transport, args.clients, args.seconds, certs)


if __name__ == "__main__":
    main()
