"""The write journal (farm.ipc.journal): every write a client or the farm made to a server, seen
through `farm writes`, the API, the Python client and the fixture's `wait_for_write`, with
the client's address; kept across a worker's kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.pdu.file_message import FileRecord

from farm.client import FarmClient
from farm.config.templates import Table
from farm.ipc.journal import CLIENT_RECORDS, FARM_PEER, SERVER_BYTES, Peer, ServerJournal
from tests.conftest import config_farm
from tests.farmproc import HOST, FarmProcess, wait_for

SERVERS = 8


def config(port: int) -> str:
    return f"""
seed: 5
templates:
  meter:
    units:
      - {{unit_id: 1, coils: 16, discrete_inputs: 16, holding_registers: 200, input_registers: 10}}
    points:
      - {{name: setpoint, table: holding_registers, address: 10, type: uint16, value: 7}}
      - {{name: limit, table: holding_registers, address: 20, type: float32, value: 1.5}}
      - {{name: pump, table: coils, address: 3, type: bool}}
      - {{name: serial, table: holding_registers, address: 30, type: uint16, writable: false}}
    files:
      - {{number: 4, records: 10, values: [0, 0x0DFE, 0x0020]}}
fleets:
  - {{name: meters, template: meter, count: {SERVERS}, name_pattern: "meter-{{i:04d}}",
     addressing: {{host: 127.0.0.1, port_start: {port}, port_end: {port + SERVERS - 1}}}}}
