"""What a worker needs to know of faults: a fault as a worker applies it (`FaultRule`).

Pure data, without pydantic (a worker never loads it): the kinds are farm.config.faults.kinds
(re-exported here); the request-side model, its validation and its errors are
farm.config.faults.spec, which builds `FaultRule`s with `rule`. A `FaultRule` travels on the
pipe (inside Assign and Faults, farm.ipc.messages): a change of its fields is a change of
the wire format (tests/test_wire_version.py says so).
"""

from __future__ import annotations

from dataclasses import dataclass

from farm.config.faults.kinds import KINDS, SERVER_KINDS, VALUE_KINDS

__all__ = ["KINDS", "SERVER_KINDS", "VALUE_KINDS", "FaultRule"]


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
    # Value faults (VALUE_KINDS): the point by name, the kind's parameters, and when the
    # fault started on the master's monotonic clock (one per host, as Assign.origin), so a
    # worker replaced midway carries a drift or a flap on from where it was.
    point: str = ""
    value: float | None = None  # stuck at, spike to, nan's value (nan, inf, -inf)
    by: float = 0.0  # spike by, offset by
    rate: float = 0.0  # drift per second
    factor: float = 1.0  # scale
    side: str = "high"  # out_of_range: high | low
    beyond: str = "limits"  # out_of_range: limits (the point's low/high) | type
    margin: float | None = None  # out_of_range beyond limits: how far (None: a tenth of low-high)
    period_s: float = 0.0  # flap
    started: float = 0.0
    # stuck at the current value: the point's bytes when the fault started, one per shard
    # position of the positions it is sent with (ActiveFaults), in that order.
    held: tuple[bytes, ...] = ()
    # A kind's parameters that have no field above (farm.config.faults.kinds.Param.wire),
    # by name: a new kind needs no new field, hence no new wire format.
    extra: tuple[tuple[str, float | str], ...] = ()

    def param(self, name: str) -> float | str | None:
        """A parameter that travels in `extra` (None if the rule has none of that name)."""
        for key, value in self.extra:
            if key == name:
                return value
        return None
