"""What a worker needs to know of faults: the kinds, and a fault as a worker applies it.

Pure data, without pydantic (a worker never loads it): the request-side model, its
validation and its errors are farm.config.faults, which builds `FaultRule`s with `rule`.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = (
    "delay",
    "exception",
    "drop",
    "disconnect",
    "reset",
    "offline",
    "garble",
    "wrong_tid",
    "wrong_unit",
    "slice",
    "reboot",
)
# Kinds that take the whole server down rather than acting on requests.
SERVER_KINDS = frozenset({"offline", "reboot"})


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRule:
    """One fault as a worker applies it: the kind, its parameters, and which requests.

    Flat and plain so that it crosses the pipe as it is; `rule` builds it from a spec.
    """

    id: int
    kind: str
    probability: float = 1.0
    function_codes: tuple[int, ...] = ()
    unit: int | None = None
    role: str | None = None  # only requests from TLS clients whose certificate names it
    first_address: int = 0
    last_address: int = 65535
    ms: float = 0.0
    jitter_ms: float = 0.0
    distribution: str = "fixed"
    code: int = 0
    mode: str = ""
    segments: int = 0
    gap_ms: float = 0.0
