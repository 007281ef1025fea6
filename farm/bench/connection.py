"""A connection of the load generator: MBAP frames on TCP (or TLS), answers matched by
transaction id, latencies into a dense histogram.

Part of `farm bench` (farm.bench.loadgen runs connections; farm.bench.transports derives the
RTU and UDP ones). Kept lean: this is the generator's hot path, a few microseconds a request.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from farm.modbus.pdu import EXCEPTION_BIT

if TYPE_CHECKING:
    from farm.bench.loadgen import Cycle, Run

_TID = struct.Struct(">H")
DENSE_BUCKETS = 40960  # covers latencies up to 2**31 us
_MAX_US = (1 << 31) - 1


@dataclass(slots=True)
class Tally:
    sent: int = 0
    ok: int = 0
    exceptions: dict[int, int] = field(default_factory=dict)
    exceptions_total: int = 0
    timeouts: int = 0
    connection_errors: int = 0
    lost: int = 0
    unexpected: int = 0
    shed: int = 0
    tls_refused: int = 0  # connections the TLS handshake (or its alert after it) ended
    tls_reason: str = ""  # the last such refusal, as OpenSSL words it
    max_us: int = 0
    dense: list[int] = field(default_factory=lambda: [0] * DENSE_BUCKETS)

    @property
    def responses(self) -> int:
        return self.ok + self.exceptions_total

    def refused_tls(self, error: ssl.SSLError) -> None:
        self.tls_refused += 1
        self.tls_reason = error.reason or str(error)


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection of the generator; `inflight` maps transaction id -> start
    time."""

    def __init__(self, run: Run, target: tuple[str, int], first_tid: int) -> None:
        self.run = run
        self.target = target
        self.tid = first_tid
        self.inflight: dict[int, float] = {}
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.down_since = 0.0
        self.cycle: Cycle  # its requests, set by the run before it opens

    async def open(self, timeout: float) -> None:
        """Connect (with TLS when the run has an SSL context); raises OSError, TimeoutError."""
        loop = asyncio.get_running_loop()
        host, port = self.target
        await asyncio.wait_for(
            loop.create_connection(lambda: self, host, port, ssl=self.run.ssl_context), timeout
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.buffer = b""
        self.down_since = time.perf_counter()
        if self.inflight:
            self.run.tally.lost += len(self.inflight)
            self.inflight.clear()
        self.run.on_idle()

    def send(self, starts: list[float]) -> None:
        """Send one request per start time (already checked against depth and budget)."""
        run, inflight, tid = self.run, self.inflight, self.tid
        tails = self.cycle.tails
        cycle = len(tails)
        frames = []
        for start in starts:
            tid = (tid + 1) & 0xFFFF
            inflight[tid] = start
            frames.append(_TID.pack(tid) + tails[tid % cycle])
        self.tid = tid
        run.tally.sent += len(starts)
        assert self.transport is not None
        self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.buffer:
            data = self.buffer + data
        tally, inflight = self.run.tally, self.inflight
        expected = self.cycle.function_codes
        dense, cycle = tally.dense, len(expected)
        size, pos, ok, max_us = len(data), 0, 0, tally.max_us
        while size - pos >= 8:
            end = pos + 6 + ((data[pos + 4] << 8) | data[pos + 5])
            if end > size:
                break
            tid = (data[pos] << 8) | data[pos + 1]
            start = inflight.pop(tid, None)
            if start is None or end - pos < 8:
                tally.unexpected += 1
            else:
                us = min(int((now - start) * 1e6), _MAX_US)
                shift = us.bit_length() - 11
                dense[(shift << 10) + (us >> shift) if shift > 0 else us] += 1
                if us > max_us:
                    max_us = us
                fc = data[pos + 7]
                if fc == expected[tid % cycle]:
                    ok += 1
                elif fc == expected[tid % cycle] | EXCEPTION_BIT and end - pos >= 9:
                    code = data[pos + 8]
                    tally.exceptions[code] = tally.exceptions.get(code, 0) + 1
                    tally.exceptions_total += 1
                else:
                    tally.unexpected += 1
            pos = end
        self.buffer = data[pos:] if pos < size else b""
        tally.ok += ok
        tally.max_us = max_us
        self.after_answers(now)

    def observe(self, seconds: float) -> None:
        """One answer's latency into the histogram (the TCP path does this inline)."""
        tally = self.run.tally
        us = min(int(seconds * 1e6), _MAX_US)
        shift = us.bit_length() - 11
        tally.dense[(shift << 10) + (us >> shift) if shift > 0 else us] += 1
        tally.max_us = max(tally.max_us, us)

    def after_answers(self, now: float) -> None:
        """Answers arrived: closed loop, send more; else see whether the run is done."""
        run = self.run
        run.last_response = now
        if run.closed_loop and run.sending:
            self.fill(now)
        elif not self.inflight:
            run.on_idle()

    def fill(self, now: float) -> None:
        """Closed loop: top the connection up to `depth` requests in flight."""
        run = self.run
        want = min(run.spec.depth - len(self.inflight), run.budget)
        if want > 0 and self.writable:
            run.budget -= want
            self.deliver([now] * want)

    @property
    def writable(self) -> bool:
        # A closed transport stays set until its connection_lost, which comes later.
        return self.transport is not None and not self.transport.is_closing()

    def deliver(self, starts: list[float]) -> None:
        """`send`, except that a connection found closed under it is marked down, its new
        requests shed and the ones in flight lost, instead of the error ending the run.

        uvloop closes a transport whose connect the connect timeout cut off after it was
        made, without telling the protocol and with `is_closing()` still False; a write to
        it raises RuntimeError. Found with 50,000 connections (benchmarks/bench_shards.py).
        """
        try:
            self.send(starts)
        except RuntimeError:
            tally = self.run.tally
            tally.sent -= len(starts)
            tally.shed += len(starts)
            tally.lost += len(self.inflight) - len(starts)
            self.inflight.clear()
            self.transport, self.down_since = None, time.perf_counter()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
