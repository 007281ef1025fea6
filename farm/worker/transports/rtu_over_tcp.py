"""RTU over TCP: a serial device behind a terminal server, RTU frames one after another on a
TCP stream (how it frames and answers them: farm.worker.framing).

Sits beside the engine in a worker (... worker -> rtu_over_tcp -> framing -> engine -> banks).
Frames pipelined in one read are answered in order, a chunk of them per write, with the MBAP
connection's backpressure and frame timeout: `RtuConnection` is a `ModbusConnection` with its
own frames.
"""

from __future__ import annotations

from time import perf_counter_ns

from farm.ipc.stats import BYTES_RECEIVED, CRC_ERRORS
from farm.modbus import rtu
from farm.worker.framing import RTU, answer_serial
from farm.worker.transports.connection import FLUSH_INPUT_BYTES, ModbusConnection


class RtuConnection(ModbusConnection):
    """One client connection to one device, speaking RTU frames over TCP.

    Backpressure and the frame timeout are `ModbusConnection`'s: a long read is answered
    `FLUSH_INPUT_BYTES` of requests at a time by its `answer_in_chunks`, over this class's
    `frames` and `answer_chunk`. An unfinished frame left in the buffer starts the frame timeout
    (`track_partial`): a TCP stream has no silence to end it, as a serial line would.
    """

    __slots__ = ()
    framing = RTU
    source = "rtu-over-tcp"

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
        if buffer or self.partial_at >= 0:  # most reads end on a whole frame
            self.track_partial(position)  # the frame timeout, as the engine's

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
            if length == rtu.SEARCH:
                length = rtu.search_end(buffer, position)
            if length > rtu.MAX_FRAME or (
                length == rtu.NEED_MORE and available - position >= rtu.MAX_FRAME
            ):
                self.device.diagnostics.overrun()  # no frame can be this long: drop it all
                return frames, available
            if length == rtu.NEED_MORE or position + length > available:
                break
            end = position + length
            if not rtu.crc_ok(buffer, position, end):
                self.device.counters[CRC_ERRORS] += 1
                return frames, available  # skip to the next "silence": the end of this read
            frames.append((0, buffer[position], bytes(buffer[position + 1 : end - 2])))
            position = end
        return frames, position
