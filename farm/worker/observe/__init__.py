"""What the system under test did, seen from the devices.

callers (who is asking: one per connection, or per UDP sender), clients (what each client
address polls and how often), polls (one request a client repeats: its intervals), tally
(the same per address, summed over the worker's servers, for /metrics), trace (a live trace
of one server: zero cost untraced), writes (the write journal: a write's values before and
after, recorded in farm.ipc.journal).
"""
