"""A poller's repeated read, which a connection answers the short way (farm.worker.transports.
connection `remember`), answers exactly as the engine would: the values of the moment, the
request counted in the metrics and the client statistics, and a fault, a trace or
listen-only mode that begins between two repeats is seen by the next one."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from farm.client import FarmClient
from farm.modbus import pdu
from tests.conftest import ready_farm
from tests.farmproc import HOST, FarmProcess
from tests.prometheus_server import scrape, value
from tests.rawmodbus import mbap, read_frame

pytestmark = pytest.mark.timeout(120)
POLL = pdu.read(3, 0, 10)  # the repeated request
SERVER = "device-0000"


@pytest.fixture
def farm() -> Iterator[FarmProcess]:
    running = ready_farm(2, workers=1)
    try:
        yield running
    finally:
        code, _, stderr = running.stop()
        assert code == 0, stderr


def ask(sock: socket.socket, transaction: int, request: bytes) -> bytes:
    """One request and its answer's PDU; the transaction id must come back."""
    sock.sendall(mbap(transaction, 1, request))
    frame = read_frame(sock)
    assert frame[:2] == transaction.to_bytes(2, "big"), frame.hex()
    return frame[7:]


def test_a_repeated_read_answers_the_values_of_the_moment_and_is_counted(
    farm: FarmProcess,
) -> None:
    api = FarmClient.at(HOST, farm.api_port)
    rng = random.Random(24)
    model = api.read(SERVER, "holding_registers", 0, 20)
    polls = fc3 = 0
    with (
        socket.create_connection((HOST, farm.port(0)), timeout=5) as poller,
        socket.create_connection((HOST, farm.port(0)), timeout=5) as writer,
    ):
        for number in range(1, 301):
            answer = ask(poller, number, POLL)
            polls, fc3 = polls + 1, fc3 + 1
            assert pdu.registers(answer) == model[:10], f"read {number}"
            step = number % 6
            values = [rng.randrange(65536) for _ in range(3)]
            address = rng.randrange(8)
            if step == 1:  # another connection writes the registers the poller reads
                assert ask(writer, number, pdu.write_registers(address, values))[0] == 16
            elif step == 2:  # the API writes them (the master's mapping of the same bank)
                api.write(SERVER, "holding_registers", address, values)
            elif step == 3:  # the poller writes them itself, then polls again
                assert ask(poller, 40_000 + number, pdu.write_registers(address, values))[0] == 16
            elif step == 4:  # the poller asks something else in between
                other = ask(poller, 50_000 + number, pdu.read(3, 5, 3))
                assert pdu.registers(other) == model[5:8]
                fc3 += 1
                continue
            elif step == 5:  # an exception answer in between
                assert ask(poller, 60_000 + number, pdu.read(3, 60_000, 10)) == b"\x83\x02"
                fc3 += 1
                continue
            else:
                continue
            model[address : address + 3] = values
    samples = scrape(farm)
    labels = {"server": SERVER, "worker": "0", "function_code": "3"}
    assert value(samples, "modbus_farm_requests_total", **labels) == fc3
    (client,) = api.clients(SERVER)
    assert client.requests[3] == fc3, client
    (poll,) = [p for p in client.polls if (p.function_code, p.address, p.count) == (3, 0, 10)]
    assert poll.requests == polls, poll


def test_a_fault_a_trace_and_listen_only_reach_a_repeated_read(farm: FarmProcess) -> None:
    api = FarmClient.at(HOST, farm.api_port)
    with (
        socket.create_connection((HOST, farm.port(0)), timeout=5) as poller,
        socket.create_connection((HOST, farm.port(0)), timeout=5) as other,
    ):
        for number in range(5):  # asked again: answered the short way from now on
            assert ask(poller, number, POLL)[0] == 3
        fault = api.fault("exception", target=SERVER, code=4)
        assert ask(poller, 10, POLL) == b"\x83\x04"
        api.clear_fault(fault.id)
        assert ask(poller, 11, POLL)[0] == 3
        assert ask(poller, 12, POLL)[0] == 3
        traced: dict[str, Any] = {}
        tracing = threading.Thread(target=lambda: traced.update(api.trace(SERVER, seconds=2.0)))
        tracing.start()
        answered = 0
        while tracing.is_alive():
            assert ask(poller, 100 + answered % 1000, POLL)[0] == 3
            answered += 1
        tracing.join()
        records = traced["records"]
        # When the trace began within its 2 s is the API's business: reads were answered
        # all along (thousands), and the short way would leave every one of them out.
        assert len(records) >= min(100, answered), (len(records), answered)
        # Listen-only, from another connection: the poller's next repeat gets no answer.
        assert ask(other, 1, POLL)[0] == 3
        other.sendall(mbap(2, 1, pdu.diagnostic(4)))  # FC 08/04: no answer, by the spec
        other.sendall(mbap(3, 1, POLL))  # unanswered too once it took effect
        for sock in (other, poller):
            sock.settimeout(1.0)
            if sock is poller:
                sock.sendall(mbap(4, 1, POLL))
            with pytest.raises(TimeoutError):
                read_frame(sock)
