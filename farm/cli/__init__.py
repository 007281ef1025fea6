"""The `farm` command: every subcommand, a client of the master's API or a front to it.

app (the group, `status`, `down`), up (`farm up`), validate (`validate`, `plan`: what a
config would build), budget (what it would cost, checked first), sharding (the shard
options), prometheus_config, control (`servers`, `get`, `set`, `server stop|start`), faults
(`fault add|list|clear`), scenario (`scenario run|status|stop`, `scale`), targets (`farm
targets`), net (`net plan|up|down`), certs (`farm certs`; selfsigned makes the files).
    observe/   what the system under test did: writes (`farm writes`), clients (`farm
               clients`), report (`farm report`), trace (`farm trace`; pcap writes its
               capture)

Importing this package imports none of them: the `farm` console script (`from farm.cli
import main`) is the `__main__` of `farm up`, and multiprocess's spawn runs the parent's
`__main__` script again in every worker it starts. Were the commands imported here, each
worker would load click, Rich, pydantic, aiohttp and the master (about 30 MB a worker).
"""


def main() -> None:
    """The `farm` command (the click group is farm.cli.app.main)."""
    from farm.cli.app import main as farm_command  # here, not at the top: see the docstring

    farm_command()
