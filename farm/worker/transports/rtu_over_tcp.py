"""RTU over TCP: a serial device behind a terminal server, RTU frames one after another on a
TCP stream (how it frames and answers them: farm.worker.framing).

Sits beside the engine in a worker (... worker -> rtu_over_tcp -> framing -> engine -> banks).
Frames pipelined in one read are answered in order, a chunk of them per write, with the MBAP
connection's backpressure and frame timeout: `RtuConnection` is a `ModbusConnection` with its
own frames. A frame's length comes from its function code and byte counts
(farm.modbus.rtu.request_length), checked by its CRC. Where they disagree (a wrong byte
count, a truncated request), the frame is the shortest prefix whose CRC matches, found when
the next bytes arrive or at a silence of `SILENCE_S` with nothing more (a serial device's
3.5 characters, widened for TCP), and the engine answers it 03: the next request is never
lost to it.
"""

from __future__ import annotations

import asyncio
from time import perf_counter_ns
from typing import TYPE_CHECKING

from farm.ipc.stats import BYTES_RECEIVED, CRC_ERRORS
from farm.modbus import rtu
from farm.worker.framing import RTU, answer_serial
from farm.worker.limits.guard import ServerConnections
from farm.worker.transports.connection import FLUSH_INPUT_BYTES, ModbusConnection

if TYPE_CHECKING:
    from farm.worker.engine import Device

SILENCE_S = 0.05  # bytes of an unfinished frame, then nothing for this long: the frame ended


class RtuConnection(ModbusConnection):
    """One client connection to one device, speaking RTU frames over TCP.

    Backpressure and the frame timeout are `ModbusConnection`'s: a long read is answered
    `FLUSH_INPUT_BYTES` of requests at a time by its `answer_in_chunks`, over this class's
    `frames` and `answer_chunk`. An unfinished frame left in the buffer starts the frame timeout
    and the silence timer (`track_partial`): a TCP stream has no silence to end it, as a
    serial line would, so a timer stands in for one.
    """

    __slots__ = ("silence",)
    framing = RTU
    source = "rtu-over-tcp"

    def __init__(self, device: Device, guard: ServerConnections) -> None:
        super().__init__(device, guard)
        self.silence: asyncio.TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.silence is not None:
            self.silence.cancel()
            self.silence = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        arrived = perf_counter_ns()
        self.seen = self.clock.now  # for the idle timeout (farm.worker.limits.guard)
        caller = self.device.caller = self.caller
        if caller is not None:
            caller.now = arrived
        self.device.counters[BYTES_RECEIVED] += len(data)
        buffer = self.buffer
        buffer += data
        if len(buffer) > FLUSH_INPUT_BYTES:
            self.answer_in_chunks(arrived)  # mind backpressure as it goes
            return
        frames, position = self.frames(0)
        del buffer[:position]
        if frames:
            faults = self.device.faults
            if faults is not None:  # the one check a server without faults pays
                faults.answer_frames(self, arrived, frames, RTU)
            else:
                self.answer_chunk(frames, arrived)
        if buffer or self.partial_at >= 0 or self.silence is not None:  # most reads end whole
            self.track_partial(position)  # the frame timeout, as the engine's; the silence

    def answer_frames(self, frames: list[tuple[int, int, bytes]], arrived: int) -> None:
        faults = self.device.faults
        if faults is not None:  # the one check a server without faults pays
            faults.answer_frames(self, arrived, frames, RTU)
        else:
            self.answer_chunk(frames, arrived)

    def answer_chunk(self, frames: list[tuple[int, int, bytes]], arrived: int) -> None:
        device = self.device
        replies = []
        for _, unit, pdu in frames:
            response = answer_serial(device, unit, pdu)
            if response is not None:
                replies.append(rtu.frame(unit, response))
        self._send(replies, arrived)

    def malformed_head(self) -> bool:
        return False  # RTU has no header to be malformed: a frame with a bad CRC is skipped

    def track_partial(self, position: int) -> None:
        super().track_partial(position)
        if self.silence is not None:
            self.silence.cancel()
            self.silence = None
        if self.buffer and not (self.paused or self.held) and self.transport is not None:
            self.silence = asyncio.get_running_loop().call_later(SILENCE_S, self.heard_silence)

    def heard_silence(self) -> None:
        """Nothing arrived for `SILENCE_S` after an unfinished frame: it ended where the
        bytes did (the whole buffer if its CRC matches, else the shortest prefix whose CRC
        does), as at a serial line's silence; no match is a CRC error, dropped."""
        self.silence = None
        buffer = self.buffer
        if not buffer or self.transport is None:
            return
        size = len(buffer)
        whole = size >= rtu.MIN_FRAME and rtu.crc_ok(buffer, 0, size)
        end = size if whole else rtu.search_end(buffer, 0)
        if end == rtu.NEED_MORE:
            # Noise, dropped. The frame timeout keeps running from the first of it: a peer
            # that sends a byte now and then, never a frame, is still closed by it.
            self.device.counters[CRC_ERRORS] += 1
            buffer.clear()
            return
        frame = (0, buffer[0], bytes(buffer[1 : end - 2]))
        del buffer[:end]
        self.answer_frames([frame], perf_counter_ns())
        frames, position = self.frames(0)  # the frames behind it, if any
        del buffer[:position]
        if frames:
            self.answer_frames(frames, perf_counter_ns())
        self.track_partial(end)  # a frame ended: one left unfinished starts its timeout anew

    def frames(self, start: int = 0) -> tuple[list[tuple[int, int, bytes]], int]:
        """The whole frames from `start` on, at most `FLUSH_INPUT_BYTES` of them (a chunk):
        (0, unit id, PDU) of each whose CRC matches (0: RTU has no transaction id), and where
        the bytes they took end."""
        buffer = self.buffer
        frames: list[tuple[int, int, bytes]] = []
        position = start
        available = len(buffer)
        last = start + FLUSH_INPUT_BYTES
        while available - position >= rtu.MIN_FRAME and position < last:
            length = rtu.FIXED_REQUEST[buffer[position + 1]] or rtu.request_length(buffer, position)
            if length < 0:
                length = rtu.frame_end(buffer, position, length)
            end = position + length
            if length == rtu.NEED_MORE or end > available:
                if available - position < rtu.MAX_FRAME:
                    break  # the rest is on its way, or a silence ends it (heard_silence)
            elif length <= rtu.MAX_FRAME and rtu.crc_ok(buffer, position, end):
                frames.append((0, buffer[position], bytes(buffer[position + 1 : end - 2])))
                position = end
                continue
            # Counts and CRC disagree, or no frame is this long: the frame ended earlier.
            length = rtu.search_end(buffer, position)
            if length == rtu.NEED_MORE:
                if available - position >= rtu.MAX_FRAME:
                    self.device.diagnostics.overrun()  # no frame can be this long: drop it all
                else:
                    self.device.counters[CRC_ERRORS] += 1
                return frames, available  # skip to the next "silence": the end of this read
            end = position + length
            frames.append((0, buffer[position], bytes(buffer[position + 1 : end - 2])))
            position = end
        return frames, position
