"""Fleet changes: the servers of a running farm by name, stopped, started, scaled.

inventory (every server by name: its slot, banks and counters), switch (stop and start
single servers: port closed in every process, bound again), scale (a fleet grown or shrunk
without restarting a worker).
"""
