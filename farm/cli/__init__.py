"""The `farm` command: every subcommand, a client of the master's API or a front to it.

app (the group, `status`, `down`), up (`farm up`), inspect (`validate`, `plan`),
prometheus_config, control (`servers`, `get`, `set`, `server stop|start`), faults
(`fault add|list|clear`), scenario (`scenario run|status|stop`, `scale`).
"""

from farm.cli.app import main

__all__ = ["main"]
