"""`farm certs DIR` (or `farm certs FILE`): throwaway certificates for a TLS test
(farm.cli.selfsigned makes them).

Part of the CLI. `farm up --transport tls --certs DIR` serves with DIR's server pair and
asks clients for a certificate from its CA; `farm bench --transport tls --certs DIR` connects
with its client pair. Given a config FILE, the files go where its TLS fleets name them, so
`farm up FILE` serves with them at once.
"""

from __future__ import annotations

from pathlib import Path

import click

from farm.errors import ConfigError, FarmError
from farm.output import exit_with


@click.command()
@click.argument("target", metavar="DIR|FILE", type=click.Path(path_type=Path))
@click.option("--role", default="operator", show_default=True, help="The client's role.")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    default=("127.0.0.1", "localhost", "::1"),
    show_default=True,
    help="Address or name the server certificate is good for; repeatable.",
)
@click.option("--days", default=30, show_default=True, help="Days the certificates are valid.")
@click.option("--force", is_flag=True, help="Replace certificates already there.")
def certs(target: Path, role: str, hosts: tuple[str, ...], days: int, force: bool) -> None:
    """Make a throwaway CA, server and client certificates (with a role) for a TLS test:
    into the directory DIR, or where the config file FILE's TLS fleets name them."""
    try:
        if not 1 <= days <= 3650:
            raise ConfigError("--days must be 1-3650")
        if not role:
            raise ConfigError("--role must not be empty")
        # Imported here: only this command pays for loading cryptography.
        from farm.cli.selfsigned import FILES, write_certificates, write_for_config

        if target.is_file():
            written = write_for_config(target, role, hosts, days, force)
            click.echo(f"wrote {', '.join(map(str, written))} (client role {role!r})")
            return
        write_certificates(target, role, hosts, days, force)
    except FarmError as error:
        exit_with(error)
    click.echo(f"wrote {', '.join(FILES)} to {target} (client role {role!r})")
