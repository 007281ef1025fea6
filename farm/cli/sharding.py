"""The shard options of `farm up` and `farm plan`: which part of a fleet this farm serves.

    --shard-index I --shard-count N        (or FARM_SHARD_INDEX / FARM_SHARD_COUNT)
    --shard-index-from-hostname            I from a StatefulSet pod's name, NAME-I

The slices themselves are farm.config.shards'; this module only turns options into a
`ShardChoice` and says, in one line, what is missing or contradictory.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import click

from farm.config.shards import index_from_hostname
from farm.errors import ConfigError, FarmError
from farm.output import exit_with

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class ShardChoice:
    """Shard `index` of `count`; `index` is None when only the count is known (`farm plan`)."""

    index: int | None
    count: int


def resolve(
    index: int | None, count: int | None, from_hostname: bool, need_index: bool
) -> ShardChoice | None:
    """The shard the options name, or None for the whole fleet; ConfigError if they clash."""
    if from_hostname:
        if index is not None:
            raise ConfigError("give --shard-index or --shard-index-from-hostname, not both")
        index = index_from_hostname(socket.gethostname())
    if count is None:
        if index is not None:
            raise ConfigError("--shard-index needs --shard-count (or FARM_SHARD_COUNT)")
        return None
    if index is None and need_index:
        raise ConfigError(
            "--shard-count needs --shard-index (or FARM_SHARD_INDEX, or "
            "--shard-index-from-hostname in a StatefulSet)"
        )
    return ShardChoice(index, count)


def shard_options(*, need_index: bool) -> Callable[[F], F]:
    """The three options, handed to the command as `shard: ShardChoice | None`."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(
            *args: Any,
            shard_index: int | None,
            shard_count: int | None,
            shard_index_from_hostname: bool,
            **kwargs: Any,
        ) -> Any:
            try:
                shard = resolve(shard_index, shard_count, shard_index_from_hostname, need_index)
            except FarmError as error:
                exit_with(error)
            return command(*args, shard=shard, **kwargs)

        options = [
            click.option(
                "--shard-index",
                type=click.IntRange(0),
                envvar="FARM_SHARD_INDEX",
                default=None,
                help="Serve this shard of the fleet, from 0 [env: FARM_SHARD_INDEX].",
            ),
            click.option(
                "--shard-count",
                type=click.IntRange(1),
                envvar="FARM_SHARD_COUNT",
                default=None,
                help="Shards the fleet is split into [env: FARM_SHARD_COUNT].",
            ),
            click.option(
                "--shard-index-from-hostname",
                is_flag=True,
                envvar="FARM_SHARD_INDEX_FROM_HOSTNAME",
                help="Take the shard index from a host name NAME-I (a StatefulSet pod).",
            ),
        ]
        for option in reversed(options):
            wrapper = option(wrapper)
        return cast(F, wrapper)

    return decorate


@dataclass(frozen=True, slots=True)
class ShardSeen:
    """What one farm said of its shard (GET /api/v1/status or /targets)."""

    farm: str
    index: int
    count: int
    fleet_total: int


def check_cover(seen: list[ShardSeen]) -> str | None:
    """Raise if the farms are not shards of one fleet (or one shard twice); return a
    warning line if some shards are missing, None when they cover the fleet."""
    if not seen:
        return None
    counts = {(s.count, s.fleet_total) for s in seen}
    if len(counts) > 1:
        described = ", ".join(f"{s.farm}: {s.count} shards of {s.fleet_total}" for s in seen)
        raise FarmError(f"the farms are not shards of one fleet ({described})")
    by_index: dict[int, str] = {}
    for shard in seen:
        if shard.index in by_index:
            raise FarmError(
                f"{by_index[shard.index]} and {shard.farm} both serve shard {shard.index}"
            )
        by_index[shard.index] = shard.farm
    count = seen[0].count
    missing = sorted(set(range(count)) - set(by_index))
    if not missing:
        return None
    shown = ", ".join(str(i) for i in missing[:10]) + (" …" if len(missing) > 10 else "")
    return f"this list lacks shard(s) {shown} of {count}: give every shard's API with --farm"
