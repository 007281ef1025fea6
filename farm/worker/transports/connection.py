"""One client connection to one device over a stream: MBAP framing, backpressure, the
frame timeout (`ModbusConnection`, an `asyncio.Protocol`).

Sits between a worker's servers and the engine (... worker -> connection -> engine -> banks):
a connection frames MBAP itself and answers every complete frame in a buffer, in order, with
one write (pipelined requests are legal Modbus/TCP), each through its `Device`
(farm.worker.engine). A server with faults has its frames answered by farm.worker.faults.hooks, a
chunk at a time. RTU over TCP (farm.worker.transports.rtu_over_tcp) and TLS
(farm.worker.transports.tls) are
connections of their own framing on the same loop.
"""

from __future__ import annotations

import asyncio
import socket
from bisect import bisect_left
from time import perf_counter_ns
from typing import TYPE_CHECKING, ClassVar, cast

from farm.ipc.stats import (
    BYTES_RECEIVED,
    BYTES_SENT,
    CONNECTIONS_ACCEPTED,
    CONNECTIONS_OPEN,
    DURATION,
    DURATION_BOUNDS_NS,
    DURATION_SUM_NS,
    FIRST_BOUND_NS,
    MALFORMED_FRAMES,
    REQUEST_SLOT,
)
from farm.modbus import mbap
from farm.worker.fastpath import register_span
from farm.worker.framing import MBAP, Framing
from farm.worker.limits.guard import ServerConnections
from farm.worker.limits.wheel import NOT_SCHEDULED
from farm.worker.observe.callers import Caller

if TYPE_CHECKING:
    from farm.worker.engine import Device
    from farm.worker.outbox import Outbox

# Backpressure (ModbusConnection): unsent answers past HIGH_WATER_BYTES pause reading until
# they drain below LOW_WATER_BYTES; a long read is answered FLUSH_INPUT_BYTES of requests at a
# time (at most 33 times as many bytes of answers: 8-byte requests, 260-byte answers).
HIGH_WATER_BYTES = 64 * 1024
LOW_WATER_BYTES = 16 * 1024
FLUSH_INPUT_BYTES = 2048
# The kernel's send buffer of a server connection (Linux doubles it: 64 KiB). Left to its
# autotuning it grows to megabytes, all answered before backpressure sees anything: 50
# clients that never read then cost the loop seconds of work at once (issue 18, 4).
SEND_BUFFER_BYTES = 32 * 1024
_HEADER = mbap.HEADER
MAX_MBAP_LENGTH = mbap.MAX_LENGTH