"""


@pytest.fixture(scope="module")
def farm() -> Iterator[FarmProcess]:
    with config_farm(config, SERVERS) as running:
        yield running


def api(farm: FarmProcess) -> FarmClient:
    return FarmClient.at(HOST, farm.api_port)


def modbus(farm: FarmProcess, name: str) -> ModbusTcpClient:
    host, port = api(farm).server(name).info.host_port
    client = ModbusTcpClient(host, port=port, timeout=3, retries=0)
    assert client.connect()
    return client


def local_address(client: ModbusTcpClient) -> str:
    host, port = client.socket.getsockname()[:2]  # type: ignore[union-attr]
    return f"{host}:{port}"


def cli(farm: FarmProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm", *args, "--api-port", str(farm.api_port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_pymodbus_write_is_seen_everywhere_within_100_ms(farm: FarmProcess) -> None:
    client = api(farm)
    after = client.writes("meter-0005")[-1].seq if client.writes("meter-0005") else 0
    device = modbus(farm, "meter-0005")
    try:
        written = device.write_register(10, 42, device_id=1)
        assert not written.isError()
        answered = time.monotonic()
        who = local_address(device)
        seen = None
        while seen is None and time.monotonic() - answered < 1.0:
            seen = next(iter(client.writes("meter-0005", after=after)), None)
        took = time.monotonic() - answered
    finally:
        device.close()
    assert seen is not None and took < 0.1, took
    assert seen.client == who and seen.source == "tcp" and not seen.farm
    assert (seen.unit, seen.function_code, seen.table, seen.address) == (
        1,
        6,
        "holding_registers",
        10,
    )
    assert seen.values == (42,) and seen.previous == (7,) and seen.points == {"setpoint": 42}
    assert seen.monotonic <= time.monotonic() and abs(seen.time - time.time()) < 5
    raw = farm.api(f"/api/v1/servers/meter-0005/writes?after={after}")
    assert raw["next"] == seen.seq and raw["writes"][0]["client"] == who
    shown = cli(farm, "writes", "meter-0005", "--since", "30s")
    assert shown.returncode == 0, shown.stderr
    last = shown.stdout.splitlines()[-1]
    assert f"  {who}  unit 1  holding_registers 10 = 42 (was 7)" in last, shown.stdout
    as_json = cli(farm, "writes", "meter-0005", "--json")
    assert json.loads(as_json.stdout.splitlines()[-1])["client"] == who


def test_every_writing_function_code_is_journalled_with_values_before(farm: FarmProcess) -> None:
    client = api(farm)
    device = modbus(farm, "meter-0002")
    try:
        assert not device.write_registers(100, [1, 2, 3], device_id=1).isError()
        assert not device.write_coils(0, [True, False, True], device_id=1).isError()
        assert not device.write_coil(5, True, device_id=1).isError()
        assert not device.mask_write_register(
            address=100, and_mask=0x00F0, or_mask=0x0005, device_id=1
        ).isError()
        assert not device.readwrite_registers(
            read_address=0, read_count=1, write_address=150, values=[9, 8], device_id=1
        ).isError()
        assert device.write_register(30, 1, device_id=1).isError()  # read-only: not written
        assert device.write_register(500, 1, device_id=1).isError()  # out of range
    finally:
        device.close()
    found = [w for w in client.writes("meter-0002") if not w.farm]
    shapes = [(w.function_code, w.table, w.address, w.values, w.previous) for w in found]
    assert shapes == [
        (16, "holding_registers", 100, (1, 2, 3), (0, 0, 0)),
        (15, "coils", 0, (1, 0, 1), (0, 0, 0)),
        (5, "coils", 5, (1,), (0,)),
        (22, "holding_registers", 100, ((1 & 0x00F0) | (0x0005 & ~0x00F0),), (1,)),
        (23, "holding_registers", 150, (9, 8), (0, 0)),
    ]
    assert [w.seq for w in found] == sorted(w.seq for w in found)


def test_a_write_file_record_is_journalled_one_write_a_sub_request(farm: FarmProcess) -> None:
    device = modbus(farm, "meter-0006")
    try:
        two = [
            FileRecord(file_number=4, record_number=1, record_data=b"\x00\x07\x00\x08"),
            FileRecord(file_number=4, record_number=6, record_data=b"\x01\x02"),
        ]
        assert not device.write_file_record(two, device_id=1).isError()
        bad = [FileRecord(file_number=9, record_number=0, record_data=b"\x00\x01")]
        assert device.write_file_record(bad, device_id=1).isError()  # no file 9: not written
        who = local_address(device)
    finally:
        device.close()
    found = [w for w in api(farm).writes("meter-0006") if not w.farm]
    shapes = [(w.function_code, w.table, w.file, w.address, w.values, w.previous) for w in found]
    assert shapes == [
        (21, "file_records", 4, 1, (7, 8), (0x0DFE, 0x0020)),
        (21, "file_records", 4, 6, (0x0102,), (0,)),
    ]
    assert {w.client for w in found} == {who} and found[0].seq + 1 == found[1].seq
    shown = cli(farm, "writes", "meter-0006")
    assert f"  {who}  unit 1  file 4 record 1 = 7,8 (was 3582,32)" in shown.stdout, shown.stdout
    raw = farm.api("/api/v1/servers/meter-0006/writes")["writes"][-1]
    assert (raw["table"], raw["file"], raw["address"]) == ("file_records", 4, 6)


def test_the_farms_own_writes_are_journalled_as_the_farms(farm: FarmProcess) -> None:
    client = FarmClient.at(HOST, farm.api_port)
    client.set_point("meter-0003", "limit", 2.5)
    client.write("meter-0003", "holding_registers", 40, [11, 12])
    shown = cli(farm, "set", "meter-0003", "pump=1")
    assert shown.returncode == 0, shown.stderr
    found = client.writes("meter-0003")
    assert all(w.farm and w.client == "farm" and w.source == "farm" for w in found)
    assert found[0].points == {"limit": 2.5} and found[0].table == "holding_registers"
    assert (found[1].address, found[1].values) == (40, (11, 12))
    assert (found[2].table, found[2].values, found[2].points) == ("coils", (1,), {"pump": 1})
    shown = cli(farm, "writes", "meter-0003")
    assert "  farm  unit 1  holding_registers 40 = 11,12 (was 0,0)" in shown.stdout, shown.stdout


def test_a_workers_kill_9_loses_no_journalled_write() -> None:
    with config_farm(config, SERVERS) as farm:  # its own: the workers restarted are its children
        kill_workers_and_check_the_journal(farm)


def kill_workers_and_check_the_journal(farm: FarmProcess) -> None:
    client = api(farm)
    names = [f"meter-{i:04d}" for i in range(SERVERS)]
    before = {name: client.writes(name) for name in names}
    written: dict[str, list[int]] = {}
    for number, name in enumerate(names):
        device = modbus(farm, name)
        try:
            written[name] = [100 * number + k for k in range(5)]
            for k, value in enumerate(written[name]):
                assert not device.write_register(60 + k, value, device_id=1).isError()
        finally:
            device.close()
    killed = set(farm.worker_pids())
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: not killed & set(farm.worker_pids()) and farm.status()["servers_ready"] == SERVERS,
        60,
        "new workers, ready",
    )
    for name in names:
        after = before[name][-1].seq if before[name] else 0
        kept = [w for w in client.writes(name, after=after) if not w.farm]
        assert [w.values[0] for w in kept] == written[name], name
    device = modbus(farm, "meter-0001")  # and the new worker numbers on from there
    try:
        assert not device.write_register(70, 5, device_id=1).isError()
    finally:
        device.close()
    last = client.writes("meter-0001")[-2:]
    assert last[1].seq == last[0].seq + 1 and last[1].values == (5,)


def test_an_unknown_server_and_a_bad_query_are_clear_errors(farm: FarmProcess) -> None:
    shown = cli(farm, "writes", "nope")
    assert shown.returncode != 0 and "no server named 'nope'" in shown.stderr, shown.stderr
    assert "Traceback" not in shown.stderr
    bad = cli(farm, "writes", "meter-0001", "--since", "soon")
    assert bad.returncode != 0 and "--since" in bad.stderr and "Traceback" not in bad.stderr
    code, body = farm.http("GET", "/api/v1/servers/meter-0001/writes?limit=0")
    assert code == 422 and "limit" in body["error"], body


# -- the ring itself, in one process -------------------------------------------------------


def test_the_ring_keeps_the_newest_writes_and_skips_one_cut_short() -> None:
    journal = ServerJournal(memoryview(bytearray(SERVER_BYTES)))
    peer = Peer.of("::1", 502, "tcp")
    for number in range(CLIENT_RECORDS + 10):
        journal.record(peer, 1, 6, Table.HOLDING_REGISTERS, 5, bytes((0, number % 256)), b"\0\0",
                       0, number)  # fmt: skip
    big = bytes(range(246))
    seq = journal.record(peer, 1, 16, Table.HOLDING_REGISTERS, 0, big, big, 0, 10**9)
    journal.record(FARM_PEER, 1, 0, Table.COILS, 2, b"\1", b"\0", 0, 10**9 + 1)
    found = journal.writes()
    assert found[-2].seq == seq and found[-2].values == tuple(
        (big[i] << 8) | big[i + 1] for i in range(0, 246, 2)
    )
    assert found[-1].client == "farm" and found[-1].values == (1,)
    client_writes = [w for w in found if w.source == "tcp"]
    assert client_writes[0].seq > 10 and client_writes[0].client == "[::1]:502"
    assert len(client_writes) < CLIENT_RECORDS  # the oldest made room for the big one
    # A write cut off by a kill -9 (its first record zeroed, as while it is written) is skipped.
    view = journal.view
    first = next(
        at
        for at in range(32, SERVER_BYTES, 64)
        if int.from_bytes(view[at : at + 8], "little") == seq
    )
    view[first : first + 8] = bytes(8)
    assert seq not in [w.seq for w in journal.writes()]


# -- the fixture's wait_for_write, as a user's test calls it --------------------------------


def test_wait_for_write_returns_the_write_or_fails_with_the_journal(
    modbus_farm: Any, tmp_path: Path
) -> None:
    plant = tmp_path / "plant.yaml"
    plant.write_text(config(1502))  # the fixture moves its fleets to free ports
    farm = modbus_farm(plant)
    host, port = farm.address("meter-0005")
    device = ModbusTcpClient(host, port=port, timeout=3, retries=0)
    assert device.connect()
    try:
        assert not device.write_register(10, 42, device_id=1).isError()
        answered = time.monotonic()
        write = farm.wait_for_write("meter-0005", point="setpoint", value=42, timeout=2)
        took = time.monotonic() - answered
        assert write.client == local_address(device) and write.values == (42,), write
        assert took < 0.1, took
        assert not device.write_registers(100, [3, 4, 5], device_id=1).isError()
        found = farm.wait_for_write(
            "meter-0005", table="holding_registers", address=101, values=[4, 5], timeout=2
        )
        assert found.address == 100 and found.function_code == 16
    finally:
        device.close()
    with pytest.raises(pytest.fail.Exception) as failed:
        farm.wait_for_write("meter-0005", point="setpoint", value=43, timeout=0.3)
    message = str(failed.value)
    assert "no write to meter-0005 matching point='setpoint', value=43 within 0.3 s" in message
    assert "holding_registers 10 = 42 (was 7)  setpoint=42" in message, message


# -- the journal's size (farm up --journal-size) ----------------------------------------------


def test_a_small_journal_keeps_the_last_n_writes_and_numbering_goes_on() -> None:
    with config_farm(config, SERVERS, ["--journal-size", "4"]) as farm:
        client = api(farm)
        device = modbus(farm, "meter-0001")
        try:
            for value in range(1, 11):
                assert not device.write_register(10, value, device_id=1).isError()
            kept = client.writes("meter-0001")
            assert [(w.seq, w.values) for w in kept] == [(s, (s,)) for s in range(7, 11)]
            for value in range(11, 14):
                assert not device.write_register(10, value, device_id=1).isError()
        finally:
            device.close()
        kept = client.writes("meter-0001")
        assert [w.seq for w in kept] == [10, 11, 12, 13]
        assert [w.previous for w in kept] == [(9,), (10,), (11,), (12,)]
        assert [w.seq for w in client.writes("meter-0001", after=11)] == [12, 13]


@pytest.mark.parametrize("size", ["0", "65537", "-3"])
def test_a_bad_journal_size_is_one_line(size: str) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "farm", "up", "--count", "1", "--journal-size", size],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode != 0
    assert shown.stderr.strip().splitlines() == [
        f"farm: error: --journal-size {size}: a journal keeps 1 to 65536 writes"
    ], shown.stderr
