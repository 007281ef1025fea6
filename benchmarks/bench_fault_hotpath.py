"""What the fault hooks cost a request, in process: a connection's `data_received` for one
FC 3 x 10 frame per read, with a transport that discards what it is given.

    python3 -m benchmarks.bench_fault_hotpath [--requests 200000] [--rounds 5] [--baseline REF]

Cases, measured in alternating rounds (best round kept):
  - before: the engine as it was at git REF (loaded from `git show REF:farm/worker/engine.py`,
    and connection.py once ModbusConnection moved there),
    when --baseline is given: the cost of the hot path before the fault hooks existed;
  - no fault: today's engine, a server without faults (its one attribute check per read);
  - fault, no match: the server has a fault that narrows to a function code the requests do
    not use, so every request goes through the faulted path and is answered normally;
  - exception: every request answered with an injected exception (answer-level fault);
  - N faults elsewhere: the worker's other servers hold N faults, this one none (a worker
    keeps each server's rules apart: the table's size does not reach this request);
  - N faults, no match: this server holds N faults that all narrow to another function code
    (each is looked at per request: the cost grows with them, which MAX_FAULTS_PER_SERVER
    bounds).
Prints microseconds of CPU per request and each case's ratio to `no fault`.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from farm.config.faults.rules import FaultRule
from farm.config.templates import Identity
from farm.ipc.banks import UnitBank
from farm.modbus import mbap, pdu
from farm.worker import engine
from farm.worker.faults.book import FaultBook
from farm.worker.faults.hooks import ServerFaults
from farm.worker.limits.guard import unlimited
from farm.worker.transports import connection as stream

ROOT = Path(__file__).resolve().parent.parent
FRAME = mbap.frame(1, 1, pdu.read(3, 0, 10))


class Sink:
    """An asyncio transport that discards what it is given."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass


def bank() -> UnitBank:
    return UnitBank(
        unit_id=1,
        coils=memoryview(bytearray(64)),
        discrete_inputs=memoryview(bytearray(64)),
        holding_registers=memoryview(bytearray(200)),
        input_registers=memoryview(bytearray(200)),
    )


def connection(
    engine_module: Any, connection_module: Any, rules: tuple[FaultRule, ...] = ()
) -> Any:
    device = engine_module.Device("bench", {1: bank()}, Identity())
    if rules:
        device.faults = ServerFaults(device, rules, random.Random(1))
    # A connection with limits takes the server's; one from before them, a set.
    limited = hasattr(connection_module, "ServerConnections")
    guard: Any = unlimited(device.name, device.counters) if limited else set()
    made = connection_module.ModbusConnection(device, guard)
    made.connection_made(Sink())
    return made


def baseline_module(ref: str, path: str) -> types.ModuleType | None:
    """farm/worker/`path` as it was at `ref`, as a module of its own (None: not there then)."""
    shown = subprocess.run(
        ["git", "show", f"{ref}:farm/worker/{path}"], cwd=ROOT, capture_output=True, text=True
    )
    if shown.returncode != 0:
        return None
    name = path.removesuffix(".py")
    module = types.ModuleType(f"farm.worker.{name}_at_" + ref.replace("/", "_"))
    module.__file__ = f"{ref}:farm/worker/{path}"
    sys.modules[module.__name__] = module
    exec(compile(shown.stdout, module.__file__, "exec"), module.__dict__)
    return module


def baseline(ref: str) -> Any:
    """A connection of the engine as it was at `ref` (its ModbusConnection moved to
    farm/worker/connection.py later)."""
    engine_then = baseline_module(ref, "engine.py")
    assert engine_then is not None, f"no farm/worker/engine.py at {ref}"
    if hasattr(engine_then, "ModbusConnection"):
        return connection(engine_then, engine_then)
    return connection(engine_then, baseline_module(ref, "connection.py"))


def per_request_us(receive: Callable[[bytes], None], requests: int) -> float:
    began = time.process_time()
    for _ in range(requests):
        receive(FRAME)
    return 1e6 * (time.process_time() - began) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", default=None, help="git ref of the engine before")
    args = parser.parse_args()
    no_match = FaultRule(id=1, kind="exception", code=6, function_codes=(16,))
    everything = FaultRule(id=2, kind="exception", code=6)
    cases: dict[str, Any] = {}
    if args.baseline:
        cases[f"before ({args.baseline})"] = baseline(args.baseline)
    cases["no fault"] = connection(engine, stream)
    cases["fault, no match"] = connection(engine, stream, (no_match,))
    cases["exception"] = connection(engine, stream, (everything,))
    for count in (100, 1000, 5000):
        book = FaultBook()
        devices = {n: connection(engine, stream).device for n in range(2)}
        many = tuple(
            (FaultRule(id=10 + n, kind="exception", code=6, function_codes=(16,)), (1,))
            for n in range(count)
        )
        book.replace(many, devices.get)  # every fault on server 1; the one measured is 0
        elsewhere = connection(engine, stream)
        elsewhere.device = devices[0]
        cases[f"{count} faults elsewhere"] = elsewhere
    for count in (100, 1000, 5000):
        rules = tuple(
            FaultRule(id=10 + n, kind="exception", code=6, function_codes=(16,))
            for n in range(count)
        )
        cases[f"{count} faults, no match"] = connection(engine, stream, rules)
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, made in cases.items():
            took = per_request_us(made.data_received, args.requests)
            best[name] = min(best.get(name, took), took)
    reference = best["no fault"]
    print(f"CPU per request, best of {args.rounds} rounds of {args.requests:,} requests:")
    for name, took in best.items():
        print(f"  {name:<24} {took:7.3f} us   {took / reference:6.2f}x no fault")


if __name__ == "__main__":
    main()
