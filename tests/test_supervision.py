"""The master keeps the farm up: kill -9, SIGSTOP, busy ports, graceful stops, the CLI."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from multiprocess import shared_memory
from pymodbus.client import ModbusTcpClient

from farm.config.plan import build_plan, default_servers
from farm.config.templates import default_template
from farm.errors import BootError
from farm.master.supervision.listeners import bind_all
from farm.master.supervision.supervisor import Supervisor, SupervisorOptions
from tests.conftest import make_farm, ready_farm, start_farm
from tests.farmproc import (
    HOST,
    REPLACE_DEADLINE_S,
    RESTART_DEADLINE_S,
    STOP_DEADLINE_S,
    FarmProcess,
    free_port,
    free_port_range,
    port_free,
    squatter,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)


def read_once(
    port: int, address: int = 0, count: int = 1, timeout: float = 1.0
) -> list[int] | None:
    client = ModbusTcpClient(HOST, port=port, timeout=timeout, retries=0)
    try:
        if not client.connect():
            return None
        response = client.read_holding_registers(address, count=count)
        return None if response.isError() else list(response.registers)
    except Exception:
        return None
    finally:
        client.close()


def write_once(port: int, address: int, values: list[int]) -> None:
    client = ModbusTcpClient(HOST, port=port, timeout=3, retries=0)
    assert client.connect()
    try:
        assert not client.write_registers(address, values).isError()
    finally:
        client.close()


class Poller(threading.Thread):
    """Reads one server over one connection until told to stop; bounded in time and count."""

    def __init__(self, port: int, limit_s: float = 60.0, max_requests: int = 200_000) -> None:
        super().__init__(daemon=True)
        self.port, self.limit_s, self.max_requests = port, limit_s, max_requests
        self.done = threading.Event()
        self.ok = 0
        self.failures: list[str] = []

    def run(self) -> None:
        # A timeout far beyond any answer's time: a failure here is a real stall.
        client = ModbusTcpClient(HOST, port=self.port, timeout=10, retries=0)
        client.connect()
        deadline = time.monotonic() + self.limit_s
        try:
            while (
                not self.done.is_set()
                and time.monotonic() < deadline
                and self.ok < self.max_requests
            ):
                try:
                    response = client.read_holding_registers(0, count=1)
                    if response.isError():
                        self.failures.append(str(response))
                    else:
                        self.ok += 1
                except Exception as exc:
                    self.failures.append(repr(exc))
                time.sleep(0.005)
        finally:
            client.close()


@pytest.fixture
def farm4() -> FarmProcess:
    return ready_farm(4, workers=2)


def test_kill_9_worker_restarts_and_keeps_values(farm4: FarmProcess) -> None:
    farm = farm4
    try:
        farm.wait_ready()
        # Shard i mod 2: servers 0 and 2 live in worker 0, servers 1 and 3 in worker 1.
        write_once(farm.port(0), 10, [101, 102, 103])
        write_once(farm.port(2), 10, [201])
        bystander = Poller(farm.port(1))
        bystander.start()
        wait_for(lambda: bystander.ok > 5, 10, "the bystander poller to get going")
        victim = farm.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(
            lambda: read_once(farm.port(0), 10, 3) == [101, 102, 103],
            RESTART_DEADLINE_S,
            "server 0 back",
        )
        restarted_in = time.monotonic() - killed_at
        print(f"worker 0 answered again {restarted_in:.2f} s after kill -9")
        assert read_once(farm.port(2), 10, 1) == [201]
        status = wait_for(
            lambda: (s := farm.status())["servers_ready"] == 4 and s,
            RESTART_DEADLINE_S,
            "all ready",
        )
        assert status["workers"][0]["restarts"] == 1 and status["workers"][0]["pid"] != victim
        with open(f"/proc/{status['workers'][0]['pid']}/comm") as comm:  # spawned, named too
            assert comm.read().strip() == "farm-worker-0"
        ok_before = bystander.ok
        wait_for(lambda: bystander.ok > ok_before + 5, 30, "the bystander to keep reading")
        bystander.done.set()
        bystander.join(10)
        assert bystander.failures == [], bystander.failures[:3]
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    assert "died" in stderr and "Traceback" not in stderr


def test_stuck_worker_is_replaced(farm4: FarmProcess) -> None:
    farm = farm4
    try:
        farm.wait_ready()
        write_once(farm.port(1), 0, [77])
        victim = farm.worker_pids()[1]
        os.kill(victim, signal.SIGSTOP)
        stopped_at = time.monotonic()
        wait_for(
            lambda: farm.worker_pids()[1] not in (victim, None) and read_once(farm.port(1)) == [77],
            REPLACE_DEADLINE_S,
            "the stopped worker to be replaced",
        )
        print(f"SIGSTOPped worker replaced and answering in {time.monotonic() - stopped_at:.2f} s")
        wait_for(
            lambda: not os.path.exists(f"/proc/{victim}") or _zombie(victim), 5, "old pid gone"
        )
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    assert "no heartbeat" in stderr


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_graceful_stop_releases_everything(signum: int) -> None:
    farm = start_farm(6, workers=2)
    farm.wait_ready()
    workers = farm.worker_pids()
    client = ModbusTcpClient(HOST, port=farm.port(0), timeout=2, retries=0)
    assert client.connect() and not client.read_holding_registers(0, count=1).isError()
    assert farm.process is not None
    farm.process.send_signal(signum)
    sent = time.monotonic()
    farm.process.wait(timeout=STOP_DEADLINE_S)  # the requirement: it stops by itself, in time
    took = time.monotonic() - sent
    code, _, stderr = farm.stop(timeout=10)
    client.close()
    assert code == 0, stderr
    print(f"stopped {took:.2f} s after {signal.Signals(signum).name}")
    assert "Traceback" not in stderr and "farm stopped" in stderr
    assert all(port_free(farm.port(i)) for i in range(6))
    assert port_free(farm.api_port)
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)


def start_with_port_taken(farm: FarmProcess, port: int) -> tuple[int, str]:
    """Start `farm` while something else listens on `port`; its exit code and stderr."""
    blocker = squatter(port)
    try:
        farm.start()
        assert farm.process is not None
        _, stderr = farm.process.communicate(timeout=30)
    finally:
        blocker.close()
    return farm.process.returncode, stderr


def test_busy_port_is_one_clear_line() -> None:
    farm = make_farm(5, workers=2)
    code, stderr = start_with_port_taken(farm, farm.port(3))
    assert code not in (0, None)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert f"{HOST}:{farm.port(3)}" in lines[0] and "already in use" in lines[0]
    assert "Traceback" not in stderr


def test_busy_api_port_is_one_clear_line() -> None:
    farm = make_farm(3, workers=1)
    code, stderr = start_with_port_taken(farm, farm.api_port)
    assert code not in (0, None)
    assert f"{farm.api_port}" in stderr and "--api-port" in stderr and "Traceback" not in stderr
    assert all(port_free(farm.port(i)) for i in range(3))


def test_cli_status_and_down() -> None:
    farm = start_farm(4, workers=2)
    try:
        farm.wait_ready()
        api = ["--api-port", str(farm.api_port)]
        status = subprocess.run(
            [sys.executable, "-m", "farm", "status", *api],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stderr
        assert "servers ready 4 / 4" in status.stdout and "ready" in status.stdout
        down = subprocess.run(
            [sys.executable, "-m", "farm", "down", *api], capture_output=True, text=True, timeout=30
        )
        assert down.returncode == 0, down.stderr
        assert farm.process is not None
        # `farm down` returns once the farm is gone: the master has exited, every port is free
        assert farm.process.poll() == 0
        assert all(port_free(farm.port(i)) for i in range(4)) and port_free(farm.api_port)
    finally:
        farm.stop()


@pytest.mark.parametrize("command", ["status", "down", "prometheus-config"])
def test_cli_without_a_farm_is_one_clear_line(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "farm", command, "--api-port", str(free_port())],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no farm answers" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


START_PHASES = ("launching", "binding", "spawning", "assigning", "serving", "ready")
PHASE_HOST = "127.86.0.1"  # test_sigterm_while_starting_stops_cleanly's farms only


def start_phase(farm: FarmProcess, host: str = HOST) -> str:
    """Where a starting farm is, as a user can see it from outside.

    launching: nothing listens yet (the worker processes, which `farm up` starts first
    thing, boot meanwhile). binding: the master listens on the servers' ports (it binds them
    all, then builds the banks) and its API does not answer yet. spawning: the API answers and
    no worker serves a server yet. assigning: workers serve some servers, not all of them yet.
    ready: every server is up. Before the API answers, the first and the last server (the
    last two its worker starts) answer a Modbus request or not.
    """
    try:
        status = farm.status()
    except OSError:  # URLError included: the API is not listening yet
        try:
            socket.create_connection((host, farm.port(0)), timeout=1).close()
        except OSError:
            return "launching"
        first, last = answers(farm.port(0), host), answers(farm.port(farm.count - 1), host)
        if first and last:
            return "serving"  # before the API answers: not ready to a user yet
        return "assigning" if first or last else "binding"
    if status["servers_ready"] == status["servers_total"]:
        return "ready"
    serving = any(w["servers_up"] for w in status["workers"])
    return "assigning" if serving else "spawning"


def answers(port: int, host: str = HOST, timeout: float = 0.02) -> bool:
    """Whether the server on `port` answers a Modbus request now (the kernel accepts a
    connection to a port no worker serves yet, and nothing answers it)."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(bytes.fromhex("000100000006010300000001"))  # FC 3, 1 register
            sock.settimeout(timeout)
            return bool(sock.recv(64))
    except OSError:  # TimeoutError included
        return False


