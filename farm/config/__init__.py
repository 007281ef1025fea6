"""What to serve: pure data, no processes.

schema (the config file's pydantic models), problems (their errors in one line, with
the key a typo meant), templates (a device: units, points, identity),
template_reader (a file's templates made into them), replay_csv (a replay behaviour's CSV
column, confined to the config's directory), fleets (a file expanded into server requests),
plan (servers with addresses, split into shards), codec (engineering values <-> register
bytes), behaviours (how live values move), growth
(how a fleet grows and shrinks), shards (which servers a shard serves), targets (the device
list a SCADA imports), tlsfiles (a `farm certs` directory's names; a TLS fleet's
certificate and key read, loaded and matched).
    faults/   every kind (kinds), what a fault is (spec), what a worker applies (rules,
              value_rules), which servers and for how long (selection)
    scenario/ timelines: model (a scenario's steps, validated), check (a scenario checked
              against the farm it will act on)
Imports nothing else of the farm but `farm.errors` and `farm.files` (how files are read).
"""
