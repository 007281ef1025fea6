"""A traced request and its answer, decoded for people: what was asked (function, table,
address, count, values written) and what came back (values read, or the exception)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

_TABLES = {1: "coils", 2: "discrete_inputs", 3: "holding_registers", 4: "input_registers"}
_NAMES = {
    5: "write coil", 6: "write register", 15: "write coils", 16: "write registers",
    22: "mask write register", 23: "read/write registers", 7: "read exception status",
    8: "diagnostics", 11: "comm event counter", 12: "comm event log", 17: "report server id",
    20: "read file record", 21: "write file record", 24: "read fifo", 43: "device identification",
}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Decoded:
    function_code: int
    what: str  # "read holding_registers", "write register", ...
    address: int | None
    count: int | None
    values: tuple[int, ...]  # written by the request, or read by the answer
    exception: int | None  # the exception code answered


def decode(request: bytes, answer: bytes) -> Decoded:
    fc = request[0] if request else 0
    address = count = None
    values: tuple[int, ...] = ()
    if len(request) >= 5 and fc in (1, 2, 3, 4, 5, 6, 15, 16, 22, 23):
        address, second = struct.unpack_from(">HH", request, 1)
        count = 1 if fc in (5, 6, 22) else second
        if fc == 5:
            values = (1 if second == 0xFF00 else 0,)
        elif fc == 6:
            values = (second,)
        elif fc == 16 and len(request) >= 6:
            values = struct.unpack(f">{(len(request) - 6) // 2}H", request[6:])
        elif fc == 15 and len(request) >= 6:
            values = tuple((request[6 + i // 8] >> (i % 8)) & 1 for i in range(second))
    exception = answer[1] if len(answer) >= 2 and answer[0] & 0x80 else None
    if exception is None and len(answer) >= 2 and fc in (3, 4, 23):
        values = struct.unpack(f">{answer[1] // 2}H", answer[2 : 2 + answer[1]])
    elif exception is None and len(answer) >= 2 and fc in (1, 2) and count is not None:
        data = answer[2 : 2 + answer[1]]
        values = tuple((data[i // 8] >> (i % 8)) & 1 for i in range(min(count, 8 * len(data))))
    what = f"read {_TABLES[fc]}" if fc in _TABLES else _NAMES.get(fc, f"function {fc}")
    return Decoded(
        function_code=fc,
        what=what,
        address=address,
        count=count,
        values=tuple(values),
        exception=exception,
    )
