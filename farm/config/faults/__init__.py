"""Faults as data: what a fault is, to which servers, and what a worker applies.

kinds (the registry: every fault kind, its family, parameters, help and log text; pure
data, a worker may import it), spec (FaultSpec: each kind's pydantic model, made from the
registry and validated at the boundary), rules (FaultRule: a fault as a worker applies it,
without pydantic), value_rules (what a value fault does to a reading), selection (targets
and durations).
"""
