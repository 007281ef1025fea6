"""What to serve: pure data, no processes.

schema (the config file's pydantic models), templates (a device: units, points, identity),
template_reader (a file's templates made into them), fleets (a file expanded into server
requests), plan (servers with addresses, split into shards), codec (engineering values <->
register bytes), behaviours (how live values move),
selection (targets and durations), faults and value_faults (what a fault is; fault_rules and
value_rules, what a worker applies), scenario and scenario_check (timelines), growth (how a
fleet grows and shrinks).
Imports nothing else of the farm but `farm.errors`.
"""
