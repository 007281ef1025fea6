"""Server processes for the benchmark suite, and what /proc says about them.

Each server under test is a subprocess this suite starts (a farm, the one-process pymodbus
design, the minimal responder) on free loopback ports found at run time; it is stopped by
PID (SIGTERM, then SIGKILL after a grace period), never by name.
"""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import ipaddress
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

HOST = "127.0.0.1"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


async def run_until_told(lifetime: float) -> None:
    """In a server under test: say `ready`, then serve until SIGTERM, the end of stdin (the
    suite is gone) or `lifetime` seconds, whichever comes first."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 1):
            stop.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    print("ready", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), lifetime)


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            value = predicate()
            if value:
                return value
        time.sleep(0.02)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port_range(count: int) -> int:
    """A base port with `count` consecutive free ports, below the ephemeral range."""
    for _ in range(200):
        base = random.randrange(10000, 32000 - count)
        if all(_port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports below 32000")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (/proc/PID/stat fields 14 and 15)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICK


def cpu_seconds_precise(pids: list[int]) -> float:
    """CPU time of these processes' threads to the nanosecond (/proc/PID/task/*/schedstat),
    where /proc/PID/stat counts in clock ticks (10 ms): for costs of single connections."""
    total = 0
    for pid in pids:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as schedstat:
                total += int(schedstat.read().split()[0])
    return total / 1e9


def machine_busy_seconds() -> float:
    """CPU time every core spent on anything but idling (steal included), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / CLOCK_TICK


def memory_bytes(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) summed over these processes, from /proc/PID/smaps_rollup."""
    rss = pss = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                name, _, rest = line.partition(":")
                if name == "Rss":
                    rss += int(rest.split()[0]) * 1024
                elif name == "Pss":
                    pss += int(rest.split()[0]) * 1024
    return rss, pss


def compile_farm(tree: Path) -> None:
    """Byte-compile the farm's modules in `tree`, as its first start anywhere does: a start is
    measured as every later one runs. Where PYTHONDONTWRITEBYTECODE is set (as on this
    project's machine) no start writes them, and each process of a farm would compile the
    farm's modules from source at every start (0.72 -> 0.84-0.94 s for 500 servers, measured).
    An editable install (`pip install -e .`) does not compile them at install."""
    if (tree / "farm").is_dir():
        compileall.compile_dir(str(tree / "farm"), quiet=1)


@dataclass
class Server:
    """A server set under test: one subprocess and the addresses it serves."""

    name: str
    command: list[str]
    count: int
    port_base: int
    api_port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_s: float = 0.0
    extra_pids: list[int] = field(default_factory=list)
    env: dict[str, str] | None = None  # None: this process's environment
    cwd: str | None = None  # None: this process's working directory

    @property
    def targets(self) -> list[tuple[str, int]]:
        return [(HOST, self.port_base + i) for i in range(self.count)]

    @property
    def pids(self) -> list[int]:
        assert self.process is not None
        return [self.process.pid, *self.extra_pids]

    def start(self, timeout: float = 120.0) -> Server:
        if "farm" in self.command:
            compile_farm(Path(self.cwd or os.getcwd()))
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=self.cwd,
        )
        if self.api_port is None:
            self._wait_line(timeout)
        else:
            status = wait_for(self._farm_ready, timeout, f"{self.name} to be ready")
            self.extra_pids = [w["pid"] for w in status["workers"]]
        self.ready_s = time.monotonic() - self.started_at
        return self

    def _wait_line(self, timeout: float) -> None:
        """Wait for the `ready` line, without blocking past the deadline."""
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.process.stdout], [], [], remaining)
            if not readable:
                break
            line = self.process.stdout.readline()
            if line.strip() == b"ready":
                return
            if not line:
                _, stderr = self.process.communicate()
                raise RuntimeError(f"{self.name} exited: {stderr.decode(errors='replace')[-500:]}")
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {self.name}")

    def _farm_ready(self) -> dict[str, Any] | None:
        assert self.process is not None
        if self.process.poll() is not None:
            _, stderr = self.process.communicate()
            raise RuntimeError(f"{self.name} exited: {stderr.decode(errors='replace')[-500:]}")
        url = f"http://{HOST}:{self.api_port}/api/v1/status"
        with urllib.request.urlopen(url, timeout=2) as response:
            status: dict[str, Any] = json.load(response)
        return status if status["servers_ready"] == self.count else None

    def stop(self, grace: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate(timeout=grace)
        for pid in self.extra_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def start(factory: Callable[[], Server], attempts: int = 3) -> Server:
    """Start a server set on free ports; new ports if another process took one meanwhile."""
    for attempt in range(attempts):
        server = factory()
        try:
            return server.start()
        except RuntimeError as exc:
            server.stop()
            if attempt == attempts - 1:
                raise
            print(f"{server.name} did not start ({str(exc)[-120:]!r}); trying other ports")
    raise AssertionError("unreachable")


def farm(count: int, workers: int) -> Server:
    port_base = free_port_range(count)
    api_port = free_port_range(1)
    while port_base <= api_port < port_base + count:
        api_port = free_port_range(1)
    command = [
        sys.executable, "-m", "farm", "up",
        "--count", str(count), "--workers", str(workers),
        "--port-base", str(port_base), "--api-port", str(api_port),
        "--log-level", "warning",
    ]  # fmt: skip
    name = f"farm, {workers} worker{'s' if workers > 1 else ''}"
    return Server(name, command, count, port_base, api_port)


def ip_farm(servers: int, workers: int, first_ip: str, directory: Path) -> Server:
    """`servers` default devices named device-00000... at `first_ip` and the addresses after
    it, all on one free port (`ip_start` addressing: 10,000 consecutive free ports are
    rarely there on a shared machine); its config file is written in `directory`."""
    port = free_port_range(1)
    api_port = free_port_range(1)
    while api_port == port:
        api_port = free_port_range(1)
    config = directory / "fleet.yaml"
    config.write_text(
        "fleets:\n"
        f"  - {{name: default, template: default, count: {servers}, "
        f'name_pattern: "device-{{i:05d}}", addressing: {{ip_start: {first_ip}, port: {port}}}}}\n'
    )
    command = [
        sys.executable, "-m", "farm", "up", str(config), "--workers", str(workers),
        "--api-port", str(api_port), "--log-level", "warning",
    ]  # fmt: skip
    return Server(f"farm, {workers} workers", command, servers, port, api_port)


def ip_addresses(count: int, first_ip: str, port: int) -> list[tuple[str, int]]:
    """The addresses of an `ip_farm`'s first `count` servers."""
    first = int(ipaddress.IPv4Address(first_ip))
    return [(str(ipaddress.IPv4Address(first + i)), port) for i in range(count)]


def pymodbus_farm(count: int, uvloop: bool = False) -> Server:
    port_base = free_port_range(count)
    command = [sys.executable, "-m", "benchmarks.pymodbus_farm", "--count", str(count)]
    command += ["--port-base", str(port_base), *(["--uvloop"] if uvloop else [])]
    name = "pymodbus, 1 process" + (", uvloop" if uvloop else ", asyncio")
    return Server(name, command, count, port_base)


def responder(count: int) -> Server:
    port_base = free_port_range(count)
    command = [sys.executable, "-m", "benchmarks.responder", "--count", str(count)]
    command += ["--port-base", str(port_base)]
    return Server("minimal uvloop responder", command, count, port_base)
