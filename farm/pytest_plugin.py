"""The farm as a pytest fixture: `modbus_farm` starts one for a test, and stops it after.

Installed with the package (the `pytest11` entry point in pyproject.toml), so any test suite
in an environment that has modbus-farm can write:

    def test_scada_survives_offline_meter(modbus_farm):
        farm = modbus_farm(count=20)            # or modbus_farm("plant.yaml")
        host, port = farm.address("device-0003")
        farm.client.fault("offline", target="device-0003", duration="2s")

`modbus_farm` is a factory: each call runs `farm up` as a subprocess on free ports (a
config file's fleets are moved to free ports too, in a copy of the file), waits until every
server is up, and returns a `RunningFarm` with `.client` (a farm.client.FarmClient),
`.address(name)`, `.addresses()` and `.wait_for_write(server, point=..., value=...)` (the
write journal: returns the matching write or fails the test with the server's journal).
After the test, passed or failed, every farm it started is stopped (SIGTERM, then SIGKILL
for anything left after a grace period, by PID: the master and its workers).
`modbus_farm_session` is the same factory for the whole session.

A client of the farm like any other (farm.client); it imports neither master nor worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from farm.client import FarmClient
from farm.client.observed import WriteMatch, WriteRecord, journal_text
from farm.config.schema import read
from farm.errors import FarmError

START_TIMEOUT_S = 60.0
WRITE_POLL_S = 0.02
STOP_GRACE_S = 10.0
HOST = "127.0.0.1"


@dataclass
class RunningFarm:
    """One farm started by the fixture."""

    client: FarmClient
    process: subprocess.Popen[bytes]
    log_path: Path
    _addresses: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def address(self, name: str) -> tuple[str, int]:
        """(host, port) of the server `name` (as the farm reports it)."""
        if name not in self._addresses:
            self._addresses = {s.name: s.host_port for s in self.client.servers()}
        if name not in self._addresses:
            raise KeyError(f"no server {name!r} in this farm")
        return self._addresses[name]

    def addresses(self) -> dict[str, tuple[str, int]]:
        """Every server's (host, port), by name (asked of the farm: a scaled fleet's too)."""
        self._addresses = {s.name: s.host_port for s in self.client.servers()}
        return dict(self._addresses)

    def wait_for_write(
        self,
        server: str,
        *,
        point: str | None = None,
        value: float | str | None = None,
        table: str | None = None,
        address: int | None = None,
        values: list[int] | tuple[int, ...] | None = None,
        client: str | None = None,
        after: int = 0,
        timeout: float = 2.0,
    ) -> WriteRecord:
        """The first write to `server` (numbered above `after`) that matches, as soon as it
        is journalled; fails the test with the server's journal if none comes in `timeout`.

            farm.wait_for_write("meter-0005", point="setpoint", value=42, timeout=2)
            farm.wait_for_write("meter-0005", table="holding_registers", address=10, values=[1, 2])
        """
        wanted = WriteMatch(
            point=point,
            value=value,
            table=table,
            address=address,
            values=None if values is None else tuple(values),
            client=client,
        )
        deadline = time.monotonic() + timeout
        while True:
            journal = self.client.writes(server, after=after)
            found = next((write for write in journal if wanted.matches(write)), None)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                pytest.fail(
                    f"no write to {server} matching {wanted} within {timeout:g} s; "
                    f"its journal:\n{journal_text(journal)}",
                    pytrace=False,
                )
            time.sleep(WRITE_POLL_S)

    def log(self) -> str:
        """What `farm up` printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")


