"""Fleet changes: the servers of a running farm by name, stopped, started, scaled.

inventory (every server by name: its slot, banks and counters), intent (who holds which
server down), switch (stop and start single servers as the intent says: port closed in every
process, bound again), scale (a fleet grown or shrunk without restarting a worker).
"""
