"""Messages between the master and its workers, and the one place that knows their wire format.

Sits between supervisor and worker in the data flow. Each worker has one duplex pipe
(`multiprocess.Pipe`) to the master.

Conversation:
    master -> worker   Assign                 once, right after spawn
    worker -> master   Heartbeat              every `heartbeat_interval_s`, from a task in the
                                              worker's loop (so a stuck loop goes silent)
    worker -> master   ServerFailed           a server could not start
    worker -> master   Ready                  every server of the shard is up (or has failed)
    master -> worker   Control                an operation on some servers; answered by one
                                              Reply: STOP_SERVER closes their ports and
                                              connections, START_SERVER serves them again on
                                              the listening sockets that follow it, in order
                                              (`send_sockets`); CLIENTS asks what the
                                              clients of its servers did (Reply.clients);
                                              TRACE_START and TRACE_STOP trace a server
    master -> worker   Faults                 every fault active now on the worker's servers
                                              (replaces the last; also sent within Assign)
    worker -> master   FaultsApplied          the Faults of that `seq` are in effect
    worker -> master   Reply
    master -> worker   AddServers             servers that join the shard (the fleet scaled
                                              up); their listening sockets follow it
                                              (`send_sockets`); answered by Reply
    master -> worker   RemoveServers          servers that leave it: ports and connections
                                              closed; answered by Reply
    worker -> master   Events                 what the worker has to say (farm.master.logs
                                              writes it to the farm's one log), sent as soon
                                              as the loop iteration that produced it ends
    master -> worker   Stop                   stop accepting, finish, exit 0
End-of-file on the pipe means the other side is gone: a worker then exits.

Wire format: each message is one `Connection.send_bytes` frame (the connection adds a
4-byte length prefix) holding `VERSION` (one byte) then the message as MessagePack
(msgspec): a map whose "type" key names the message class, every other key one of its
fields. Templates and server specs inside an Assign are the plain frozen dataclasses of
farm.config, encoded field by field (enums as their values, tuples as arrays). Decoding
is typed: the receiver builds exactly the classes of the `Message` union and their field
types, and nothing else; nothing is unpickled or looked up by name. A frame over
`MAX_FRAME_BYTES`, of another version, naming another type, with a field missing, unknown
or of the wrong type, or with bytes that are not MessagePack (or not UTF-8 where text is
due) is a `ProtocolError`.

Listening sockets travel right after the message that announces them, as one byte `S` with
the descriptors in SCM_RIGHTS ancillary data (the pipe is a Unix socket pair); frames are
read to their exact length, so the byte is never swallowed by a frame read.

A new message is a class here (a `_Message`) added to `Message`; its fields must be types
msgspec encodes (builtins, enums, tuples, dicts, dataclasses or structs of those).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Protocol

import msgspec

from farm.config.faults.rules import FaultRule
from farm.config.plan import ServerSpec
from farm.config.templates import DeviceTemplate
from farm.ipc.polling import ServerClients
from farm.ipc.tracing import Traced

VERSION = 4  # 4: FaultRule.extra (a kind's parameters without a field of their own)
MAX_FRAME_BYTES = 64 * 1024 * 1024
STOP_SERVER = "stop_server"
START_SERVER = "start_server"
CLIENTS = "clients"  # what the shard's clients did (farm.ipc.polling), in Reply.clients
TRACE_START = "trace_start"  # trace one server (Control.client: only that client's requests)
TRACE_STOP = "trace_stop"  # end it: its records in Reply.traced (farm.ipc.tracing)
_SOCKET_MARK = b"S"
# Each active fault with the shard positions (indexes into Assign.servers) it applies to.
ActiveFaults = tuple[tuple[FaultRule, tuple[int, ...]], ...]


class ProtocolError(Exception):
    """A frame that is not a message of this version."""


class _Message(msgspec.Struct, frozen=True, kw_only=True, tag=True, forbid_unknown_fields=True):
    """Base of every message: frozen, keyword-only, tagged on the wire with its class name."""


class Assign(_Message, frozen=True):
    worker: int
    segment: str
    stats_segment: str  # the shard's counters (farm.ipc.stats), also owned by the master
    templates: dict[str, DeviceTemplate]
    servers: tuple[ServerSpec, ...]
    heartbeat_interval_s: float
    # The farm's start on the monotonic clock (CLOCK_MONOTONIC, one per host): the t = 0 of
    # every behaviour, so a step of the wall clock never moves live values.
    origin: float
    faults: ActiveFaults = ()  # as a Faults message would say (a restarted worker keeps them)
    log_level: int = 20  # logging.INFO; at DEBUG (10) a worker reports every connection
    journal_segment: str = ""  # the shard's write journal (farm.ipc.journal); "": none


class ServerFailed(_Message, frozen=True):
    worker: int
    server: str
    address: str
    reason: str


class Ready(_Message, frozen=True):
    worker: int
    servers_up: int
    failed: tuple[ServerFailed, ...] = ()


class Heartbeat(_Message, frozen=True):
    worker: int
    servers_up: int
    loop_lag_s: float
    cpu_s: float
    rss_bytes: int
    connections: int
    requests: int


class Faults(_Message, frozen=True):
    active: ActiveFaults
    seq: int  # echoed by FaultsApplied


class FaultsApplied(_Message, frozen=True):
    worker: int
    seq: int


class Control(_Message, frozen=True):
    request_id: int
    op: str  # STOP_SERVER, START_SERVER or CLIENTS; a worker answers any other with an error
    servers: tuple[str, ...]  # names: one message for a whole fault's servers on a worker
    client: str = ""  # TRACE_START: only this client's requests (HOST or HOST:PORT)


class Reply(_Message, frozen=True):
    request_id: int
    ok: bool
    result: int | None = None  # the servers the worker serves now
    error: str = ""
    clients: tuple[ServerClients, ...] = ()  # to CLIENTS: each server's clients
    traced: tuple[Traced, ...] = ()  # to TRACE_STOP: what the server answered meanwhile


class AddServers(_Message, frozen=True):
    """Servers that join the shard (their banks and counters are ready, the segments grown:
    the worker maps them again); one listening socket each follows, in order."""

    request_id: int
    servers: tuple[ServerSpec, ...]
    templates: dict[str, DeviceTemplate]  # those the servers name


class RemoveServers(_Message, frozen=True):
    request_id: int
    servers: tuple[str, ...]  # names


class Event(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One line of the farm's log, from a worker (inside Events)."""

    time: float  # time.time(): log lines carry wall-clock time
    level: int  # a logging level number
    event: str  # what happened, in snake_case: idle_timeout, malformed_frame, ...
    server: str = ""  # the server it concerns, if any
    message: str = ""  # the line a person reads
    fields: dict[str, str | int | float] = msgspec.field(default_factory=dict)


