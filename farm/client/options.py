"""The control API's command-line options, declared once for every command that talks to a
farm (or serves one): --api-host, --api-port, --api-token (FARM_API_TOKEN) and --farm; and
`farm up`'s --generate-api-token, the container image's default."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from farm.client.defaults import DEFAULT_API_HOST, DEFAULT_API_PORT

if TYPE_CHECKING:
    from farm.client.api import FarmClient

F = TypeVar("F", bound=Callable[..., Any])

api_host_option = click.option(
    "--api-host",
    default=DEFAULT_API_HOST,
    show_default=True,
    help="Address of the farm's control API.",
)
api_port_option = click.option(
    "--api-port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_API_PORT,
    show_default=True,
    help="Port of the farm's control API.",
)
api_token_option = click.option(
    "--api-token",
    envvar="FARM_API_TOKEN",
    default=None,
    help="Token for mutating API calls [env: FARM_API_TOKEN].",
)

generate_token_option = click.option(
    "--generate-api-token",
    is_flag=True,
    help="With no --api-token (FARM_API_TOKEN): make a random token for this run and print it.",
)


def token_or_generated(token: str | None, generate: bool) -> tuple[str | None, bool]:
    """The token given, else (with --generate-api-token) a new random one; True if new."""
    if token or not generate:
        return token or None, False
    return secrets.token_hex(16), True


def api_options(command: F) -> F:
    """--api-host, --api-port and --api-token, handed to the command as `client: FarmClient`."""

    @functools.wraps(command)
    def wrapper(
        *args: Any, api_host: str, api_port: int, api_token: str | None, **kwargs: Any
    ) -> Any:
        from farm.client.api import FarmClient  # here: `farm up` declares these, needs no client

        return command(*args, client=FarmClient.at(api_host, api_port, api_token), **kwargs)

    return cast(F, api_host_option(api_port_option(api_token_option(wrapper))))


farms_option = click.option(
    "--farm",
    "farms",
    multiple=True,
    metavar="HOST:PORT",
    help="Control API of one farm or shard (repeatable); replaces --api-host/--api-port.",
)


def farm_clients(client: FarmClient, farms: tuple[str, ...]) -> list[FarmClient]:
    """One client per `--farm HOST:PORT` (with the token of `client`), or `client` alone."""
    from farm.client.api import FarmClient

    return [FarmClient(f"http://{api}", client.token) for api in farms] or [client]