class FarmFactory:
    """`modbus_farm(...)`: starts farms, and stops every one of them at `close`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.farms: list[RunningFarm] = []

    def __call__(
        self,
        config: str | os.PathLike[str] | None = None,
        *,
        count: int | None = None,
        workers: int = 2,
        token: str | None = None,
        args: tuple[str, ...] = (),
        timeout: float = START_TIMEOUT_S,
    ) -> RunningFarm:
        """A farm of `count` default devices, or from the config file `config` (its fleets
        moved to free ports; `count` then scales them), ready when this returns."""
        if config is None and count is None:
            raise ValueError("modbus_farm() needs a config file or count=N")
        api_port = _free_ports(1)
        command = [sys.executable, "-m", "farm", "up"]
        if config is None:
            assert count is not None
            command += ["--count", str(count), "--port-base", str(_free_ports(count, api_port))]
        else:
            command.append(str(self._relocated(Path(config), api_port)))
            # The copy's replay CSVs are the original's, outside the copy's directory.
            command += ["--allow-outside", str(Path(config).resolve().parent)]
            command += [] if count is None else ["--count", str(count)]
        command += ["--workers", str(workers), "--api-port", str(api_port), *args]
        if token:
            command += ["--api-token", token]
        number = len(self.farms)
        log_path = self.directory / f"farm-{number}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        farm = RunningFarm(FarmClient.at(HOST, api_port, token), process, log_path)
        self.farms.append(farm)
        _wait_ready(farm, timeout)
        return farm

    def close(self) -> None:
        """Stop every farm started here; raise if one could not be stopped."""
        problems = []
        for farm in self.farms:
            problem = _stop(farm)
            if problem:
                problems.append(problem)
        self.farms.clear()
        if problems:
            raise RuntimeError("; ".join(problems))

    def _relocated(self, source: Path, avoid: int) -> Path:
        """A copy of the config file with its fleets on free ports (its paths absolute)."""
        data = read(source)
        if not isinstance(data, dict):
            return source  # let `farm up` say what is wrong with it
        for fleet in data.get("fleets") or []:
            addressing = fleet.get("addressing") or {}
            if "port_start" in addressing:
                start, count = int(addressing["port_start"]), int(fleet.get("count", 1))
                span = (
                    int(addressing["port_end"]) - start + 1 if "port_end" in addressing else count
                )
                base = _free_ports(max(span, 1), avoid)
                addressing.update(port_start=base, port_end=base + span - 1)
            elif "ip_start" in addressing:
                addressing["port"] = _free_ports(1, avoid)
        _absolute_paths(data, source.parent.resolve())
        copy = self.directory / f"farm-{len(self.farms)}{source.suffix or '.yaml'}"
        if source.suffix.lower() == ".toml":
            copy = copy.with_suffix(".yaml")
        copy.write_text(yaml.safe_dump(data, sort_keys=False))
        return copy


@pytest.fixture
def modbus_farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FarmFactory]:
    """Start farms for one test: `modbus_farm(count=20)` or `modbus_farm("plant.yaml")`."""
    factory = FarmFactory(tmp_path_factory.mktemp("modbus_farm"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def modbus_farm_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FarmFactory]:
    """`modbus_farm` for a whole session: farms live until the last test is done."""
    factory = FarmFactory(tmp_path_factory.mktemp("modbus_farm_session"))
    try:
        yield factory
    finally:
        factory.close()


def _wait_ready(farm: RunningFarm, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if farm.process.poll() is not None:
            raise FarmError(f"farm up exited with {farm.process.returncode}: {farm.log()[-2000:]}")
        with contextlib.suppress(FarmError):
            if farm.client.ready():
                return
        time.sleep(0.1)
    _stop(farm)
    raise FarmError(f"the farm was not ready after {timeout:g} s: {farm.log()[-2000:]}")


def _stop(farm: RunningFarm) -> str:
    """SIGTERM the farm, wait, then SIGKILL what is left of it; '' or what went wrong."""
    process = farm.process
    children = _descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_GRACE_S)
    deadline = time.monotonic() + STOP_GRACE_S
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _alive(children)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if left:
        return f"farm {process.pid} left processes {sorted(left)} (killed)"
    return ""


def _descendants(pid: int) -> set[int]:
    """Live processes below `pid`, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
                if fields[0] != "Z":
                    parents[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] != "Z":
                alive.add(pid)
    return alive


def _free_ports(count: int, avoid: int = 0) -> int:
    """A base port with `count` consecutive free ports on 127.0.0.1 (not `avoid`)."""
    first, last = 10000, 30000 - count  # below the ephemeral range
    # Test processes side by side start their search at different places.
    offset = (os.getpid() * 7919 + time.monotonic_ns() // 1000) % max(1, last - first)
    for step in range(0, last - first, 97):
        base = first + (offset + step) % max(1, last - first)
        ports = range(base, base + count)
        if avoid not in ports and all(_port_free(port) for port in ports):
            return base
    raise FarmError(f"no {count} consecutive free ports on {HOST}")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _absolute_paths(data: dict[str, Any], base: Path) -> None:
    """Replay CSV and TLS paths are relative to the config file: absolute in the copy."""
    behaviours: list[Any] = []
    for template in (data.get("templates") or {}).values():
        for point in template.get("points") or []:
            behaviours.append(point.get("behaviour"))
    for fleet in data.get("fleets") or []:
        behaviours.extend((fleet.get("overrides") or {}).values())
    for behaviour in behaviours:
        if isinstance(behaviour, dict) and isinstance(behaviour.get("csv"), str):
            behaviour["csv"] = str(base / behaviour["csv"])
    for fleet in data.get("fleets") or []:
        tls = fleet.get("tls")
        for key in ("certificate", "key", "client_ca"):
            if isinstance(tls, dict) and isinstance(tls.get(key), str):
                tls[key] = str(base / tls[key])


__all__ = ["FarmFactory", "RunningFarm", "modbus_farm", "modbus_farm_session"]
