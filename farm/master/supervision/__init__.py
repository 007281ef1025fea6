"""Supervision: the worker processes of a farm, from spawn to stop.

supervisor (Supervisor: spawns, watches and restarts workers, updates them), slot (one
shard and the process hosting it now), processes (a worker's process and its Assign; the
stop sequence), watchdog (deadlines, stalls, restart backoff), workerpipe (what a worker's
message changes in its slot; asking a worker and awaiting its reply), listeners (binding
every server's socket; the open-files budget), warm (workers `farm up` starts before it
plans, which the supervisor takes for its slots' first processes).
"""
