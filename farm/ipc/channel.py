"""One end of a worker's pipe on an event loop: reads and writes that never block it.

Used by the supervisor (farm.master.supervision) and the worker (farm.worker.process) alike,
once the loop runs; farm.ipc.messages says what a frame holds. A peer that stops reading
(SIGSTOPped, stuck) must never freeze the loop that writes to it: the API, the watchdog that
replaces that peer and the signal handlers all live on it. So the descriptor is
non-blocking: a message is queued whole and written as far as the socket buffer takes it,
the rest when the loop says the pipe is writable again (`add_writer`); a queue past
`QUEUE_CAP_BYTES` is the peer's failure (`PipeFull`), which the caller hands to its
watchdog. Reads take what is there and hand on each complete frame; a frame's listening
sockets (SCM_RIGHTS) are taken with the marks that carry them, however the bytes arrive.

Framing, as `multiprocess.Connection.send_bytes` writes it (so `Connection.recv_bytes`
reads the Assign before a worker's loop starts, and the other way round): a 4-byte
big-endian signed length, then the frame. A message that announces sockets
(`messages.sockets_announced`) is followed by one byte `S` per chunk of at most
`messages.FDS_AT_ONCE` descriptors, the descriptors riding on that byte.
"""

from __future__ import annotations

import array
import asyncio
import collections
import errno
import os
import socket
import struct
from collections.abc import Callable, Sequence

from farm.ipc import messages
from farm.ipc.messages import Connection, Message, ProtocolError

QUEUE_CAP_BYTES = 2 * messages.MAX_FRAME_BYTES  # an Assign of the largest shard, and more
_READ_BYTES = 256 * 1024
_HEADER = struct.Struct("!i")

OnMessage = Callable[[Message, list[socket.socket]], None]
OnClosed = Callable[[BaseException | None], None]  # None: end of file; else why


class PipeFull(Exception):
    """The peer has not read what was written to it for too long."""


class Channel:
    """A pipe end driven by `loop`: `on_message` gets each message (with the sockets that
    came with it); `on_closed` is called once, at end of file or on a broken, garbled or
    full pipe, after which nothing is read or written."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: Connection,
        on_message: OnMessage,
        on_closed: OnClosed,
    ) -> None:
        self.loop = loop
        # A duplicate: `conn` stays its owner's to close, and closing one end never makes
        # the other write into a descriptor number reused meanwhile.
        self.sock = socket.socket(fileno=os.dup(conn.fileno()))
        self.sock.setblocking(False)
        self.on_message = on_message
        self.on_closed = on_closed
        self.closed = False
        self.queued_bytes = 0
        # Bytes to write, each with the sockets that ride on it (a mark's).
        self._out: collections.deque[tuple[memoryview, tuple[socket.socket, ...]]] = (
            collections.deque()
        )
        self._writing = False
        self._in = bytearray()
        self._fds: collections.deque[int] = collections.deque()
        self._waiting: tuple[Message, int] | None = None  # a message, the sockets it awaits
        loop.add_reader(self.sock.fileno(), self._readable)

    # -- writing ---------------------------------------------------------------------------

    def send(self, message: Message, socks: Sequence[socket.socket] = ()) -> None:
        """Queue `message` (and `socks`, which it announces) and write what fits now;
        raises PipeFull (the channel is closed then) or ProtocolError (nothing queued). The
        sockets must stay open until written: one closed before ends the pipe (EBADF)."""
        if self.closed:
            raise BrokenPipeError("the pipe is closed")
        frame = messages.encode(message)
        size = _HEADER.size + len(frame)
        if self.queued_bytes + size > QUEUE_CAP_BYTES:
            full = PipeFull(f"{self.queued_bytes} bytes wait unread in the pipe")
            self.close(full)
            raise full
        self._out.append((memoryview(_HEADER.pack(len(frame)) + frame), ()))
        for start in range(0, len(socks), messages.FDS_AT_ONCE):
            # The sockets themselves, not duplicates: a shard's thousands of listeners would
            # otherwise be held twice until written, past the open-files limit the farm's
            # budget counts on. One the caller closes before it is written ends the pipe.
            chunk = tuple(socks[start : start + messages.FDS_AT_ONCE])
            self._out.append((memoryview(messages.SOCKET_MARK), chunk))
        self.queued_bytes += size + len(socks)
        self._write()

    def _write(self) -> None:
        while self._out and not self.closed:
            data, socks = self._out[0]
            try:
                if socks:
                    fds = array.array("i", [sock.fileno() for sock in socks])
                    if min(fds) < 0:
                        raise OSError(errno.EBADF, "a socket was closed before it was sent")
                    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]
                    sent = self.sock.sendmsg([data], ancillary)
                else:
                    sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.close(exc)
                return
            self.queued_bytes -= sent
            if sent < len(data):
                self._out[0] = (data[sent:], ())
                break
            self._out.popleft()
        wanted = bool(self._out) and not self.closed
        if wanted != self._writing:
            if wanted:
                self.loop.add_writer(self.sock.fileno(), self._write)
            else:
                self.loop.remove_writer(self.sock.fileno())
            self._writing = wanted

    # -- reading ---------------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data, ancillary, flags, _ = self.sock.recvmsg(_READ_BYTES, messages.CHUNK_ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close(exc)
            return
        self._fds.extend(messages.descriptors(ancillary))
        if flags & socket.MSG_CTRUNC:
            self.close(ProtocolError("more descriptors came than a chunk holds"))
            return
        if not data:
            self.close(None)
            return
        self._in += data
        try:
            self._deliver()
        except ProtocolError as exc:
            self.close(exc)

    def _deliver(self) -> None:
        """Hand on every complete message in the buffer, in order."""
        while not self.closed:
            if self._waiting is not None:
                message, count = self._waiting
                marks = -(-count // messages.FDS_AT_ONCE)
                if len(self._in) < marks:
                    return
                if (
                    bytes(self._in[:marks]) != messages.SOCKET_MARK * marks
                    or len(self._fds) < count
                ):
                    raise ProtocolError(f"expected {count} sockets after {type(message).__name__}")
                del self._in[:marks]
                socks = [socket.socket(fileno=self._fds.popleft()) for _ in range(count)]
                self._waiting = None
                self.on_message(message, socks)
                continue
            if len(self._in) < _HEADER.size:
                return
            (size,) = _HEADER.unpack_from(self._in)
            if not 0 <= size <= messages.MAX_FRAME_BYTES:
                raise ProtocolError(f"pipe frame of {size} bytes, over {messages.MAX_FRAME_BYTES}")
            if len(self._in) < _HEADER.size + size:
                return
            frame = bytes(self._in[_HEADER.size : _HEADER.size + size])
            del self._in[: _HEADER.size + size]
            message = messages.decode(frame)
            count = messages.sockets_announced(message)
            if count:
                self._waiting = (message, count)
            else:
                self.on_message(message, [])

    # -- the end ---------------------------------------------------------------------------

    def close(self, why: BaseException | None = None) -> None:
        """Stop reading and writing (what is queued is dropped); tells `on_closed` once."""
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.sock.fileno())
        if self._writing:
            self.loop.remove_writer(self.sock.fileno())
            self._writing = False
        self._out.clear()
        _close_fds(list(self._fds))
        self._fds.clear()
        self.sock.close()
        self.on_closed(why)


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
