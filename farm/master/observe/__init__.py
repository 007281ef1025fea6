"""What the system under test did, as the master tells it: gather (asks every worker what
its servers' clients did), clients (one row a client: what it polls, how often, what it
stopped polling), report (per client and fleet: servers polled and never polled, poll
intervals, writes, and how each client behaved around the faults that ended), attempts
(connection attempts to offline servers, counted with a raw socket when the master may),
tallies (per client address, what the workers tally every few seconds, for /metrics),
decode (a traced request and its answer, for people).
"""
