"""Faults outlive their workers, log their lives, and are guarded by the API's token."""

from __future__ import annotations

import os
import signal
import urllib.error
import urllib.request

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.pdu import ExceptionResponse

from farm.client import FarmAPIError, FarmClient
from tests.conftest import start_farm
from tests.farmproc import HOST, FarmProcess, wait_for

pytestmark = pytest.mark.timeout(120)


def exception_code(farm: FarmProcess, index: int) -> int | None:
    client = ModbusTcpClient(HOST, port=farm.port(index), timeout=2, retries=0)
    try:
        if not client.connect():
            return None
        response = client.read_holding_registers(0, count=1)
    finally:
        client.close()
    return response.exception_code if isinstance(response, ExceptionResponse) else -1


def test_a_fault_survives_kill_9_of_its_worker_and_every_change_is_logged() -> None:
    farm = start_farm(4, workers=2)
    try:
        farm.wait_ready()
        api = FarmClient.at(HOST, farm.api_port)
        # Server i is hosted by worker i mod 2: servers 0 and 2 by worker 0.
        fault = api.fault("exception", target=["device-0000", "device-0002"], code=6)
        later = api.fault(
            "exception", target="device-0001", code=4, start_in="300ms", duration="1s"
        )
        worker = next(w for w in farm.status()["workers"] if w["worker"] == 0)
        os.kill(worker["pid"], signal.SIGKILL)

        def replaced() -> bool:
            now = next(w for w in farm.status()["workers"] if w["worker"] == 0)
            return bool(now["pid"] != worker["pid"] and now["state"] == "ready")

        wait_for(replaced, 30, "worker 0 to be replaced")
        assert exception_code(farm, 0) == 6 and exception_code(farm, 2) == 6
        assert exception_code(farm, 3) == -1  # worker 1's servers answer normally
        wait_for(lambda: len(api.faults()) == 1, 10, "the 1 s fault to expire")
        api.clear_fault(fault.id)
        assert exception_code(farm, 0) == -1
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    for line in (
        f"fault {fault.id} applied: exception code=6 on 2 servers (device-0000, device-0002)",
        f"fault {later.id} applied: exception code=4 on 1 server (device-0001), starts in 0.3 s, "
        "for 1 s",
        f"fault {later.id} started: exception code=4 on 1 server (device-0001)",
        f"fault {later.id} expired",
        f"fault {fault.id} cleared",
    ):
        assert line in " ".join(stderr.split()), stderr


def post(farm: FarmProcess, method: str, path: str, body: bytes, token: str | None) -> int:
    request = urllib.request.Request(
        f"http://{HOST}:{farm.api_port}{path}", method=method, data=body
    )
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_fault_endpoints_refuse_without_the_token() -> None:
    farm = start_farm(2, workers=1, extra=["--api-token", "s3cret"])
    try:
        farm.wait_ready()
        body = b'{"kind": "exception", "code": 6, "target": {"servers": ["device-0000"]}}'
        for token in (None, "wrong"):
            assert post(farm, "POST", "/api/v1/faults", body, token) == 401
        assert FarmClient.at(HOST, farm.api_port).faults() == []  # GETs stay open
        assert exception_code(farm, 0) == -1  # nothing changed
        api = FarmClient.at(HOST, farm.api_port, token="s3cret")
        fault = api.fault("exception", target="device-0000", code=6)
        for method, path in (
            ("DELETE", f"/api/v1/faults/{fault.id}"),
            ("DELETE", "/api/v1/faults"),
        ):
            assert post(farm, method, path, b"", None) == 401
        assert [each.id for each in api.faults()] == [fault.id]
        with pytest.raises(FarmAPIError) as refused:
            FarmClient.at(HOST, farm.api_port).clear_faults()
        assert refused.value.status == 401
        assert exception_code(farm, 0) == 6
        assert api.clear_faults() == [fault.id]
    finally:
        code, _, stderr = farm.stop()
    assert code == 0, stderr
    assert "s3cret" not in stderr
