"""Faults as data: what a fault is, to which servers, and what a worker applies.

spec (FaultSpec: the request fault kinds, validated at the boundary), value_spec (the value
fault kinds), rules (FaultRule: a fault as a worker applies it, without pydantic),
value_rules (what a value fault does to a reading), selection (targets and durations).
"""