def cap_send_buffer(transport: asyncio.BaseTransport) -> None:
    """Keep the kernel from taking megabytes of answers a peer does not read (a TLS
    transport has no socket of its own: its TCP transport is capped before the handshake)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


class ModbusConnection(asyncio.Protocol):
    """One client connection to one device.

    Backpressure: when answers the peer has not read pile up past `HIGH_WATER_BYTES` in the
    transport, the transport calls `pause_writing` and the connection stops reading (as a
    device's TCP stack would: the peer's sends then block in its kernel), until
    `resume_writing` at `LOW_WATER_BYTES`. One read's frames are answered in chunks of
    `FLUSH_INPUT_BYTES`, so a read full of pipelined requests cannot queue more than a chunk's
    answers past the mark: a peer that never reads costs a bounded amount of memory. Answers
    a fault holds back (farm.worker.outbox) pause reading the same way (`hold`).
    """

    __slots__ = (
        "again",
        "again_head",
        "again_pdu",
        "again_slot",
        "again_span",
        "buffer",
        "caller",
        "clock",
        "device",
        "due",
        "guard",
        "held",
        "outbox",
        "partial_at",
        "paused",
        "peer",
        "seen",
        "transport",
    )

    framing: ClassVar[Framing] = MBAP  # how the faults frame its answers
    source: ClassVar[str] = "tcp"  # the transport, as the write journal names it

    def __init__(self, device: Device, guard: ServerConnections) -> None:
        self.device = device
        self.guard = guard
        self.clock = guard.clock
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.outbox: Outbox | None = None  # only once a fault holds an answer back
        self.paused = False  # by the transport: the peer is not reading its answers
        self.held = False  # by the outbox: answers held back by a fault pile up
        self.seen = 0  # the timer wheel's tick at the last read (farm.worker.limits.guard)
        self.partial_at = NOT_SCHEDULED  # the tick an unfinished frame began
        self.due = NOT_SCHEDULED  # the tick the wheel looks at this connection next
        self.peer = ""  # "host:port", filled in when something needs to name it
        self.caller: Caller | None = None
        # A poller's request kept to answer it again (`remember`): the frame after its
        # transaction id, its caller's `last` PDU, the answer's bytes after the transaction
        # id up to the registers, its request counter and its registers (a live slice).
        self.again = b""
        self.again_pdu = b""
        self.again_head = b""
        self.again_slot = 0
        self.again_span = memoryview(b"")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.opened(transport)
        self.guard.admit(self)  # may refuse (and close) it

    def opened(self, transport: asyncio.BaseTransport) -> None:
        """Take the transport: counted, its backpressure marks set."""
        self.transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        self.caller = Caller.of(peername, self.source, self.device.client_book())
        counters = self.device.counters
        counters[CONNECTIONS_OPEN] += 1
        counters[CONNECTIONS_ACCEPTED] += 1
        self.transport.set_write_buffer_limits(high=HIGH_WATER_BYTES, low=LOW_WATER_BYTES)
        cap_send_buffer(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        counters = self.device.counters
        # Zero only if the gauge was reset under this connection (a uint64 cannot go below).
        if counters[CONNECTIONS_OPEN]:
            counters[CONNECTIONS_OPEN] -= 1
        self.transport = None
        self.guard.release(self)
        if self.outbox is not None:
            self.outbox.drop()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        self._resume_reading()

    def hold(self, held: bool) -> None:
        """The outbox's backpressure: stop reading while it holds too many answers."""
        self.held = held
        if held and self.transport is not None:
            self.transport.pause_reading()
        elif not held and not self.paused:
            self._resume_reading()

    def _resume_reading(self) -> None:
        if self.transport is not None and not self.held:
            self.transport.resume_reading()
            if self.buffer:
                self.data_received(b"")  # the frames left waiting when it paused

    def data_received(self, data: bytes) -> None:
        self.seen = self.clock.now  # for the idle timeout (farm.worker.limits.guard)
        arrived = perf_counter_ns()
        device = self.device
        caller = device.caller = self.caller
        if caller is not None:
            caller.now = arrived
        counters = device.counters
        counters[BYTES_RECEIVED] += len(data)
        if device.faults is not None:  # the one check a server without faults pays
            outbox = self.outbox
            if outbox is None or not outbox.closing:  # else a disconnect is queued: no more
                self.buffer += data
                self.answer_in_chunks(arrived)  # the faults answer a chunk at a time too
            return
        buffer = self.buffer
        if not buffer and len(data) >= 8:
            if (
                data[2:] == self.again
                and caller is not None
                and caller.last is self.again_pdu  # nothing else asked in between
                and device.tracer is None
                and not device.diagnostics.listen_only
            ):
                # A poller asking what it asked last (`remember`): what Device.answer and the
                # fast path would do for it, without parsing and dispatching it again.
                counters[self.again_slot] += 1
                caller.times.append(arrived)
                transport = self.transport
                if transport is not None:
                    out = data[:2] + self.again_head + self.again_span
                    transport.write(out)
                    counters[BYTES_SENT] += len(out)
                    took = perf_counter_ns() - arrived
                    bucket = 0 if took <= FIRST_BOUND_NS else bisect_left(DURATION_BOUNDS_NS, took)
                    counters[DURATION + bucket] += 1
                    counters[DURATION_SUM_NS] += took
                if self.partial_at >= 0:
                    self.partial_at = NOT_SCHEDULED
                return
            # The common read: one whole request, nothing left from before. Answered from
            # `data` itself: no copy into the buffer, no list of answers to join.
            transaction, protocol, length, unit = _HEADER.unpack_from(data)
            if protocol == 0 and 2 <= length <= MAX_MBAP_LENGTH and len(data) == 6 + length:
                pdu = data[7:]
                response = device.answer(unit, pdu)
                if caller is not None and caller.last is not pdu and response is not None:
                    self.remember(data, unit, response)  # asked again: may be kept
                if response is not None and self.transport is not None:
                    out = _HEADER.pack(transaction, 0, len(response) + 1, unit) + response
                    self.transport.write(out)
                    counters[BYTES_SENT] += len(out)
                    took = perf_counter_ns() - arrived
                    bucket = 0 if took <= FIRST_BOUND_NS else bisect_left(DURATION_BOUNDS_NS, took)
                    counters[DURATION + bucket] += 1
                    counters[DURATION_SUM_NS] += took
                if self.partial_at >= 0:
                    self.partial_at = NOT_SCHEDULED
                return
        buffer += data
        available = len(buffer)
        if available > FLUSH_INPUT_BYTES:
            self.answer_in_chunks(arrived)  # a long read: mind backpressure as it goes
            return
        # No check of `paused` here: a paused transport reads nothing, and resume_writing
        # clears it before it calls this for the frames left waiting.
        replies: list[bytes] = []
        position = 0
        malformed = False
        while available - position >= 7:
            transaction, protocol, length, unit = _HEADER.unpack_from(buffer, position)
            if protocol != 0 or length < 2 or length > MAX_MBAP_LENGTH:
                malformed = True
                break
            end = position + 6 + length
            if end > available:
                break
            response = device.answer(unit, bytes(buffer[position + 7 : end]))
            if response is not None:
                replies.append(_HEADER.pack(transaction, 0, len(response) + 1, unit) + response)
            position = end
        del buffer[:position]
        if replies and self.transport is not None:
            out = b"".join(replies)
            self.transport.write(out)
            counters[BYTES_SENT] += len(out)
            took = perf_counter_ns() - arrived
            answered = len(replies)
            # Nearly every answer beats the first bound; skip the search for those.
            bucket = 0 if took <= FIRST_BOUND_NS else bisect_left(DURATION_BOUNDS_NS, took)
            counters[DURATION + bucket] += answered
            counters[DURATION_SUM_NS] += answered * took
        if malformed:
            counters[MALFORMED_FRAMES] += 1
            self.malformed(protocol, length)
        elif buffer:
            # A frame begun and not finished: its timeout runs from the first read that left
            # it unfinished (a frame finished in this read means a new one began).
            if position or self.partial_at < 0:
                self.guard.frame_started(self)
        elif self.partial_at >= 0:
            self.partial_at = NOT_SCHEDULED

    def remember(self, data: bytes, unit: int, response: bytes) -> None:
        """Keep a read of registers that its caller repeated (the usual poll), answered
        normally, for `data_received` to answer again from the bank without the engine.

        Its caller's `last` is the PDU it sent before (Device.answer leaves it when the same
        request comes again): the next read may take the short way while that is still
        the caller's `last`, so any other request in between, on any path, ends it. Traced,
        listen-only and faulted devices take the engine's way, checked on every read."""
        caller, device = self.caller, self.device
        bank = device.banks.get(unit)
        if caller is None or bank is None or device.tracer is not None:
            return
        pdu = caller.last
        if pdu != data[7:] or caller.unit != unit or response[0] != pdu[0]:
            return
        span = register_span(bank, pdu)
        if span is None or len(response) != 2 + len(span):
            return
        self.again = data[2:]
        self.again_pdu = pdu
        self.again_head = _HEADER.pack(0, 0, len(response) + 1, unit)[2:] + response[:2]
        self.again_slot = REQUEST_SLOT[pdu[0]]
        self.again_span = span

    def answer_in_chunks(self, arrived: int) -> None:
        """Answer the buffer's frames a chunk (`frames`) at a time, each chunk answered and
        written (or handed to the faults, whose outbox may hold it) before the next is taken,
        stopping as soon as the transport pauses or the outbox holds: the rest waits in the
        buffer until the connection reads again. A long read of every framing comes here, and
        every read of a faulted server."""
        faults = self.device.faults
        position = 0
        while True:
            frames, end = self.frames(position)
            if frames:
                if faults is not None:
                    faults.answer_frames(self, arrived, frames, self.framing)
                else:
                    self.answer_chunk(frames, arrived)  # may pause the transport
            taken, position = end - position, end
            # Less than a chunk taken: no whole frame is left. Else go on unless paused.
            if taken < FLUSH_INPUT_BYTES or self.paused or self.held or self.transport is None:
                break
        buffer = self.buffer
        # A disconnect fault may have cleared the buffer under us: del clamps to its length.
        del buffer[:position]
        if taken < FLUSH_INPUT_BYTES and len(buffer) >= 7 and self.malformed_head():
            return  # the frames ran out at a malformed one: closed
        self.track_partial(position)

    def frames(self, start: int = 0) -> tuple[list[tuple[int, int, bytes]], int]:
        """The whole MBAP frames from `start` on, a chunk of them (until one ends at or past
        `FLUSH_INPUT_BYTES`): (transaction id, unit id, PDU) of each, and where they end. A
        malformed header ends them too (`malformed_head` sees to it)."""
        buffer = self.buffer
        frames: list[tuple[int, int, bytes]] = []
        position = start
        available = len(buffer)
        last = start + FLUSH_INPUT_BYTES
        while available - position >= 7 and position < last:
            transaction, protocol, length, unit = _HEADER.unpack_from(buffer, position)
            if protocol != 0 or length < 2 or length > MAX_MBAP_LENGTH:
                break
            end = position + 6 + length
            if end > available:
                break
            frames.append((transaction, unit, bytes(buffer[position + 7 : end])))
            position = end
        return frames, position

    def answer_chunk(self, frames: list[tuple[int, int, bytes]], arrived: int) -> None:
        """Answer and write a chunk of frames of a server without faults."""
        device = self.device
        replies = []
        for transaction, unit, pdu in frames:
            response = device.answer(unit, pdu)
            if response is not None:
                replies.append(_HEADER.pack(transaction, 0, len(response) + 1, unit) + response)
        self._send(replies, arrived)

    def malformed_head(self) -> bool:
        """Whether the buffer starts with a malformed MBAP header (at least 7 bytes in it);
        if it does, the connection is closed."""
        _, protocol, length, _ = _HEADER.unpack_from(self.buffer)
        if mbap.header_ok(protocol, length):
            return False
        self.device.counters[MALFORMED_FRAMES] += 1
        self.malformed(protocol, length)
        return True

    def _send(self, replies: list[bytes], arrived: int) -> None:
        """Write a chunk of answers (a short read writes inline)."""
        if not replies or self.transport is None:
            return
        counters = self.device.counters
        out = b"".join(replies)
        self.transport.write(out)  # may call pause_writing
        counters[BYTES_SENT] += len(out)
        took = perf_counter_ns() - arrived
        bucket = 0 if took <= FIRST_BOUND_NS else bisect_left(DURATION_BOUNDS_NS, took)
        counters[DURATION + bucket] += len(replies)
        counters[DURATION_SUM_NS] += len(replies) * took

    def track_partial(self, position: int) -> None:
        """After a read that took `position` bytes of whole frames: an unfinished frame left
        starts its timeout, as in `data_received`."""
        if self.buffer and not (self.paused or self.held):
            if position or self.partial_at < 0:
                self.guard.frame_started(self)
        elif not self.buffer and self.partial_at >= 0:
            self.partial_at = NOT_SCHEDULED

    def malformed(self, protocol: int, length: int) -> None:
        """Close the connection for a malformed frame: counted, said (throttled)."""
        self.buffer.clear()
        self.partial_at = NOT_SCHEDULED
        if self.transport is not None:
            detail = f"protocol id {protocol}" if protocol else f"length field {length}"
            self.guard.malformed(self, detail)
            self.transport.close()
