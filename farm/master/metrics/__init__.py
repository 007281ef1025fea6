"""The Prometheus exposition at /metrics, rendered from the workers' shared counters.

servers (FarmMetrics: the page, and the per-server families rendered by hand from the
arrays), workers (the farm-wide and per-worker series), series (a family's HELP/TYPE lines
and label quoting).
"""
