"""A raw-socket fuzzer for a real farm, and its oracle: the same engine, in this process.

Used by tests/test_fuzz.py (bounded) and by `scripts/fuzz --seed S --duration D` (long).

The farm serves `TEMPLATE` (two units, a read-only point, no live values: nothing moves but
what the fuzzer writes). Each case opens a connection to a target server, sends a stream
of bytes, split at random points (one byte at a time, a few bytes, any size) or coalesced
into one send, and reads what comes back. The expected bytes come from a shadow of that
server: a `Device` over banks in this process, fed the same stream whole through the
engine's own `ModbusConnection`. Every byte the farm sends must be the shadow's, in order;
the farm must hang up exactly when the shadow does (a malformed header) and otherwise keep
the connection open. Shadow and farm start from the same starting values and see the same
writes, so their banks stay equal.

Streams: every function code 0-255 with a random body, every unit id 0-255, well-formed
frames of random length, and lies: a length field longer than what follows (the farm must
wait, then answer nothing), shorter (the rest is read as the next header), out of range,
a protocol id other than 0, and plain garbage.
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from farm.config.behaviours import initialize_shard
from farm.config.fleets import load
from farm.config.plan import ServerRequest, build_plan
from farm.config.templates import DeviceTemplate, default_template
from farm.ipc.banks import read_only_masks, server_banks, server_diagnostics, server_files
from farm.worker.engine import Device
from farm.worker.limits.guard import unlimited
from farm.worker.transports.connection import ModbusConnection
from tests.farmproc import HOST, FarmProcess, free_port, free_port_range

TEMPLATE = """
templates:
  fuzz:
    units:
      - {unit_id: 1, coils: 80, discrete_inputs: 40, holding_registers: 130, input_registers: 30}
      - {unit_id: 7, coils: 16, discrete_inputs: 16, holding_registers: 16, input_registers: 16}
    points:
      - {name: serial, table: holding_registers, address: 5, type: uint32, writable: false, value: 4711}
      - {name: relay, table: coils, address: 3, writable: false, value: 1}
      - {name: level, table: input_registers, address: 2, type: float32, value: 12.5}
fleets:
  - {name: fuzz, template: fuzz, count: 3, addressing: {port_start: PORT}}
"""
TARGETS = (0, 1)  # server 0 on worker 0, server 1 on worker 1; server 2 (worker 0) looks on
BYSTANDER = 2


class _Recorder:
    """A transport for the shadow: keeps what it writes and whether it hung up."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    abort = close

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("shadow", 0) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def build_device(
    template: DeviceTemplate, name: str, counters: memoryview | None = None
) -> tuple[Device, bytearray]:
    """A device of `template` over memory of its own, built as a worker builds one (banks,
    diagnostics block, file records, FIFOs, all from their starting values)."""
    request = ServerRequest(name=name, fleet="fuzz", host=HOST, port=0, template=template.name)
    plan = build_plan([request], {template.name: template}, workers=1)
    shard = plan.shards[0]
    spec = shard.servers[0]
    memory = bytearray(shard.bank_bytes)
    view = memoryview(memory)
    initialize_shard(view, shard, plan.templates)
    device = Device(
        name,
        server_banks(view, spec, template, read_only_masks(template)),
        template.identity,
        counters,
        block=server_diagnostics(view, spec, template),
        files=server_files(view, spec, template),
        fifos=[(fifo.unit_id, fifo.address) for fifo in template.fifos],
        exception_status_coil=template.exception_status_coil,
    )
    return device, memory


class Shadow:
    """One server of the fuzz farm, in this process."""

    def __init__(self, name: str, config: Path) -> None:
        templates, _ = load(config).expand()
        self.device, self.memory = build_device(templates["fuzz"], name)

    @staticmethod
    def default_device(counters: memoryview) -> Device:
        """A device of the built-in default template, over memory in this process."""
        return build_device(default_template(), "device-0000", counters)[0]

    def answer(self, stream: bytes) -> tuple[bytes, bool, bool]:
        """(the bytes the farm must send, whether it must hang up, whether a frame is left
        unfinished) for `stream` on a fresh connection."""
        return self.answer_in_pieces([stream])

    def answer_in_pieces(self, pieces: list[bytes]) -> tuple[bytes, bool, bool]:
        """As `answer`, with the stream arriving in these reads."""
        recorder = _Recorder()
        guard = unlimited(self.device.name, self.device.counters)
        connection = ModbusConnection(self.device, guard)
        connection.connection_made(cast(Any, recorder))
        for piece in pieces:
            if recorder.closed:
                break  # a hung-up connection reads nothing more
            connection.data_received(piece)
        unfinished = bool(connection.buffer) and not recorder.closed
        connection.connection_lost(None)
        return bytes(recorder.written), recorder.closed, unfinished


# -- streams -----------------------------------------------------------------------------


