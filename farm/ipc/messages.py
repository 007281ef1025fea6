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
                                              CLIENTS asks what the clients of its servers
                                              did (Reply.clients), TALLY what they did
                                              since the last TALLY (Reply.tallies, for
                                              /metrics); TRACE_START and
                                              TRACE_STOP trace a server
    master -> worker   Faults                 what changed in the faults active on the
                                              worker's servers: those added (or changed), and
                                              the ids of those that ended (Assign carries all)
    worker -> master   FaultsApplied          the Faults of that `seq` are in effect
    worker -> master   Reply
    master -> worker   AddServers             servers that join the shard (the fleet scaled
                                              up); their listening sockets follow it;
                                              answered by Reply
    master -> worker   RemoveServers          servers that leave it: ports and connections
                                              closed; answered by Reply
    worker -> master   Events                 what the worker has to say (farm.master.logs
                                              writes it to the farm's one log), sent as soon
                                              as the loop iteration that produced it ends
    master -> worker   Stop                   stop accepting, finish, exit 0
End-of-file on the pipe means the other side is gone: a worker then exits.

Wire format: each message is one frame after a 4-byte big-endian length (as
`Connection.send_bytes` frames it; `LENGTH`), holding `VERSION` (one byte) then the message
as MessagePack (msgspec): a map whose "type" key names the message class, every other key one of its
fields. Templates and server specs inside an Assign are the plain frozen dataclasses of
farm.config, encoded field by field (enums as their values, tuples as arrays). Decoding
is typed: the receiver builds exactly the classes of the `Message` union and their field
types, and nothing else; nothing is unpickled or looked up by name. A frame over
`MAX_FRAME_BYTES`, of another version, naming another type, with a field missing, unknown
or of the wrong type, or with bytes that are not MessagePack (or not UTF-8 where text is
due) is a `ProtocolError`, of a type that says which (`VersionMismatch`, `FrameTooLarge`,
`Garbled`).

Listening sockets travel right after the message that announces them
(`sockets_announced`), as one byte `S` per `FDS_AT_ONCE` of them, the descriptors in
SCM_RIGHTS ancillary data on that byte (the pipe is a Unix socket pair). Once a loop runs,
both ends read and write through farm.ipc.channel, which never blocks it; `send` and
`receive` here block, for the Assign before a worker's loop starts.

A new message is a class here (a `_Message`) added to `Message`; its fields must be types
msgspec encodes (builtins, enums, tuples, dicts, dataclasses or structs of those).
"""

from __future__ import annotations

import array
import os
import socket
import struct
from typing import Protocol

import msgspec

from farm.config.faults.rules import FaultRule
from farm.config.plan import ServerSpec
from farm.config.templates import DeviceTemplate
from farm.ipc.polling import ClientTally, ServerClients
from farm.ipc.tracing import Traced

# 4: FaultRule.extra; 5: Faults carries changes; 6: Assign.journal_writes; 7: Heartbeat without
# requests (the master sums its shard's counters itself); 8: Reply.tallies, PollSummary.gaps;
# 9: PollSummary.gaps flat; 10: Listeners (a worker started before its shard was known)
VERSION = 10
MAX_FRAME_BYTES = 64 * 1024 * 1024
STOP_SERVER = "stop_server"
START_SERVER = "start_server"
CLIENTS = "clients"  # what the shard's clients did (farm.ipc.polling), in Reply.clients
TALLY = "tally"  # per client address, since the last TALLY (farm.ipc.polling), Reply.tallies
TRACE_START = "trace_start"  # trace one server (Control.client: only that client's requests)
TRACE_STOP = "trace_stop"  # end it: its records in Reply.traced (farm.ipc.tracing)
SOCKET_MARK = b"S"  # one per chunk of sockets after the message that announces them
FDS_AT_ONCE = 250  # descriptors per mark: the kernel takes at most SCM_MAX_FD (253) at once
CHUNK_ANCILLARY = socket.CMSG_SPACE(FDS_AT_ONCE * array.array("i").itemsize)  # a mark's, read
LENGTH = struct.Struct("!i")  # before each frame, as multiprocess.Connection.send_bytes puts it
# Each active fault with the shard positions (indexes into Assign.servers) it applies to.
ActiveFaults = tuple[tuple[FaultRule, tuple[int, ...]], ...]


class ProtocolError(Exception):
    """A frame that is not a message of this version.

    ProtocolError
     +-- VersionMismatch   the frame is of another version of the pipe protocol
     +-- FrameTooLarge     over MAX_FRAME_BYTES
     +-- Garbled           not a message of the `Message` union (or sockets missing)
    """


class VersionMismatch(ProtocolError):
    pass


class FrameTooLarge(ProtocolError):
    pass


class Garbled(ProtocolError):
    pass


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
    journal_writes: int = 256  # its servers' size (farm.ipc.journal.DEFAULT_WRITES)


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


class Faults(_Message, frozen=True):
    added: ActiveFaults  # new or changed (by FaultRule.id), as Assign.faults says them
    removed: tuple[int, ...]  # ids of faults that ended
    seq: int  # echoed by FaultsApplied


class FaultsApplied(_Message, frozen=True):
    worker: int
    seq: int


class Control(_Message, frozen=True):
    request_id: int
    op: str  # STOP_SERVER, START_SERVER, CLIENTS, TALLY, TRACE_*; any other is an error
    servers: tuple[str, ...]  # names: one message for a whole fault's servers on a worker
    client: str = ""  # TRACE_START: only this client's requests (HOST or HOST:PORT)


class Reply(_Message, frozen=True):
    request_id: int
    ok: bool
    result: int | None = None  # the servers the worker serves now
    error: str = ""
    clients: tuple[ServerClients, ...] = ()  # to CLIENTS: each server's clients
    tallies: tuple[ClientTally, ...] = ()  # to TALLY: each client address's
    traced: tuple[Traced, ...] = ()  # to TRACE_STOP: what the server answered meanwhile


class AddServers(_Message, frozen=True):
    """Servers that join the shard (their banks and counters are ready, the segments grown:
    the worker maps them again); one listening socket each follows, in order."""

    request_id: int
    servers: tuple[ServerSpec, ...]
    templates: dict[str, DeviceTemplate]  # those the servers name


class Listeners(_Message, frozen=True):
    """Right after the Assign of a worker started before its shard was known (a warm one:
    farm.master.supervision.warm), which got no sockets at spawn: the servers (by index)
    whose listening sockets follow, one each, in order."""

    indices: tuple[int, ...]


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
    | Listeners
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
        raise FrameTooLarge(f"{type(message).__name__} is {len(frame)} bytes, over the cap")
    return frame


def decode(frame: bytes) -> Message:
    if not frame or frame[0] != VERSION:
        found = frame[0] if frame else "nothing"
        raise VersionMismatch(f"pipe frame version {found}, expected {VERSION}")
    if len(frame) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"pipe frame of {len(frame)} bytes, over {MAX_FRAME_BYTES}")
    try:
        message: Message = msgspec.msgpack.decode(memoryview(frame)[1:], type=Message)
    except (msgspec.MsgspecError, ValueError, TypeError) as exc:  # ValueError: bad UTF-8 too
        raise Garbled(f"pipe frame is not a readable message: {exc}") from exc
    return message


def sockets_announced(message: Message) -> int:
    """How many listening sockets follow `message` on the pipe."""
    if isinstance(message, AddServers):
        return len(message.servers)
    if isinstance(message, Control) and message.op == START_SERVER:
        return len(message.servers)
    if isinstance(message, Listeners):
        return len(message.indices)
    return 0


def send(conn: Connection, message: Message) -> None:
    """Write one message, blocking (before a loop runs; farm.ipc.channel on a loop)."""
    frame = encode(message)
    _write_all(conn.fileno(), LENGTH.pack(len(frame)) + frame)


def receive(conn: Connection) -> Message:
    """Read one message, blocking (a worker's Assign, before its loop runs); raises
    EOFError when the other side is gone, a ProtocolError for a frame that is not one."""
    (size,) = LENGTH.unpack(_read_exact(conn.fileno(), LENGTH.size))
    if not 0 <= size <= MAX_FRAME_BYTES:
        raise FrameTooLarge(f"pipe frame of {size} bytes, over {MAX_FRAME_BYTES}")
    return decode(_read_exact(conn.fileno(), size))


def receive_sockets(conn: Connection, count: int) -> list[socket.socket]:
    """Read the `count` sockets that follow a message announcing them, blocking (a warm
    worker's Listeners, before its loop runs); raises EOFError when the other side is gone,
    Garbled when what comes is not a chunk of them."""
    # A duplicate to read through: `conn` stays the worker's pipe, and closing this one
    # leaves it open.
    with socket.socket(fileno=os.dup(conn.fileno())) as pipe:
        pipe.setblocking(True)
        got: list[socket.socket] = []
        while len(got) < count:
            size = min(FDS_AT_ONCE, count - len(got))
            data, ancillary, flags, _ = pipe.recvmsg(1, CHUNK_ANCILLARY)
            fds = descriptors(ancillary)
            got += [socket.socket(fileno=fd) for fd in fds]
            if not data:
                raise EOFError("the other end of the pipe is gone")
            if data != SOCKET_MARK or flags & socket.MSG_CTRUNC or len(fds) != size:
                for sock in got:
                    sock.close()
                raise Garbled(f"expected a chunk of {size} listening sockets on the pipe")
        return got


def descriptors(ancillary: list[tuple[int, int, bytes]]) -> array.array[int]:
    """The descriptors that SCM_RIGHTS ancillary data (from `recvmsg`) carries, in order."""
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return fds


def _read_exact(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other end of the pipe is gone")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
