"""What to serve: pure data, no processes.

schema (the config file's pydantic models), templates (a device: units, points, identity),
fleets (a file expanded into server requests), plan (servers with addresses, split into
shards), codec (engineering values <-> register bytes), behaviours (how live values move).
Imports nothing else of the farm but `farm.errors`.
"""