def frame(
    transaction: int, unit: int, pdu: bytes, protocol: int = 0, length: int | None = None
) -> bytes:
    size = len(pdu) + 1 if length is None else length
    return struct.pack(">HHHB", transaction, protocol, size, unit) + pdu


def body(rng: random.Random, most: int = 252) -> bytes:
    """A random PDU body: often short, sometimes up to the largest a frame holds."""
    size = rng.choice((0, 1, 2, 3, 4, 5, 6, rng.randrange(0, most + 1)))
    return rng.randbytes(size)


def plausible(rng: random.Random) -> bytes:
    """A request a master might send: a real function code, sane address and quantity."""
    fc = rng.choice((1, 2, 3, 4, 5, 6, 15, 16, 22, 23, 43))
    address, quantity = rng.randrange(0, 140), rng.randrange(0, 130)
    if fc in (1, 2, 3, 4):
        return struct.pack(">BHH", fc, address, quantity)
    if fc == 5:
        return struct.pack(">BHH", 5, address, rng.choice((0, 0xFF00, 0x1234)))
    if fc == 6:
        return struct.pack(">BHH", 6, address, rng.randrange(65536))
    if fc == 15:
        data = rng.randbytes((quantity + 7) // 8)
        return struct.pack(">BHHB", 15, address, quantity, len(data)) + data
    if fc == 16:
        data = rng.randbytes(2 * min(quantity, 123))
        return struct.pack(">BHHB", 16, address, quantity, len(data)) + data
    if fc == 22:
        return struct.pack(">BHHH", 22, address, rng.randrange(65536), rng.randrange(65536))
    if fc == 23:
        data = rng.randbytes(2 * min(quantity, 121))
        head = struct.pack(">BHHHHB", 23, address, quantity, address, quantity, len(data))
        return head + data
    return bytes((43, 14, rng.randrange(0, 6), rng.randrange(0, 260) & 0xFF))


def units(rng: random.Random) -> int:
    return rng.choice((1, 7, 0xFF, 0, rng.randrange(256)))


def every_function_code(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    for fc in range(256):
        yield f"fc {fc}", frame(fc, units(rng), bytes((fc,)) + body(rng))


def every_unit(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    for unit in range(256):
        yield f"unit {unit}", frame(unit, unit, plausible(rng))


def lie(rng: random.Random) -> tuple[str, bytes]:
    """A stream with a lie in it, after a few honest frames (answered before the lie)."""
    honest = b"".join(frame(t, units(rng), plausible(rng)) for t in range(rng.randrange(0, 4)))
    pdu = plausible(rng)
    kind = rng.choice(("longer", "shorter", "too long", "too short", "protocol", "garbage"))
    if kind == "longer":  # promises more than follows: the farm waits for the rest
        lying = frame(9, 1, pdu, length=len(pdu) + 1 + rng.randrange(1, 40))
    elif kind == "shorter":  # the rest of the PDU is read as the next header
        lying = frame(9, 1, pdu, length=max(2, len(pdu) + 1 - rng.randrange(1, 5)))
    elif kind == "too long":
        lying = frame(9, 1, pdu, length=rng.randrange(255, 65536))
    elif kind == "too short":
        lying = frame(9, 1, pdu, length=rng.randrange(0, 2))
    elif kind == "protocol":
        lying = frame(9, 1, pdu, protocol=rng.randrange(1, 65536))
    else:
        lying = rng.randbytes(rng.randrange(1, 300))
    tail = b"".join(frame(t, 1, plausible(rng)) for t in range(rng.randrange(0, 3)))
    return f"lie: {kind}", honest + lying + tail


def pipelined(rng: random.Random) -> tuple[str, bytes]:
    count = rng.randrange(2, 60)
    stream = b"".join(
        frame(
            rng.randrange(65536),
            units(rng),
            plausible(rng) if rng.random() < 0.8 else body(rng, 20) or b"\x03",
        )
        for _ in range(count)
    )
    return f"{count} pipelined", stream


def streams(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """The exhaustive part first, then random streams for ever."""
    yield from every_function_code(rng)
    yield from every_unit(rng)
    while True:
        yield rng.choice((lie, pipelined))(rng)


def chunks(rng: random.Random, stream: bytes) -> list[bytes]:
    """Coalesced (one send), byte by byte, or cut at random points."""
    how = rng.random()
    if how < 0.4 or len(stream) < 2:
        return [stream]
    if how < 0.55:
        return [bytes((b,)) for b in stream[:400]] + ([stream[400:]] if len(stream) > 400 else [])
    cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randrange(1, 8))))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


# -- running -----------------------------------------------------------------------------


@dataclass
class Report:
    cases: int = 0
    sent: int = 0
    answers: int = 0  # bytes of answers checked
    hangups: int = 0  # cases the farm had to hang up on, and did
    failures: list[str] = field(default_factory=list)


PROBE = struct.pack(">HHHBBHH", 0xFFFE, 0, 6, 1, 3, 0, 2)  # FC 3, 2 registers: changes nothing


def exchange(
    port: int, pieces: list[bytes], expected: bytes, probe: tuple[bytes, bytes] | None, wait: float
) -> tuple[bytes, bool]:
    """Send the pieces, read what comes back; (what came, whether the farm hung up).

    `probe`: a request and its answer, sent once `expected` has arrived: getting exactly that
    answer shows the connection open and nothing extra sent. Without one (the stream ends
    inside a frame, or the farm must hang up), watch `wait` seconds for a hang-up instead.
    """
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pause = 0.001 if len(pieces) <= 8 else 0.0  # a few pieces: make them separate reads
        for piece in pieces:
            try:
                sock.sendall(piece)
            except OSError:
                break  # hung up on us mid-stream: what came back tells whether it should have
            if pause:
                time.sleep(pause)
        got = _read(sock, len(expected))
        if len(got) < len(expected):
            return got, True
        if probe is None:
            return got, _hangs_up(sock, wait)
        request, answer = probe
        sock.sendall(request)
        after = _read(sock, len(answer))
        if len(after) < len(answer):
            return got + after, True
        return (got if after == answer else got + after), False


def _read(sock: socket.socket, size: int) -> bytes:
    """`size` bytes, or fewer if the farm hangs up (or stays silent for 5 s) first."""
    got = bytearray()
    while len(got) < size:
        try:
            chunk = sock.recv(size - len(got))
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        got += chunk
    return bytes(got)


def _hangs_up(sock: socket.socket, timeout: float) -> bool:
    """Whether the farm closes this connection within `timeout`."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


class Fuzzer:
    """Cases against a running fuzz farm, each checked against its server's shadow."""

    def __init__(self, farm: FarmProcess, config: Path, seed: int) -> None:
        self.farm = farm
        self.rng = random.Random(seed)
        self.seed = seed
        self.shadows = {t: Shadow(f"fuzz-{t:04d}", config) for t in TARGETS}
        self.streams = streams(self.rng)
        self.report = Report()

    def run(self, cases: int, seconds: float) -> Report:
        deadline = time.monotonic() + seconds
        for _ in range(cases):
            if time.monotonic() > deadline:
                break
            name, stream = next(self.streams)
            self.case(name, stream)
            if len(self.report.failures) >= 5:
                break
        return self.report

    def case(self, name: str, stream: bytes) -> None:
        report = self.report
        target = self.rng.choice(TARGETS)
        pieces = chunks(self.rng, stream)
        shadow = self.shadows[target]
        expected, must_close, unfinished = shadow.answer(stream)
        port = self.farm.port(target)
        if must_close:
            got, hung_up = exchange(port, pieces, expected, None, wait=5.0)
        elif unfinished:  # the farm waits for the rest of the frame: nothing to probe
            got, hung_up = exchange(port, pieces, expected, None, wait=0.01)
        else:
            probe = (PROBE, shadow.answer(PROBE)[0])
            got, hung_up = exchange(port, pieces, expected, probe, wait=0.0)
        where = f"case {report.cases} ({name}, seed {self.seed}) to server {target}"
        report.cases += 1
        report.sent += len(stream)
        report.answers += len(got)
        if got != expected:
            report.failures.append(
                f"{where}: sent {stream.hex()} in {len(pieces)} pieces; expected "
                f"{expected.hex()}, got {got.hex()}"
            )
        elif hung_up != must_close:
            said = "hung up" if hung_up else "kept the connection"
            report.failures.append(f"{where}: sent {stream.hex()}; the farm {said}")
        elif hung_up:
            report.hangups += 1


def fuzz_farm(workdir: Path, workers: int = 2) -> tuple[FarmProcess, Path]:
    """A farm serving the fuzz template (not started)."""
    port = free_port_range(3)
    config = workdir / "fuzz.yaml"
    config.write_text(TEMPLATE.replace("PORT", str(port)))
    farm = FarmProcess(
        count=3, workers=workers, port_base=port, api_port=free_port(), file=str(config)
    )
    return farm, config


def main() -> None:
    parser = argparse.ArgumentParser(description="Fuzz a farm over raw sockets.")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of fuzzing.")
    parser.add_argument("--cases", type=int, default=10**9, help="At most this many cases.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        farm, config = fuzz_farm(Path(workdir))
        farm.start()
        try:
            farm.wait_ready()
            report = Fuzzer(farm, config, args.seed).run(args.cases, args.duration)
            restarts = sum(w["restarts"] for w in farm.status()["workers"])
        finally:
            code, _, stderr = farm.stop()
    print(
        f"seed {args.seed}: {report.cases} cases, {report.sent:,} bytes sent, "
        f"{report.answers:,} bytes of answers checked, {report.hangups} hang-ups as expected, "
        f"{restarts} worker restarts, {len(report.failures)} failures"
    )
    for failure in report.failures:
        print(failure)
    if report.failures or restarts or code != 0:
        if code != 0:
            print(f"the farm exited {code}: {stderr[-2000:]}")
        sys.exit(1)


if __name__ == "__main__":
    main()
