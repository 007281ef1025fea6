"""The master-worker pipe: typed messages both ways, and nothing else gets through.

The pipe once carried pickles behind a "restricted" unpickler that accepted dotted names,
so a frame naming `farm.ipc.messages` + `os.system` ran a command in the receiver. These
tests send such frames, and garbage, to real processes on both ends of the pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import socket
import typing
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiprocess import get_context

from farm.config.faults.rules import FaultRule
from farm.config.fleets import load
from farm.config.plan import Plan, ServerSpec, build_plan, default_servers
from farm.config.templates import (
    Behaviour,
    BehaviourKind,
    DeviceTemplate,
    Point,
    PointType,
    Table,
    default_template,
)
from farm.errors import BootError
from farm.ipc import messages
from farm.ipc.channel import Channel
from farm.ipc.messages import (
    MAX_FRAME_BYTES,
    VERSION,
    Assign,
    Connection,
    Control,
    Faults,
    FaultsApplied,
    Heartbeat,
    Message,
    ProtocolError,
    Ready,
    Reply,
    ServerFailed,
    Stop,
)
from farm.ipc.spawn import EXIT_BOOT_FAILED, WORKER_ENTRY, InheritedSockets, run_entry
from farm.master.supervision.listeners import bind_all
from farm.master.supervision.supervisor import Supervisor, SupervisorOptions
from tests.farmproc import HOST, free_port_range

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))


def crafted_pickle(command: str) -> bytes:
    """A pickle that calls os.system(command) when loaded, reached through the dotted name
    `os.system` inside an allowed module (what the old unpickler let through)."""

    def text(value: str) -> bytes:
        data = value.encode()
        return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE

    # PROTO 4, module, name, STACK_GLOBAL, argument, TUPLE1, REDUCE, STOP
    return (
        b"\x80\x04"
        + text("farm.ipc.messages")
        + text("os.system")
        + b"\x93"
        + text(command)
        + b"\x85R."
    )


def plan_of(count: int, workers: int = 1) -> Plan:
    template = DeviceTemplate(
        name="everything",
        units=default_template().units,
        points=(
            Point(name="f", unit_id=1, table=Table.HOLDING_REGISTERS, address=0,
                  type=PointType.FLOAT32, byte_order="little", word_order="little", scale=0.1),
            Point(name="s", unit_id=1, table=Table.HOLDING_REGISTERS, address=4,
                  type=PointType.STRING, length=4, writable=False,
                  behaviour=Behaviour(text="héllo ✓")),
            Point(name="r", unit_id=1, table=Table.INPUT_REGISTERS, address=0,
                  behaviour=Behaviour(kind=BehaviourKind.REPLAY, samples=(1.5, -2.25, 1e300), interval_s=0.5)),
            Point(name="b", unit_id=1, table=Table.COILS, address=3, type=PointType.BOOL,
                  behaviour=Behaviour(kind=BehaviourKind.SQUARE, period_s=2, jitter=0.5)),
        ),
    )  # fmt: skip
    requests = default_servers(count, HOST, 20000, template.name)
    return build_plan(requests, {template.name: template}, workers, seed=7)


def assign_of(plan: Plan, shard: int = 0) -> Assign:
    return Assign(
        worker=shard,
        segment="psm_banks",
        stats_segment="psm_stats",
        templates=plan.templates,
        servers=plan.shards[shard].servers,
        heartbeat_interval_s=0.5,
        origin=12345.678,
        faults=((FaultRule(id=3, kind="offline", probability=0.5), (1,)),),
    )


def every_message() -> list[Message]:
    failed = ServerFailed(worker=1, server="device-0001", address="127.0.0.1:5021", reason="ü")
    return [
        assign_of(plan_of(50, workers=2), shard=1),
        Ready(worker=1, servers_up=24, failed=(failed,)),
        Ready(worker=0, servers_up=25),
        Heartbeat(worker=0, servers_up=25, loop_lag_s=0.001, cpu_s=1.5, rss_bytes=1 << 40,
                  connections=3),
        failed,
        Faults(
            added=(
                (FaultRule(id=1, kind="delay", ms=250.0, jitter_ms=10.0), (0, 3, 7)),
                (FaultRule(id=2, kind="exception", code=4, function_codes=(3, 4), unit=1), ()),
            ),
            removed=(4, 5),
            seq=9,
        ),
        FaultsApplied(worker=1, seq=9),
        Control(request_id=7, op=messages.STOP_SERVER, servers=("device-0001", "device-0002")),
        Reply(request_id=7, ok=True, result=24),
        Reply(request_id=8, ok=False, error="no server 'x' here"),
        Stop(reason="farm stopping"),
        Stop(),
    ]  # fmt: skip


def test_the_union_names_every_message_class() -> None:
    subclasses = set(messages._Message.__subclasses__())
    assert subclasses == set(typing.get_args(Message))


@pytest.mark.parametrize("message", every_message(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Message) -> None:
    decoded = messages.decode(messages.encode(message))
    assert decoded == message and type(decoded) is type(message)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_assign_of_every_example_round_trips_with_exact_types(example: Path) -> None:
    """Every field of every template and server spec comes back with its own type: a StrEnum
    decoded as a plain str would still compare equal, so the types are checked too."""
    farm_file = load(example)
    templates, requests = farm_file.expand()
    assign = assign_of(build_plan(requests, templates, workers=1, seed=farm_file.seed))
    decoded = messages.decode(messages.encode(assign))
    assert isinstance(decoded, Assign) and decoded == assign

    def same_types(a: object, b: object, where: str) -> None:
        assert type(a) is type(b), f"{where}: {type(a).__name__} came back as {type(b).__name__}"
        if dataclasses.is_dataclass(a):
            for f in dataclasses.fields(a):
                same_types(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
        elif isinstance(a, tuple | list):
            assert isinstance(b, tuple | list)
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                same_types(x, y, f"{where}[{i}]")
        elif isinstance(a, dict):
            assert isinstance(b, dict)
            for key in a:
                same_types(a[key], b[key], f"{where}[{key!r}]")

    same_types(assign.templates, decoded.templates, "templates")
    same_types(assign.servers, decoded.servers, "servers")


def test_crafted_pickle_is_a_protocol_error_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    for version in (VERSION, 1):
        with pytest.raises(ProtocolError):
            messages.decode(bytes([version]) + crafted_pickle(f"touch {marker}"))
    assert not marker.exists()


BAD_FRAMES = {
    "empty": b"",
    "version only": bytes([VERSION]),
    "old version": bytes([1]) + msgspec.msgpack.encode(Stop()),
    "never-used msgpack byte": bytes([VERSION, 0xC1]),
    "truncated": messages.encode(
        Heartbeat(worker=0, servers_up=1, loop_lag_s=0, cpu_s=0, rss_bytes=0, connections=0)
    )[:-3],
    "not a map": bytes([VERSION]) + msgspec.msgpack.encode([1, 2, 3]),
    "no type": bytes([VERSION]) + msgspec.msgpack.encode({"reason": "x"}),
    "unknown type": bytes([VERSION]) + msgspec.msgpack.encode({"type": "Shell", "cmd": "id"}),
    "a Reply with an object result": bytes([VERSION])
    + msgspec.msgpack.encode({"type": "Reply", "request_id": 1, "ok": True, "result": {"a": 1}}),
    "a dotted type": bytes([VERSION]) + msgspec.msgpack.encode({"type": "os.system"}),
    "unknown field": bytes([VERSION]) + msgspec.msgpack.encode({"type": "Stop", "cmd": "x"}),
    "missing field": bytes([VERSION]) + msgspec.msgpack.encode({"type": "Ready", "worker": 1}),
    "wrong field type": bytes([VERSION])
    + msgspec.msgpack.encode({"type": "Ready", "worker": "1", "servers_up": 1}),
    "invalid UTF-8 in a value": bytes([VERSION]) + b"\x82\xa4type\xa4Stop\xa6reason\xa2\xff\xfe",
    "invalid UTF-8 in the type": bytes([VERSION]) + b"\x81\xa4type\xa2\xc3\x28",
    "invalid UTF-8 in a key": bytes([VERSION]) + b"\x82\xa4type\xa4Stop\xa2\xff\xfe\xa0",
    "extension type": bytes([VERSION]) + b"\xd4\x01\x00",
}


@pytest.mark.parametrize("frame", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_garbage_is_a_protocol_error(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        messages.decode(frame)


def test_a_template_with_an_unknown_enum_value_is_a_protocol_error() -> None:
    raw = msgspec.msgpack.decode(messages.encode(assign_of(plan_of(2)))[1:])
    raw["templates"]["everything"]["points"][0]["table"] = "registers_of_doom"
    with pytest.raises(ProtocolError, match="table"):
        messages.decode(bytes([VERSION]) + msgspec.msgpack.encode(raw))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_to_a_message_or_a_protocol_error(data: bytes) -> None:
    for frame in (data, bytes([VERSION]) + data):
        try:
            message = messages.decode(frame)
        except ProtocolError:
            continue
        assert isinstance(message, typing.get_args(Message))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_messages_decode_to_a_message_or_a_protocol_error(data: st.DataObject) -> None:
    frame = bytearray(messages.encode(data.draw(st.sampled_from(every_message()[1:]))))
    for _ in range(data.draw(st.integers(1, 4))):
        frame[data.draw(st.integers(1, len(frame) - 1))] = data.draw(st.integers(0, 255))
    try:
        message = messages.decode(bytes(frame))
    except ProtocolError:
        return
    assert isinstance(message, typing.get_args(Message))


def test_oversized_frame_is_refused() -> None:
    big = Stop(reason="x" * MAX_FRAME_BYTES)
    with pytest.raises(ProtocolError, match="over the cap"):
        messages.encode(big)


def test_a_worker_sent_a_crafted_pickle_exits_could_not_boot_and_runs_nothing(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    context = get_context("spawn")
    ours, theirs = context.Pipe(duplex=True)
    process = context.Process(
        target=run_entry, args=(WORKER_ENTRY, theirs, InheritedSockets(())), daemon=True
    )
    process.start()
    theirs.close()
    try:
        ours.send_bytes(bytes([VERSION]) + crafted_pickle(f"touch {marker}"))
        process.join(60)
        assert process.exitcode == EXIT_BOOT_FAILED
    finally:
        if process.exitcode is None:
            process.kill()
            process.join(10)
        ours.close()
    assert not marker.exists()


def test_the_master_ignores_a_crafted_pickle_from_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that sends a crafted pickle instead of Ready runs nothing in the master;
    it never boots, and the farm stops saying so."""
    marker = tmp_path / "ran"
    frame = tmp_path / "frame"
    frame.write_bytes(bytes([VERSION]) + crafted_pickle(f"touch {marker}"))
    monkeypatch.setenv("FARM_TEST_FRAME", str(frame))
    plan = build_plan(
        default_servers(2, HOST, free_port_range(2), "default"),
        {"default": default_template()},
        workers=1,
    )
    sockets = bind_all(plan.servers())
    options = SupervisorOptions(boot_timeout_s=1.0, max_boot_failures=1)

    async def main() -> None:
        supervisor = Supervisor(
            plan, sockets, options, entry="tests.stub_workers:send_frame_and_linger"
        )
        try:
            with pytest.raises(BootError, match="failed to boot 1 times"):
                await asyncio.wait_for(supervisor.start(), 60)
        finally:
            await supervisor.stop()

    asyncio.run(main())
    assert not marker.exists()


