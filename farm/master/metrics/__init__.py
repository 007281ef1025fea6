"""The Prometheus exposition at /metrics (text format, or OpenMetrics when asked).

servers (FarmMetrics: the page; the per-server families rendered by hand from the shards'
counter arrays), registry (the master's own families in a prometheus_client registry:
servers desired and ready, faults active, scenario step, the master's process), workers
(its collectors of build info and the per-worker families), clients (the per-client
families, from the workers' tallies kept by farm.master.observe.tallies), series (a
family's HELP/TYPE lines in either format, label quoting, a shard's label strings).
"""
