"""What a worker hands the master when a trace of one of its servers ends (a `Control` of op
TRACE_START, then TRACE_STOP answered by a `Reply` carrying `Traced` records): plain frozen
dataclasses the pipe's MessagePack encodes field by field (farm.ipc.messages)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Traced:
    """One request a traced server answered (or left unanswered: `answer` empty)."""

    time: float  # wall clock, seconds since the epoch, when it arrived
    client: str  # HOST:PORT
    source: str  # tcp, rtu-over-tcp, udp, tls
    unit: int
    request: bytes  # its PDU
    answer: bytes  # the answer's PDU; b"" when the device stayed silent
    latency_s: float  # from its read's arrival to its answer built
