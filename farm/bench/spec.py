"""What `farm bench` sends where: targets, the function-code mix, and each process's share.

Not part of the farm's data flow (see farm.bench.command). Turns the command line into `LoadSpec`s
for farm.bench.loadgen: the target servers (explicit `HOST:PORT-PORT` ranges, or every server a
farm's control API reports up), the cycle of request PDUs that realises a function-code
mix, and connections spread evenly over the servers and then over the processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from farm.bench.loadgen import LoadSpec
from farm.bench.transports import ClientTls
from farm.client.answers import PointTarget
from farm.errors import ConfigError
from farm.modbus import pdu

READS = {1: 2000, 2: 2000, 3: 125, 4: 125}  # function code -> largest quantity


def parse_targets(texts: tuple[str, ...]) -> list[tuple[str, int]]:
    """`127.0.0.1:5020-5519` or `127.0.0.1:5020` (repeatable) -> [(host, port), ...]."""
    targets: list[tuple[str, int]] = []
    for text in texts:
        host, _, ports = text.rpartition(":")
        first, _, last = ports.partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise ConfigError(f"--target {text!r}: expected HOST:PORT or HOST:PORT-PORT") from None
        if not host or not 1 <= low <= high <= 65535:
            raise ConfigError(f"--target {text!r}: expected HOST:PORT or HOST:PORT-PORT")
        targets.extend((host.strip("[]"), port) for port in range(low, high + 1))
    return targets


def request_pdu(function_code: int, address: int, quantity: int) -> bytes:
    """The request a master sends for one entry of the mix."""
    if function_code in READS:
        return pdu.read(function_code, address, quantity)
    if function_code == 5:
        return pdu.write_coil(address, True)
    if function_code == 6:
        return pdu.write_register(address, quantity)
    if function_code == 15:  # 0x55 in every byte: on, off, on, ...
        return pdu.write_coils(address, quantity, bytes(0x55 for _ in range((quantity + 7) // 8)))
    return pdu.write_registers(address, range(quantity))


def parse_mix(text: str, address: int, quantity: int) -> tuple[bytes, ...]:
    """`3:70,4:20,16:10` -> a cycle of request PDUs in those proportions, interleaved."""
    weights: dict[int, int] = {}
    for part in text.split(","):
        fc_text, _, weight_text = part.strip().partition(":")
        try:
            fc, weight = int(fc_text), int(weight_text or 1)
        except ValueError:
            raise ConfigError(f"--mix {text!r}: expected FC:WEIGHT,... e.g. 3:80,16:20") from None
        if fc not in (*READS, 5, 6, 15, 16) or weight < 0:
            raise ConfigError(f"--mix: function code {fc} is not one of 1-6, 15, 16")
        weights[fc] = weights.get(fc, 0) + weight
    if not 1 <= quantity <= 65535 or not 0 <= address <= 65535:
        raise ConfigError("--quantity must be 1-65535 and --address 0-65535")
    if (16 in weights and quantity > 123) or (15 in weights and quantity > 1968):
        raise ConfigError("--quantity is too large for one write request (FC 16: 123, FC 15: 1968)")
    total = sum(weights.values())
    if not 0 < total <= 10_000:
        raise ConfigError(f"--mix {text!r}: weights must add up to 1-10000")
    divisor = math.gcd(*weights.values())
    # Smooth weighted round-robin: each function code spread evenly through the cycle.
    credit = dict.fromkeys(weights, 0)
    cycle = []
    for _ in range(total // divisor):
        for fc in credit:
            credit[fc] += weights[fc]
        chosen = max(credit, key=lambda fc: credit[fc])
        credit[chosen] -= total
        cycle.append(request_pdu(chosen, address, quantity))
    return tuple(cycle)


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchOptions:
    connections: int = 50
    rate: float | None = None
    depth: int = 1
    duration_s: float = 10.0
    max_requests: int = 10_000_000
    timeout_s: float = 1.0
    unit: int = 1
    processes: int = 1
    transport: str = "tcp"
    tls: ClientTls | None = None


def split(
    targets: list[tuple[str, int]],
    pdus: tuple[bytes, ...],
    options: BenchOptions,
    reads: list[tuple[int, bytes]] | None = None,
) -> list[LoadSpec]:
    """Spread C connections evenly over the servers, then over the processes; `reads`
    gives each target a (unit, PDU) of its own instead of `pdus` (see `first_reads`)."""
    c, p = options.connections, options.processes
    chosen = [i * len(targets) // c for i in range(c)]
    per_connection = [targets[i] for i in chosen]
    own = [reads[i] for i in chosen] if reads else []
    return [
        LoadSpec(
            targets=tuple(per_connection[share::p]),
            reads=tuple(own[share::p]),
            pdus=pdus,
            unit=options.unit,
            depth=options.depth,
            rate=None if options.rate is None else options.rate / p,
            duration_s=options.duration_s,
            max_requests=options.max_requests // p + (share < options.max_requests % p),
            timeout_s=options.timeout_s,
            transport=options.transport,
            tls=options.tls,
        )
        for share in range(p)
    ]


TABLE_READS = {"coils": 1, "discrete_inputs": 2, "holding_registers": 3, "input_registers": 4}


def first_read(points: tuple[PointTarget, ...]) -> tuple[int, bytes, str] | None:
    """A template's first point as a read request: (unit, PDU, 'name, table address x
    count'); None for a template without points."""
    for point in points:
        function_code = TABLE_READS.get(point.table)
        if function_code is None:
            continue
        count = min(point.count, READS[function_code])
        pdu = request_pdu(function_code, point.address, count)
        return point.unit_id, pdu, f"{point.name}, {point.table} {point.address} x{count}"
    return None
