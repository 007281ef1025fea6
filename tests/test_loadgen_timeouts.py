"""The load generator survives connections closed under it.

Found with 50,000 connections (benchmarks/bench_shards.py): a transport can be closed and
still set on its connection: its `connection_lost` is not called yet, or never (uvloop
closes a transport whose connect the connect timeout cut off after it was made, silently,
and its `is_closing()` stays False). The open loop's pacing wrote to it, uvloop raised, and
the generator process died. Now a closing connection sheds its requests, a write that
raises marks the connection down (it is reopened), and a failed connect leaves no transport.
"""

from __future__ import annotations

from farm.bench.loadgen import LoadSpec, Run
from farm.bench.spec import request_pdu


class ClosingTransport:
    """What uvloop's transport is between close() and connection_lost."""

    def is_closing(self) -> bool:
        return True

    def write(self, data: bytes) -> None:
        raise RuntimeError("unable to perform operation: the handler is closed")

    def close(self) -> None:
        pass


class SilentlyClosedTransport(ClosingTransport):
    """uvloop's transport after a cancelled connect: not closing, yet closed."""

    def is_closing(self) -> bool:
        return False


class OpenTransport(ClosingTransport):
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written.append(data)


def test_pacing_sheds_requests_of_a_closing_connection_and_sends_the_others() -> None:
    spec = LoadSpec(
        targets=(("127.0.0.1", 1), ("127.0.0.1", 2)),
        pdus=(request_pdu(3, 0, 1),),
        depth=4,
        rate=100.0,
        duration_s=10.0,
    )
    run = Run(spec)
    closing, open_ = ClosingTransport(), OpenTransport()
    run.connections[0].transport = closing  # type: ignore[assignment]
    run.connections[1].transport = open_  # type: ignore[assignment]
    scheduled, _ = run.pace(0.04, 0.0, 0, 0)  # 4 requests due, alternating connections
    assert scheduled == 4
    assert run.tally.shed == 2 and run.tally.sent == 2
    assert len(open_.written) == 1  # both of its requests in one write
    for connection in run.connections:
        connection.run.sending = True
        connection.fill(0.0)  # the closed loop's top-up skips it too
    assert run.tally.sent == 2 + 2  # only the open connection, up to its depth of 4


def test_a_write_to_a_silently_closed_transport_marks_the_connection_down() -> None:
    spec = LoadSpec(targets=(("127.0.0.1", 1),), pdus=(request_pdu(3, 0, 1),), depth=4, rate=100.0)
    run = Run(spec)
    connection = run.connections[0]
    connection.transport = SilentlyClosedTransport()  # type: ignore[assignment]
    run.pace(0.03, 0.0, 0, 0)
    assert run.tally.shed == 3 and run.tally.sent == 0
    assert connection.transport is None and not connection.inflight  # to be reopened
