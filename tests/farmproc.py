"""Test support: run a real `farm up` process, find free ports, wait on deadlines.

Everything here talks to the farm the way a user does: a subprocess, its API over HTTP,
and (in the tests) real Modbus masters on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from farm.master.supervision.supervisor import SupervisorOptions

T = TypeVar("T")
HOST = "127.0.0.1"

# Deadlines are what the design guarantees, with room for a loaded 2-core machine; tests
# print the figure they measured. A graceful stop: the Stop may wait stop_grace_s for the
# pipe and as long again for the exits, then a kill and a 2 s join, then the API's 2 s close.
_DESIGN = SupervisorOptions()
STOP_DEADLINE_S = 2 * (2 * _DESIGN.stop_grace_s + 2 + 2)
# A dead worker is respawned at once (its first crash) and must be Ready in boot_timeout_s.
RESTART_DEADLINE_S = _DESIGN.boot_timeout_s + 15
# A stuck one is found after heartbeat_timeout_s (checked twice a second), then restarted.
REPLACE_DEADLINE_S = _DESIGN.heartbeat_timeout_s + 1 + RESTART_DEADLINE_S


def wait_for(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what} (last error: {last_error!r})"
    )


def run_together(
    commands: Sequence[Sequence[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> list[subprocess.CompletedProcess[str]]:
    """Run commands that do not depend on one another at the same time, as many at once as
    this process may use CPUs (at least 2); their results in the commands' order.

    Most of a `farm` command's time is its imports (about a second of CPU): run one after
    another they keep one core busy and the others idle. Each command is the same real
    process it would be alone, with its own exit code, stdout and stderr.
    """

    def run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
        )

    at_once = max(2, len(os.sched_getaffinity(0)))
    with ThreadPoolExecutor(max_workers=at_once) as pool:
        return list(pool.map(run, commands))


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def refused(port: int, host: str = HOST, timeout: float = 2.0) -> bool:
    """Whether a connection to `port` is refused (nothing listens there): a server that is
    offline, stopped or gone. A connection accepted, or any other error, is False."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def squatter(port: int, host: str = HOST) -> socket.socket:
    """A listening socket on `port`, as another program taking it would be.

    SO_REUSEADDR: connections that a stopped farm closed leave TIME_WAIT entries on the
    port, and they would refuse a plain bind; two listeners still cannot share the port.
    """
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


# The last ranges handed out. A port is free when probed but only taken when a farm binds
# it, so without this record the next call could hand the same port out again (a farm's API
# port inside its own server range, say). Old ranges drop out: their farms are gone.
_RECENT: deque[range] = deque(maxlen=8)


def free_port_range(count: int) -> int:
    """A base port with `count` consecutive free ports, below the ephemeral range."""
    bases = list(range(10000, 30000 - count, 50))
    random.shuffle(bases)
    for base in bases:
        ports = range(base, base + count)
        taken = any(r.start < ports.stop and ports.start < r.stop for r in _RECENT)
        if not taken and all(port_free(port) for port in ports):
            _RECENT.append(ports)
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def free_port() -> int:
    return free_port_range(1)


def started_at_wall(pid: int) -> float:
    """When process `pid` started, as wall-clock time (its start in /proc, in clock ticks since
    boot, against the boot clock now): good to a tick, 10 ms."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        ticks = int(stat.read().rsplit(b")", 1)[1].split()[19])
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age


def proc_status(pid: int | str, field: str) -> str:
    """One field of /proc/PID/status ("self" for this process), as the text after its colon."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name == field:
                return value.strip()
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def descendants(pid: int) -> set[int]:
    """PIDs of every live (non-zombie) process below `pid`, from /proc.

    Read from each thread's list of children (/proc/PID/task/TID/children): a few small
    files, where reading every process's stat takes ~10-20 ms on a busy machine, and the
    autouse fixture asks twice a test. Kernels without those lists get the full scan.
    """
    if not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
        return _descendants_by_scan(pid)
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        for child in _children(frontier.pop()):
            if child not in found and _state(child) not in ("Z", None):
                found.add(child)
                frontier.append(child)
    return found


def _children(pid: int) -> set[int]:
    """Children of every thread of `pid` (a child's parent is the thread that forked it)."""
    children: set[int] = set()
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children") as listed:
                children.update(int(child) for child in listed.read().split())
        except OSError:
            continue
    return children


