"""The benchmarks' C baseline (benchmarks/libmodbus_server.c) builds and serves real clients:
a baseline that answered wrongly or not at all would make every `vs C` ratio a lie."""

from __future__ import annotations

import subprocess

import pytest
from pymodbus.client import ModbusTcpClient

from benchmarks import cserver
from tests.farmproc import HOST, free_port_range, squatter
from tests.tools import tool

pytestmark = pytest.mark.timeout(120)


def test_libmodbus_server_answers_pymodbus_and_mbpoll() -> None:
    server = cserver.libmodbus_server(3)
    server.start(timeout=30)
    try:
        assert server.process is not None and server.process.poll() is None
        for _, port in server.targets:
            client = ModbusTcpClient(HOST, port=port, timeout=5)
            assert client.connect()
            try:
                assert not client.write_registers(10, [port % 1000, 7]).isError()
                assert client.read_holding_registers(10, count=2).registers == [port % 1000, 7]
            finally:
                client.close()
        done = subprocess.run(
            [tool("mbpoll"), "-m", "tcp", "-a", "1", "-r", "12", "-c", "1", "-1", "-t", "4",
             "-p", str(server.port_base + 2), HOST],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        # mbpoll numbers registers from 1: -r 12 is address 11, written 7 above.
        assert "[12]: \t7" in done.stdout, done.stdout
    finally:
        server.stop()
    assert server.process.returncode == 0, "the C server did not stop cleanly on SIGTERM"


def test_a_port_already_taken_is_one_clear_line() -> None:
    port = free_port_range(1)
    with squatter(port):
        done = subprocess.run(
            [str(cserver.build()), str(port), "1", "5"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"listen on port {port}" in done.stderr