@contextlib.contextmanager
def pipe_ends() -> Iterator[tuple[Connection, Connection]]:
    """Both ends of a worker's pipe (a Unix socket pair), closed afterwards."""
    ours, theirs = get_context("spawn").Pipe(duplex=True)
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.close()


def test_assign_of_ten_thousand_servers_goes_through_a_real_pipe() -> None:
    """Far bigger than the pipe's buffer, written and read without blocking on one loop:
    the frame must arrive whole (and be typed), with the sockets that follow a message."""
    assign = assign_of(plan_of(10_000))
    listeners = [socket.create_server((HOST, 0)) for _ in range(300)]  # two chunks of marks
    start = Control(request_id=1, op=messages.START_SERVER, servers=("x",) * len(listeners))
    with pipe_ends() as (ours, theirs):
        received: list[tuple[Message, list[socket.socket]]] = []

        async def main() -> None:
            loop = asyncio.get_running_loop()
            done = asyncio.Event()

            def on_message(message: Message, socks: list[socket.socket]) -> None:
                received.append((message, socks))
                if len(received) == 2:
                    done.set()

            reader = Channel(loop, theirs, on_message, lambda why: None)
            writer = Channel(loop, ours, lambda message, socks: None, lambda why: None)
            writer.send(assign)
            writer.send(start, listeners)
            assert writer.queued_bytes > 0  # the loop writes the rest: it never waited
            await done.wait()
            reader.close()
            writer.close()

        asyncio.run(asyncio.wait_for(main(), 60))
    (first, none), (second, socks) = received
    assert first == assign and none == []
    assert isinstance(first, Assign)
    assert all(type(spec) is ServerSpec for spec in first.servers)
    assert second == start
    ports = [sock.getsockname()[1] for sock in socks]
    assert ports == [sock.getsockname()[1] for sock in listeners]
    for sock in (*socks, *listeners):
        sock.close()


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_shards_sockets_wait_to_be_written_without_being_held_twice() -> None:
    """Queued behind a frame bigger than the pipe's buffer, 2,000 listening sockets add no
    descriptor to the sender (it held a duplicate of each until written: with a shard of
    thousands on top of the master's own, past the open-files limit), and all arrive."""
    assign = assign_of(plan_of(10_000))
    listeners = [socket.create_server((HOST, 0)) for _ in range(2_000)]
    start = Control(request_id=1, op=messages.START_SERVER, servers=("x",) * len(listeners))
    received: list[list[socket.socket]] = []
    with pipe_ends() as (ours, theirs):

        async def main() -> None:
            loop = asyncio.get_running_loop()
            done = asyncio.Event()
            writer = Channel(loop, ours, lambda message, socks: None, lambda why: None)
            before = open_files()
            writer.send(assign)
            writer.send(start, listeners)
            held = open_files() - before
            assert writer.queued_bytes > 0  # still queued: nobody has read yet
            assert held < 10, f"{held} descriptors more while the sockets wait"

            def on_message(message: Message, socks: list[socket.socket]) -> None:
                if message == start:
                    received.append(socks)
                    done.set()

            reader = Channel(loop, theirs, on_message, lambda why: None)
            await done.wait()
            reader.close()
            writer.close()

        asyncio.run(asyncio.wait_for(main(), 60))
    (socks,) = received
    assert [s.getsockname() for s in socks] == [s.getsockname() for s in listeners]
    for sock in (*socks, *listeners):
        sock.close()


def test_a_socket_closed_before_it_is_written_ends_the_pipe() -> None:
    """What the sender queued must stay open until written; one closed meanwhile is not sent
    as whatever took its number: the pipe ends (EBADF), and the worker's end is replaced."""
    assign = assign_of(plan_of(10_000))
    listener = socket.create_server((HOST, 0))
    start = Control(request_id=1, op=messages.START_SERVER, servers=("x",))
    why: list[BaseException | None] = []
    with pipe_ends() as (ours, theirs):

        async def main() -> None:
            loop = asyncio.get_running_loop()
            ended = asyncio.Event()

            def on_closed(reason: BaseException | None) -> None:
                why.append(reason)
                ended.set()

            writer = Channel(loop, ours, lambda message, socks: None, on_closed)
            writer.send(assign)
            writer.send(start, [listener])
            assert writer.queued_bytes > 0
            listener.close()
            reader = Channel(loop, theirs, lambda message, socks: None, lambda reason: None)
            await ended.wait()
            reader.close()

        asyncio.run(asyncio.wait_for(main(), 60))
    (reason,) = why
    assert isinstance(reason, OSError) and reason.errno == errno.EBADF, reason