class Events(_Message, frozen=True):
    worker: int
    events: tuple[Event, ...]


class Stop(_Message, frozen=True):
    reason: str = ""


Message = (
    Assign
    | Ready
    | Heartbeat
    | ServerFailed
    | Faults
    | FaultsApplied
    | Control
    | Reply
    | AddServers
    | RemoveServers
    | Events
    | Stop
)


class Connection(Protocol):
    """The parts of a `multiprocess` pipe end this package uses."""

    def send_bytes(self, buf: bytes) -> None: ...
    def recv_bytes(self, maxlength: int | None = None) -> bytes: ...
    def poll(self, timeout: float | None = 0.0) -> bool: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


def encode(message: Message) -> bytes:
    frame = bytes([VERSION]) + msgspec.msgpack.encode(message)
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"{type(message).__name__} is {len(frame)} bytes, over the cap")
    return frame


def decode(frame: bytes) -> Message:
    if not frame or frame[0] != VERSION:
        found = frame[0] if frame else "nothing"
        raise ProtocolError(f"pipe frame version {found}, expected {VERSION}")
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"pipe frame of {len(frame)} bytes, over {MAX_FRAME_BYTES}")
    try:
        message: Message = msgspec.msgpack.decode(memoryview(frame)[1:], type=Message)
    except (msgspec.MsgspecError, ValueError, TypeError) as exc:  # ValueError: bad UTF-8 too
        raise ProtocolError(f"pipe frame is not a readable message: {exc}") from exc
    return message


def watch(loop: asyncio.AbstractEventLoop, conn: Connection, callback: Callable[[], None]) -> None:
    """Call `callback` when a message can be read, keeping the pipe in blocking mode.

    uvloop's add_reader makes the descriptor non-blocking; then a frame larger than the
    socket buffer (an Assign of thousands of servers) fails half-written with EAGAIN and the
    stream is corrupt. Frames must go out whole, so the pipe goes back to blocking: the
    reader is only called when data is there, and writers wait for room.
    """
    loop.add_reader(conn.fileno(), callback)
    os.set_blocking(conn.fileno(), True)


def send(conn: Connection, message: Message) -> None:
    conn.send_bytes(encode(message))


def receive(conn: Connection) -> Message:
    """Read one message; raises EOFError when the other side is gone."""
    try:
        frame = conn.recv_bytes(MAX_FRAME_BYTES)
    except OSError as exc:
        if "too long" in str(exc) or "bad message length" in str(exc):
            raise ProtocolError(f"pipe frame over {MAX_FRAME_BYTES} bytes") from exc
        raise
    return decode(frame)


def send_socket(conn: Connection, sock: socket.socket) -> None:
    """Pass `sock`'s descriptor to the other end (which calls `receive_socket`)."""
    with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        socket.send_fds(channel, [_SOCKET_MARK], [sock.fileno()])


def receive_socket(conn: Connection) -> socket.socket:
    """The socket `send_socket` passed (blocks until it arrives)."""
    with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        data, fds, _, _ = socket.recv_fds(channel, 1, 1)
    if data != _SOCKET_MARK or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise ProtocolError(f"expected a socket on the pipe, got {data!r} and {len(fds)} fds")
    return socket.socket(fileno=fds[0])


# Descriptors per sendmsg: the kernel takes at most SCM_MAX_FD (253) at once.
_FDS_AT_ONCE = 250


def send_sockets(conn: Connection, socks: list[socket.socket]) -> None:
    """Pass many sockets' descriptors, in order (the other end calls `receive_sockets`)."""
    with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        for start in range(0, len(socks), _FDS_AT_ONCE):
            chunk = [sock.fileno() for sock in socks[start : start + _FDS_AT_ONCE]]
            socket.send_fds(channel, [_SOCKET_MARK], chunk)


def receive_sockets(conn: Connection, count: int) -> list[socket.socket]:
    """The `count` sockets `send_sockets` passed, in order (blocks until they arrive)."""
    received: list[int] = []
    with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        while len(received) < count:
            wanted = min(_FDS_AT_ONCE, count - len(received))
            data, fds, _, _ = socket.recv_fds(channel, 1, wanted)
            received.extend(fds)
            if data != _SOCKET_MARK or not fds:
                for fd in received:
                    os.close(fd)
                raise ProtocolError(f"expected sockets on the pipe, got {data!r}")
    return [socket.socket(fileno=fd) for fd in received]