def _state(pid: int) -> str | None:
    """The process's state letter (Z: a zombie), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _descendants_by_scan(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@dataclass
class FarmProcess:
    """A `farm up` subprocess with its ports."""

    count: int
    workers: int
    port_base: int
    api_port: int
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    file: str | None = None  # a config file: then `count` is only what to expect ready
    ready_count: int | None = None  # servers wait_ready expects, when not `count`
    # How `farm` is run: `python -m farm`, or the console script a user types (`farm`).
    program: tuple[str, ...] = (sys.executable, "-m", "farm")

    def start(self) -> FarmProcess:
        source = ["--count", str(self.count), "--port-base", str(self.port_base)]
        if self.file is not None:
            source = [self.file]
        command = [
            *self.program, "up", *source,
            "--workers", str(self.workers),
            "--api-port", str(self.api_port),
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def port(self, index: int) -> int:
        return self.port_base + index

    def api(self, path: str, method: str = "GET") -> Any:
        """JSON from the API; a POST carries `{}` as JSON, as the API asks of every change."""
        status, body = self.http(method, path, b"{}" if method == "POST" else None)
        if status >= 400:
            raise AssertionError(f"{method} {path}: {status} {body}")
        return body

    def http(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One raw call to the API: (HTTP status, parsed JSON body), errors included.

        `data` goes as `application/json` unless `headers` name another Content-Type.
        """
        headers = dict(headers or {})
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(
            f"http://{HOST}:{self.api_port}{path}", method=method, data=data, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.load(error)

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.api("/api/v1/status")
        return result

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.process is not None
        process = self.process

        def ready() -> dict[str, Any] | None:
            if process.poll() is not None:
                return {"exited": process.returncode}  # out of the loop at once, not at timeout
            status: dict[str, Any] = self.status()
            return status if status["servers_ready"] == expected else None

        expected = self.count if self.ready_count is None else self.ready_count
        status = wait_for(ready, timeout, f"{expected} servers ready")
        if "exited" in status:
            raise AssertionError(f"farm exited early: {process.communicate()}")
        return status

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.status()["workers"]]

    def wait_settled(self, server: str = "device-0000", timeout: float = 15.0) -> None:
        """Wait until `server`'s live values move (default devices: input register 0 counts
        seconds). Its worker's ticker, built after Ready, then runs: right after ready a
        worker still grows by 3-11 MiB of RSS with no client at all (the ticker loads numpy),
        and holds still once the values move. A memory test takes its baseline after this."""
        path = f"/api/v1/servers/{server}/units/1/input_registers?address=0&count=1"
        first = self.api(path)["values"]
        wait_for(lambda: self.api(path)["values"] != first, timeout, f"{server}'s values to move")

    def stop(self, timeout: float = STOP_DEADLINE_S) -> tuple[int, str, str]:
        """SIGTERM the farm; returns (exit code, stdout, stderr)."""
        self.terminate()
        return self.stopped(timeout)

    def terminate(self) -> None:
        """Ask the farm to stop (SIGTERM), once: `stopped` waits for it. Several farms
        asked first, then waited for, stop side by side. A second SIGTERM must not follow:
        near its exit the farm has put back the default action, which kills it."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stopped(self, timeout: float = STOP_DEADLINE_S) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) once the farm asked to stop has exited; killed (and
        the timeout raised) if it has not within `timeout` seconds."""
        assert self.process is not None
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return self.process.returncode, stdout, stderr

    def kill(self) -> None:
        """Last resort for a test that failed midway: kill the farm and its workers by PID."""
        if self.process is None:
            return
        for pid in descendants(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=10)


def scalable_farm(
    count: int, room: int, workers: int = 2, extra: list[str] | None = None
) -> FarmProcess:
    """A ready farm of `count` servers with ports kept free for it to grow to `room`."""
    for attempt in range(3):
        port_base = free_port_range(room)
        api_port = free_port()
        running = FarmProcess(
            count=count, workers=workers, port_base=port_base, api_port=api_port, extra=extra or []
        )
        running.start()
        try:
            running.wait_ready()
            return running
        except AssertionError as error:
            running.kill()
            if "already in use" not in str(error) or attempt == 2:
                raise
    raise AssertionError("unreachable")
