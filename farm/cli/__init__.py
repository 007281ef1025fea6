"""The `farm` command: every subcommand, a client of the master's API or a front to it.

app (the group, `status`, `down`), up (`farm up`), validate (`validate`, `plan`: what a
config would build), sharding (the shard options), prometheus_config, control (`servers`,
`get`, `set`, `server stop|start`), faults (`fault add|list|clear`), scenario (`scenario
run|status|stop`, `scale`), targets (`farm targets`), net (`net plan|up|down`), certs
(`farm certs`; selfsigned makes the files).
"""

from farm.cli.app import main

__all__ = ["main"]