def sigterm_in_phase(farm: FarmProcess, phase: str, host: str = HOST) -> str:
    """Send SIGTERM as soon as the start is seen in `phase`, or past it; the phase seen."""
    assert farm.process is not None
    target = START_PHASES.index(phase)

    def reached() -> str | None:
        assert farm.process is not None
        if farm.process.poll() is not None:
            return "exited"
        seen = start_phase(farm, host)
        return seen if START_PHASES.index(seen) >= target else None

    seen = wait_for(reached, 60, f"the start to reach {phase}", interval=0.005)
    if seen == "exited":
        _, stderr = farm.process.communicate()
        if "already in use" in stderr:  # another program took a port between probe and bind
            return "port taken"
        pytest.fail(f"the farm exited during its start: {stderr}")
    farm.process.send_signal(signal.SIGTERM)
    return seen


@pytest.mark.parametrize("phase", ["binding", "spawning", "assigning"])
def test_sigterm_while_starting_stops_cleanly(phase: str) -> None:
    """However far the start got (binding, spawning, assigning), SIGTERM ends it cleanly.

    The start is watched from outside and the signal sent once it is seen in `phase`. A
    phase can pass between two looks (assigning lasts a few tens of milliseconds): then the
    signal lands later, the stop is still checked, and the test tries again with a new farm
    (up to 12). 3,000 servers: the workers boot before the master binds, so spawning and
    assigning last only as long as handing out and building their servers takes. They listen
    on a loopback address of their own (PHASE_HOST), where 3,000 consecutive ports are free
    whatever the other tests hold on 127.0.0.1.
    """
    landed = []
    for _ in range(12):
        base = next(
            base
            for base in random.sample(range(10000, 27000, 50), 340)
            if all(port_free(base + i, PHASE_HOST) for i in range(0, 3000, 100))
        )
        farm = FarmProcess(
            count=3000,
            workers=2,
            port_base=base,
            api_port=free_port(),
            extra=["--host", PHASE_HOST],
        ).start()
        assert farm.process is not None
        seen = sigterm_in_phase(farm, phase, PHASE_HOST)
        if seen == "port taken":  # a machine shared with other test runs: try other ports
            landed.append(seen)
            continue
        sent = time.monotonic()
        farm.process.wait(timeout=STOP_DEADLINE_S)  # the requirement: it stops, in time
        took = time.monotonic() - sent
        code, _, stderr = farm.stop(timeout=10)
        assert code == 0, stderr
        assert "Traceback" not in stderr and "leaked" not in stderr, stderr
        assert all(port_free(farm.port(i), PHASE_HOST) for i in (0, 1500, 2999))
        landed.append(seen)
        if seen == phase:
            print(f"SIGTERM while {phase}: stopped in {took:.2f} s (tries: {landed})")
            return
    pytest.fail(f"never caught the start while {phase}: the signal landed in {landed}")


def test_worker_that_cannot_boot_stops_the_farm_without_restart_loop() -> None:
    """A worker that exits "could not boot" is not restarted: the farm stops, saying why."""
    template = default_template()
    requests = default_servers(4, HOST, free_port_range(4), template.name)
    plan = build_plan(requests, {template.name: template}, workers=2)
    sockets = bind_all(plan.servers())

    async def main() -> None:
        supervisor = Supervisor(plan, sockets, SupervisorOptions())
        supervisor.initialize()  # the master wrote the starting values (start would now)
        # Someone removed worker 0's banks from /dev/shm: it can never attach them.
        shared_memory.SharedMemory(name=supervisor.slots[0].segment.name).unlink()
        try:
            with pytest.raises(BootError, match="worker 0 could not boot"):
                await asyncio.wait_for(supervisor.start(), 60)
            assert supervisor.slots[0].restarts == 0  # died once, and was not restarted
        finally:
            await supervisor.stop()

    asyncio.run(main())
