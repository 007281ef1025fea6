"""How soon a scenario step is in effect on 10,000 servers (issue 12: within 1 s of its time).

    python3 -m benchmarks.bench_scenario [--servers 10000] [--workers 2] [--sample 200]

Against a farm this starts on loopback (benchmarks.procs; its servers at 127.77.0.1 and up,
one port, as `ip_start` addressing gives them: 10,000 consecutive free ports are rarely
there on a shared machine), a scenario posted to its API plays two steps on the whole
fleet:
  1 s   stuck: every server's temperature_dc reads 4242 (a value fault, applied by workers)
  3 s   offline for 2 s: 10 % of the servers' ports close (farm.master.fleet.switch, in one batch
        per worker; `--offline 1.0` for all of them)
A Modbus client (raw MBAP on one socket each) watches `--sample` servers spread over the
fleet; a step is in effect on a server when the client first sees it there (4242 read;
connection refused). The figure is the last of those, counted from the step's time, which
is counted from the moment the scenario was posted (so the API call's own time counts
against the step, never for it).

Prints the figures; nothing is asserted (tests hold behaviour, this holds numbers).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import procs
from farm.client import FarmClient
from farm.config.faults.selection import pick_fraction
from farm.modbus import mbap, pdu

HOST = "127.0.0.1"
FIRST_IP = "127.77.0.1"
STUCK_AT, OFFLINE_AT, OFFLINE_FOR = 1.0, 3.0, 2.0


def read_point(sock: socket.socket, transaction: int) -> int:
    """temperature_dc (input register 1) of one server, over a connection kept open."""
    sock.sendall(mbap.frame(transaction, 1, pdu.read(4, 1, 1)))
    data = b""
    while len(data) < 11:
        chunk = sock.recv(64)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return pdu.registers(data[7:])[0]


def refused(address: tuple[str, int], hung: list[tuple[str, int]]) -> bool:
    """Whether a connect to `address` is refused; one that neither connects nor is refused
    within 0.2 s (a listening socket nobody accepts on, its backlog full) is noted in `hung`
    and does not hold up the probes of the other servers."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        try:
            sock.connect(address)
        except ConnectionRefusedError:
            return True
        except TimeoutError:
            hung.append(address)
            return False
        except OSError:
            return False
    return False


def run(servers: int, workers: int, sample: int, offline: float) -> None:
    with tempfile.TemporaryDirectory() as directory:
        farm = procs.start(lambda: procs.ip_farm(servers, workers, FIRST_IP, Path(directory)))
        measure(farm, servers, workers, sample, offline)


def measure(farm: procs.Server, servers: int, workers: int, sample: int, offline: float) -> None:
    try:
        assert farm.api_port is not None
        client = FarmClient(f"http://{HOST}:{farm.api_port}", timeout=60)
        step = max(1, servers // sample)
        ports = procs.ip_addresses(servers, FIRST_IP, farm.port_base)[::step][:sample]
        sockets = [socket.create_connection(address, timeout=5) for address in ports]
        scenario = {
            "steps": [
                {"at": f"{STUCK_AT}s", "fault": {"kind": "stuck", "fleet": "default",
                                                "point": "temperature_dc", "value": 4242}},
                {"at": f"{OFFLINE_AT}s", "for": f"{OFFLINE_FOR}s",
                 "fault": {"kind": "offline", "fleet": "default", "fraction": offline}},
            ]
        }  # fmt: skip
        posted = time.monotonic()
        client.play_scenario(scenario)
        answered = time.monotonic() - posted
        seen: dict[int, float] = {}
        deadline = posted + STUCK_AT + 10
        transaction = 0
        while len(seen) < len(sockets) and time.monotonic() < deadline:
            for number, sock in enumerate(sockets):
                if number in seen:
                    continue
                transaction = (transaction + 1) & 0xFFFF
                if read_point(sock, transaction) == 4242:
                    seen[number] = time.monotonic() - posted - STUCK_AT
        for sock in sockets:
            sock.close()
        chosen = set(pick_fraction([f"device-{i:05d}" for i in range(servers)], offline, 0))
        ports = [
            address
            for index, address in enumerate(procs.ip_addresses(servers, FIRST_IP, farm.port_base))
            if f"device-{index:05d}" in chosen
        ][:sample]
        while time.monotonic() < posted + OFFLINE_AT - 0.2:
            time.sleep(0.01)
        down: dict[int, float] = {}
        hung: list[tuple[str, int]] = []
        deadline = posted + OFFLINE_AT + OFFLINE_FOR
        while len(down) < len(ports) and time.monotonic() < deadline:
            for number, port in enumerate(ports):
                if number not in down and refused(port, hung):
                    down[number] = time.monotonic() - posted - OFFLINE_AT
        print(
            f"  offline seen on {len(down)}/{len(ports)} watched; {len(hung)} connects hung "
            f"over 0.2 s (on {len(set(hung))} servers) on the way",
            flush=True,
        )
        began = time.monotonic()
        view = client.scenario()
        print(f"  GET /api/v1/scenario then took {time.monotonic() - began:.1f} s", flush=True)
        client.stop_scenario()
    finally:
        farm.stop()
    print(f"{servers} servers, {workers} workers; POST /api/v1/scenario answered in "
          f"{answered * 1e3:.0f} ms; a sample of {sample} servers watched")  # fmt: skip
    report("stuck on every server (value fault)", seen, sample)
    report(f"offline on {offline:.0%} of the servers (ports closed)", down, len(ports))
    errors = [step["error"] for step in view["steps"] if step.get("error")]
    print(f"  steps that could not act: {errors or 'none'}")


def report(what: str, lateness: dict[int, float], sample: int) -> None:
    if not lateness:
        print(f"  {what}: never seen")
        return
    values = sorted(lateness.values())
    print(
        f"  {what}: in effect on {len(values)}/{sample} watched, last {values[-1] * 1e3:.0f} ms "
        f"after the step's time (median {statistics.median(values) * 1e3:.0f} ms, first "
        f"{values[0] * 1e3:.0f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--offline", type=float, default=0.1, help="Fraction taken offline.")
    args = parser.parse_args()
    run(args.servers, args.workers, args.sample, args.offline)


if __name__ == "__main__":
    main()
