"""Neither end of the pipe blocks its loop: a worker that stops reading is replaced while the
API answers, and thousands of faults come and go without a stall.

Real `farm up` processes, a real SIGSTOP, pymodbus as the Modbus master.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient

from tests.conftest import ready_farm
from tests.farmproc import HOST, REPLACE_DEADLINE_S, FarmProcess, wait_for

pytestmark = pytest.mark.timeout(300)
READ_ROUTES = ("/api/v1/status", "/api/v1/servers", "/api/v1/live")
ANSWER_S = 1.0  # what a read route must answer within, whatever a worker does


def name(index: int) -> str:
    return f"device-{index:04d}"


def post_fault(farm: FarmProcess, body: dict[str, Any]) -> int:
    status, answer = farm.http("POST", "/api/v1/faults", json.dumps(body).encode())
    assert status == 200, answer
    return int(answer["id"])


class Prober(threading.Thread):
    """Calls `probe` again and again until stopped; keeps the slowest call, and failures."""

    def __init__(self, probe: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.probe = probe
        self.slowest = 0.0
        self.failures: list[str] = []
        self.calls = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            began = time.monotonic()
            try:
                self.probe()
            except Exception as exc:
                self.failures.append(repr(exc))
            self.slowest = max(self.slowest, time.monotonic() - began)
            self.calls += 1
            time.sleep(0.02)

    def stop(self) -> None:
        self.done.set()
        self.join(10)


def read_route(farm: FarmProcess, path: str) -> None:
    status, _ = farm.http("GET", path)
    assert status < 500, path


def code_at(client: ModbusTcpClient, address: int) -> int | None:
    """The exception code of an FC 4 read of one input register (None: it answered)."""
    answer = client.read_input_registers(address, count=1)
    return answer.exception_code if answer.isError() else None


def logged(tmp_path: Path) -> list[str]:
    """`farm up` options that send its log to a file: a log of thousands of lines would fill
    a stderr pipe that nobody reads until the farm stops."""
    return ["--log-file", str(tmp_path / "farm.log")]


def test_a_sigstopped_worker_is_replaced_with_every_fault_while_the_api_answers(
    tmp_path: Path,
) -> None:
    farm = ready_farm(4, workers=2, extra=logged(tmp_path))
    stopped: int | None = None
    try:
        worker = 1  # serves device-0001 and device-0003
        client = ModbusTcpClient(HOST, port=farm.port(1), timeout=3, retries=0)
        assert client.connect()
        assert not client.write_registers(10, [4321, 1234]).isError()
        client.close()
        before = farm.status()["workers"][worker]
        stopped = before["pid"]
        os.kill(stopped, signal.SIGSTOP)
        probers = [Prober(functools.partial(read_route, farm, path)) for path in READ_ROUTES]
        for prober in probers:
            prober.start()
        began = time.monotonic()
        target = {"servers": [name(1), name(3)]}
        bodies = [
            {
                "kind": "exception",
                "code": 4 if address % 2 else 6,
                "target": target,
                "function_codes": [4],
                "addresses": {"start": address, "end": address},
            }
            for address in range(200)
        ]
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda body: post_fault(farm, body), bodies))
        print(f"200 faults applied in {time.monotonic() - began:.1f} s")

        def replaced() -> bool:
            now = farm.status()["workers"][worker]
            return bool(now["restarts"] > before["restarts"] and now["state"] == "ready")

        wait_for(replaced, REPLACE_DEADLINE_S, "the stopped worker to be replaced")
        for path, prober in zip(READ_ROUTES, probers, strict=True):
            prober.stop()
            print(f"{path}: {prober.calls} calls, slowest {prober.slowest:.3f} s")
            assert not prober.failures, prober.failures[:3]
            assert prober.slowest < ANSWER_S, (path, prober.slowest)
        assert len(ids) == len(set(ids)) == 200
        shown = farm.status()["workers"][worker]["last_failure"]
        assert "heartbeat" in shown or "pipe" in shown, shown
        for index in (1, 3):
            client = ModbusTcpClient(HOST, port=farm.port(index), timeout=3, retries=0)
            assert client.connect()
            try:
                codes = [code_at(client, address) for address in range(200)]
                assert codes == [4 if address % 2 else 6 for address in range(200)]
                assert code_at(client, 200) is None
                if index == 1:
                    assert client.read_holding_registers(10, count=2).registers == [4321, 1234]
            finally:
                client.close()
    finally:
        if stopped is not None:  # gone already when it was replaced
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
        code, _, stderr = farm.stop()
        assert code == 0, stderr[-3000:]


def test_five_thousand_faults_on_one_device_clear_and_expire_at_once(tmp_path: Path) -> None:
    farm = ready_farm(2, workers=1, extra=logged(tmp_path))
    try:
        adding_s = apply_and_end(farm, "cleared", lasting_s=None)
        # All 5,000 must still be running when the last is added: they last three times
        # what adding them took here, and at least 10 s (60 s at most, the old fixed wait).
        apply_and_end(farm, "expired", lasting_s=min(60.0, max(10.0, 3 * adding_s + 5)))
    finally:
        code, _, stderr = farm.stop()
        assert code == 0, stderr[-3000:]


def apply_and_end(farm: FarmProcess, how: str, lasting_s: float | None) -> float:
    """5,000 faults on device-0000, then all cleared at once or all expiring at once (after
    `lasting_s`): every device answers throughout, and they are all gone within 2 s.
    Returns how long adding them took."""
    count, gone_s = 5000, 2.0
    # "expired": all end at this moment, wherever added
    ends_at = time.monotonic() + (lasting_s or 60.0)
    body: dict[str, Any] = {
        "kind": "exception",
        "code": 6,
        "target": {"servers": [name(0)]},
        "function_codes": [4],
        "addresses": {"start": 0, "end": 0},
    }
    began = time.monotonic()
    with ThreadPoolExecutor(4) as pool:

        def add(_: int) -> int:
            if how == "expired":
                return post_fault(farm, {**body, "duration": ends_at - time.monotonic()})
            return post_fault(farm, body)

        list(pool.map(add, range(count)))
    adding_s = time.monotonic() - began
    print(f"{count} faults added in {adding_s:.1f} s")
    faulted = ModbusTcpClient(HOST, port=farm.port(0), timeout=3, retries=0)
    neighbour = ModbusTcpClient(HOST, port=farm.port(1), timeout=3, retries=0)
    assert faulted.connect() and neighbour.connect()
    probers = [
        Prober(lambda: _answers(neighbour, 0)),
        Prober(lambda: _answers(faulted, 1)),  # another address: no fault matches
    ]
    try:
        assert code_at(faulted, 0) == 6
        for prober in probers:
            prober.start()
        if how == "cleared":
            began = time.monotonic()
            status, answer = farm.http("DELETE", "/api/v1/faults", b"{}")
            assert status == 200, answer
            assert len(answer["cleared"]) == count
        else:
            assert ends_at > time.monotonic(), "adding took longer than the faults last"
            time.sleep(max(0.0, ends_at - time.monotonic()))
            began = time.monotonic()
        wait_for(lambda: farm.api("/api/v1/faults")["faults"] == [], gone_s, f"faults {how}")
        wait_for(lambda: code_at(faulted, 0) is None, gone_s, "the device without faults")
        took = time.monotonic() - began
        assert took < gone_s, took
        time.sleep(0.5)
        for prober in probers:
            prober.stop()
        print(f"{how}: all gone in {took:.2f} s; slowest reads {[p.slowest for p in probers]}")
        for prober in probers:
            assert not prober.failures, prober.failures[:3]
            assert prober.slowest < ANSWER_S, prober.slowest
    finally:
        for prober in probers:
            prober.stop()
        faulted.close()
        neighbour.close()
    return adding_s


def _answers(client: ModbusTcpClient, address: int) -> None:
    assert not client.read_input_registers(address, count=1).isError()
