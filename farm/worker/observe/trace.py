"""A live trace of one server: every request and its answer, with who sent it and when.

Tracing costs nothing while nobody traces: a traced device's class becomes `TracedDevice`
(same slots, an `answer` that records around the engine's), and goes back to `Device` when
the trace ends; an untraced device runs no check at all. Every framing calls
`Device.answer`, so requests over TCP, TLS, UDP and RTU over TCP, faulted or not, are seen
(a delay fault's wait is not in the latency: it comes after the answer is built).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from time import perf_counter_ns

from farm.ipc.messages import Control, Reply
from farm.ipc.tracing import Traced
from farm.worker.engine import Device

MAX_TRACED = 100_000  # records one trace keeps at most (the master asks for them at its end)


class Tracer:
    """One trace: its records, and the client address it keeps to ("": every client)."""

    __slots__ = ("client", "dropped", "records", "shift_ns")

    def __init__(self, client: str) -> None:
        self.client = client
        self.records: list[Traced] = []
        self.dropped = 0
        # perf_counter (a read's arrival) to the wall clock, for the records' times.
        self.shift_ns = time.time_ns() - perf_counter_ns()

    def record(self, device: Device, unit: int, pdu: bytes, answer: bytes | None) -> None:
        caller = device.caller
        if self.client and caller is not None and self.client not in (caller.host, caller.address):
            return
        if len(self.records) >= MAX_TRACED:
            self.dropped += 1
            return
        arrived = caller.now if caller is not None and caller.now else perf_counter_ns()
        self.records.append(
            Traced(
                time=(arrived + self.shift_ns) / 1e9,
                client=caller.address if caller is not None else "",
                source=caller.source if caller is not None else "",
                unit=unit,
                request=pdu,
                answer=answer or b"",
                latency_s=max(0, perf_counter_ns() - arrived) / 1e9,
            )
        )


class TracedDevice(Device):
    """A device while it is traced (see the module docstring)."""

    __slots__ = ()

    def answer(self, unit: int, pdu: bytes) -> bytes | None:
        response = Device.answer(self, unit, pdu)
        if self.tracer is not None:
            self.tracer.record(self, unit, pdu, response)
        return response


def start(device: Device, tracer: Tracer) -> None:
    """Trace `device` into `tracer` (a server rebuilt meanwhile carries on into the same)."""
    device.tracer = tracer
    device.__class__ = TracedDevice


def stop(device: Device) -> None:
    """The device runs untraced again."""
    device.__class__ = Device
    device.tracer = None


def begin(
    message: Control, numbers: Mapping[str, int], devices: Mapping[int, Device],
    traces: dict[int, Tracer],
) -> Reply:  # fmt: skip
    """TRACE_START: trace the servers named (a device not built yet is traced when it is)."""
    for name in message.servers:
        number = numbers.get(name)
        if number is None:
            return Reply(request_id=message.request_id, ok=False, error=f"no server {name!r} here")
        tracer = traces[number] = Tracer(message.client)
        device = devices.get(number)
        if device is not None:
            start(device, tracer)
    return Reply(request_id=message.request_id, ok=True)


def end(
    message: Control, numbers: Mapping[str, int], devices: Mapping[int, Device],
    traces: dict[int, Tracer],
) -> Reply:  # fmt: skip
    """TRACE_STOP: the servers named run untraced again; their records in the Reply."""
    records: list[Traced] = []
    for name in message.servers:
        number = numbers.get(name, -1)
        tracer = traces.pop(number, None)
        device = devices.get(number)
        if device is not None:
            stop(device)
        if tracer is not None:
            records.extend(tracer.records)
    return Reply(request_id=message.request_id, ok=True, traced=tuple(records))
