"""Messages between the master and its workers, and the one place that knows their wire format.

Sits between supervisor and worker in the data flow. Each worker has one duplex pipe
(`multiprocess.Pipe`) to the master.

Conversation:
    master -> worker   Assign                 once, right after spawn
    worker -> master   Heartbeat              every `heartbeat_interval_s`, from a task in the
                                              worker's loop (so a stuck loop goes silent)
    worker -> master   ServerFailed           a server could not start
    worker -> master   Ready                  every server of the shard is up (or has failed)
    master -> worker   Control                an operation on a server; answered by Reply:
                                              STOP_SERVER closes its port and connections,
                                              START_SERVER serves it again on the listening
                                              socket that follows it (`send_socket`)
    master -> worker   Faults                 every fault active now on the worker's servers
                                              (replaces the last; also sent within Assign)
    worker -> master   FaultsApplied          the Faults of that `seq` are in effect
    worker -> master   Reply
    master -> worker   Stop                   stop accepting, finish, exit 0
End-of-file on the pipe means the other side is gone: a worker then exits.

Wire format: each message is one `Connection.send_bytes` frame (the connection adds a
4-byte length prefix) holding `VERSION` (one byte) then a pickle (protocol 5) of one message
object. Receivers refuse frames over `MAX_FRAME_BYTES`, frames of another version, and
pickles that name any class outside this package's message, plan and template modules.
A listening socket travels right after the Control that announces it, as one byte `S` with
the descriptor in SCM_RIGHTS ancillary data (the pipe is a Unix socket pair); frames are
read to their exact length, so the byte is never swallowed by a frame read.
"""

from __future__ import annotations

import asyncio
import io
import os
import pickle
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from farm.config.fault_rules import FaultRule
from farm.config.plan import ServerSpec
from farm.config.templates import DeviceTemplate

VERSION = 1
MAX_FRAME_BYTES = 64 * 1024 * 1024
STOP_SERVER = "stop_server"
START_SERVER = "start_server"
_SOCKET_MARK = b"S"
_ALLOWED_MODULES = frozenset(
    {"farm.ipc.messages", "farm.config.plan", "farm.config.templates", "farm.config.fault_rules"}
)
# Each active fault with the shard positions (indexes into Assign.servers) it applies to.
ActiveFaults = tuple[tuple[FaultRule, tuple[int, ...]], ...]
_ALLOWED_BUILTINS = frozenset({"frozenset", "set", "slice"})


class ProtocolError(Exception):
    """A frame that is not a message of this version."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Assign:
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerFailed:
    worker: int
    server: str
    address: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    worker: int
    servers_up: int
    failed: tuple[ServerFailed, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    worker: int
    seq: int
    servers_up: int
    loop_lag_s: float
    cpu_s: float
    rss_bytes: int
    connections: int
    requests: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    active: ActiveFaults
    seq: int  # echoed by FaultsApplied


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultsApplied:
    worker: int
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Control:
    request_id: int
    op: str
    server: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    request_id: int
    ok: bool
    result: Any = None
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stop:
    reason: str = ""


Message = (
    Assign | Ready | Heartbeat | ServerFailed | Faults | FaultsApplied | Control | Reply | Stop
)


class _Connection(Protocol):
    def send_bytes(self, buf: bytes) -> None: ...
    def recv_bytes(self, maxlength: int | None = None) -> bytes: ...


class _MessageUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module in _ALLOWED_MODULES or (module == "builtins" and name in _ALLOWED_BUILTINS):
            return super().find_class(module, name)
        raise ProtocolError(f"pipe message names a foreign class {module}.{name}")


def encode(message: Message) -> bytes:
    frame = bytes([VERSION]) + pickle.dumps(message, protocol=5)
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"{type(message).__name__} is {len(frame)} bytes, over the cap")
    return frame


def decode(frame: bytes) -> Message:
    if not frame or frame[0] != VERSION:
        found = frame[0] if frame else "nothing"
        raise ProtocolError(f"pipe frame version {found}, expected {VERSION}")
    try:
        message = _MessageUnpickler(io.BytesIO(frame[1:])).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError) as exc:
        raise ProtocolError(f"pipe frame is not a readable message: {exc}") from exc
    if not isinstance(message, Message):
        raise ProtocolError(f"pipe frame holds a {type(message).__name__}, not a message")
    return message


def watch(loop: asyncio.AbstractEventLoop, conn: Any, callback: Callable[[], None]) -> None:
    """Call `callback` when a message can be read, keeping the pipe in blocking mode.

    uvloop's add_reader makes the descriptor non-blocking; then a frame larger than the
    socket buffer (an Assign of thousands of servers) fails half-written with EAGAIN and the
    stream is corrupt. Frames must go out whole, so the pipe goes back to blocking: the
    reader is only called when data is there, and writers wait for room.
    """
    loop.add_reader(conn.fileno(), callback)
    os.set_blocking(conn.fileno(), True)


def send(conn: _Connection, message: Message) -> None:
    conn.send_bytes(encode(message))


def receive(conn: _Connection) -> Message:
    """Read one message; raises EOFError when the other side is gone."""
    try:
        frame = conn.recv_bytes(MAX_FRAME_BYTES)
    except OSError as exc:
        if "too long" in str(exc) or "bad message length" in str(exc):
            raise ProtocolError(f"pipe frame over {MAX_FRAME_BYTES} bytes") from exc
        raise
    return decode(frame)


def send_socket(conn: Any, sock: socket.socket) -> None:
    """Pass `sock`'s descriptor to the other end (which calls `receive_socket`)."""
    with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        socket.send_fds(channel, [_SOCKET_MARK], [sock.fileno()])


def receive_socket(conn: Any) -> socket.socket:
    """The socket `send_socket` passed (blocks until it arrives)."""
    with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        data, fds, _, _ = socket.recv_fds(channel, 1, 1)
    if data != _SOCKET_MARK or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise ProtocolError(f"expected a socket on the pipe, got {data!r} and {len(fds)} fds")
    return socket.socket(fileno=fds[0])
