"""`farm fault add | list | clear`: misbehaving devices on demand, through the control API.

    farm fault add delay --ms 300 --target device-0003
    farm fault add exception --code 6 --fleet meters --fraction 0.1 --seed 7 --for 30s
    farm fault add offline --target device-0005 --for 2s --in 10s
    farm fault add stuck --target meter-0003 --point voltage_l1 --for 30s
    farm fault list
    farm fault clear 3          farm fault clear --all

A client of the API like every command (farm.client); the farm checks the fault and says,
in one line, which option to fix.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from typing import Any

import click
from rich.table import Table as RichTable

from farm.client import FarmClient, FaultInfo, api_options
from farm.config.faults.kinds import KIND_TABLE, KINDS, Kind, Param, param_names, params_named
from farm.errors import ConfigError, FarmError
from farm.output import console, exit_with

out = console()  # server names, fault details are printed as they are
SHOWN_NAMES = 3
# Each kind's own options, as the API names them (the farm says which a kind does not take).
_PARAMS = param_names()
# Defaults not worth a word.
_UNSAID = {
    param.name: param.default for kind in KIND_TABLE for param in kind.params if param.quiet_default
}


_CLICK_TYPES: dict[str, Any] = {"number": float, "finite": float, "integer": int}
_NUMERIC = frozenset(_CLICK_TYPES)


def _option_type(declared: list[Param]) -> Any:
    """One option for a name that several kinds declare: their type if they agree, else text
    (`--value` is a number for stuck, a word for nan)."""
    if declared[0].choices and all(p.choices == declared[0].choices for p in declared):
        return click.Choice(declared[0].choices)
    types = {str if p.choices else _CLICK_TYPES.get(p.type, str) for p in declared}
    return types.pop() if len(types) == 1 else str


def _option_help(name: str) -> str:
    """'delay: milliseconds (the mean if spread)'; kinds that say the same are named together."""
    said: dict[str, list[Kind]] = {}
    for kind, param in params_named(name):
        default, unit = param.default, f" {param.unit}" if param.unit else ""
        value = f"{default:g}" if isinstance(default, float) else str(default)
        quiet = param.required or default is None or param.quiet_default
        shown = "" if quiet else f" [{value}{unit}]"
        said.setdefault(param.help + shown, []).append(kind)
    parts = []
    for text, kinds in said.items():
        family = {kind.family for kind in kinds}
        every = [kind for kind in KIND_TABLE if kind.family in family]
        who = f"{kinds[0].family} kinds" if kinds == every else ", ".join(k.name for k in kinds)
        parts.append(f"{who}: {text}")
    return "; ".join(parts) + "."


def kind_options(command: Any) -> Any:
    """Every kind's parameters as options of `farm fault add`, one per name (the registry's)."""
    for name in reversed(param_names()):
        declared = [param for _, param in params_named(name)]
        option = click.option(
            "--" + name.replace("_", "-"),
            type=_option_type(declared),
            default=None,
            help=_option_help(name),
        )
        command = option(command)
    return command


# Options whose kinds disagree on the type: sent as numbers where they read as one.
_NUMBER_OR_TEXT = frozenset(
    name
    for name in param_names()
    if _option_type([p for _, p in params_named(name)]) is str
    and any(p.type in _NUMERIC for _, p in params_named(name))
)


def _is_text(kind: str, name: str) -> bool:
    """Whether `kind` declares `name` as text (nan's value: 'inf')."""
    return any(k.name == kind and p.type not in _NUMERIC for k, p in params_named(name))


def _kind_help(kind: Kind) -> str:
    own = f" (--for: {kind.duration:g} s unless given)" if kind.duration is not None else ""
    return kind.help + own


ADD_HELP = "Put a fault of KIND on servers (see README: Faults).\n\n\b\nKinds:\n" + "\n".join(
    textwrap.fill(
        _kind_help(kind), 78, initial_indent=f"  {kind.name:<13} ", subsequent_indent=" " * 16
    )
    for kind in KIND_TABLE
)


@click.group()
def fault() -> None:
    """Put faults on servers of the running farm, list them, clear them."""


@fault.command(help=ADD_HELP)
@click.argument("kind", type=click.Choice(KINDS), metavar="KIND")
@click.option("--target", "targets", multiple=True, help="A server name (repeat, or a,b,c).")
@click.option("--fleet", default=None, help="Every server of this fleet.")
@click.option("--glob", "pattern", default=None, help="Servers whose name matches ('plc-*').")
@click.option("--fraction", type=float, default=None, help="A random fraction of the selection.")
@click.option("--seed", type=int, default=None, help="Seed of --fraction: same seed, same pick.")
@click.option("--for", "duration", default=None, help="How long: 500ms, 30s, 5m [until cleared].")
@click.option("--in", "start_in", default=None, help="Start after this long [now].")
@click.option("--probability", type=float, default=None, help="Per request, 0-1 [1].")
@click.option("--function-code", "function_codes", type=int, multiple=True, help="Only this FC.")
@click.option("--unit", type=int, default=None, help="Only requests to this unit id.")
@click.option("--role", default=None, help="Only requests from TLS clients with this role.")
@click.option("--addresses", default=None, help="Only requests touching START-END.")
@kind_options
@click.option("--json", "as_json", is_flag=True, help="Print the fault as JSON.")
@api_options
def add(
    client: FarmClient,
    kind: str,
    targets: tuple[str, ...],
    fleet: str | None,
    pattern: str | None,
    fraction: float | None,
    seed: int | None,
    duration: str | None,
    start_in: str | None,
    probability: float | None,
    function_codes: tuple[int, ...],
    unit: int | None,
    role: str | None,
    addresses: str | None,
    as_json: bool,
    **params: Any,
) -> None:
    target: dict[str, Any] = {}
    names = [name for each in targets for name in each.split(",") if name]
    for key, value in (
        ("servers", names),
        ("fleet", fleet),
        ("glob", pattern),
        ("fraction", fraction),
        ("seed", seed),
    ):
        if value:
            target[key] = value
    body: dict[str, Any] = {key: value for key, value in params.items() if value is not None}
    for key, value in body.items():
        if key in _NUMBER_OR_TEXT and not _is_text(kind, key):
            body[key] = _number_or_text(value)
    if function_codes:
        body["function_codes"] = list(function_codes)
    if unit is not None:
        body["unit"] = unit
    if role is not None:
        body["role"] = role
    try:
        if addresses is not None:
            body["addresses"] = _address_range(addresses)
        if not target:
            raise ConfigError("say which servers: --target NAME, --fleet, --glob or --fraction")
        made = client.fault(
            kind,
            target,
            duration=duration,
            start_in=start_in,
            probability=probability,
            **body,
        )
    except FarmError as error:
        exit_with(error)
    if as_json:
        out.print_json(data=dataclasses.asdict(made))
        return
    out.print(f"fault {made.id}: {describe(made)}", highlight=False, soft_wrap=True)


@fault.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@api_options
def list_faults(client: FarmClient, as_json: bool) -> None:
    """Show every fault, scheduled or active."""
    try:
        faults = client.faults()
    except FarmError as error:
        exit_with(error)
    if as_json:
        out.print_json(data=[dataclasses.asdict(each) for each in faults])
        return
    if not faults:
        out.print("no faults")
        return
    table = RichTable("id", "kind", "parameters", "state", "servers", "starts in", "ends in")
    for each in faults:
        table.add_row(
            str(each.id),
            each.kind,
            _params(each),
            each.state,
            _names(each.servers),
            f"{each.starts_in_s:.1f} s" if each.starts_in_s else "-",
            "when cleared" if each.ends_in_s is None else f"{each.ends_in_s:.1f} s",
        )
    out.print(table)


@fault.command()
@click.argument("fault_id", type=int, required=False)
@click.option("--all", "everything", is_flag=True, help="Clear every fault.")
@api_options
def clear(client: FarmClient, fault_id: int | None, everything: bool) -> None:
    """Clear the fault ID, or --all of them."""
    try:
        if everything and fault_id is not None:
            raise ConfigError("give a fault ID or --all, not both")
        if not everything and fault_id is None:
            raise ConfigError("say which fault: its ID (see `farm fault list`), or --all")
        if fault_id is not None:
            cleared = client.clear_fault(fault_id)
            out.print(f"cleared fault {cleared.id}: {describe(cleared)}", highlight=False)
            return
        ids = client.clear_faults()
    except FarmError as error:
        exit_with(error)
    out.print(f"cleared {len(ids)} fault{'' if len(ids) == 1 else 's'}", highlight=False)


def describe(fault: FaultInfo) -> str:
    """'delay ms=300 on device-0003, active, until cleared'."""
    params = _params(fault)
    scheduled = f"starts in {fault.starts_in_s:.1f} s"
    state = scheduled if fault.state == "scheduled" else fault.state
    if fault.state in ("expired", "cleared"):
        return f"{fault.kind}{' ' + params if params else ''} on {_names(fault.servers)}"
    until = "until cleared" if fault.ends_in_s is None else f"ends in {fault.ends_in_s:.1f} s"
    return (
        f"{fault.kind}{' ' + params if params else ''} on {_names(fault.servers)}, {state}, {until}"
    )


def _params(fault: FaultInfo) -> str:
    spec = fault.spec
    shown = [
        f"{key}={_number(spec[key])}"
        for key in _PARAMS
        if spec.get(key) is not None and _UNSAID.get(key, ...) != spec[key]
    ]
    if spec.get("probability", 1) != 1:
        shown.append(f"probability={spec['probability']}")
    return " ".join(shown)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else json.dumps(value).strip('"')


def _number_or_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # the farm says what it takes


def _names(servers: tuple[str, ...]) -> str:
    if len(servers) <= SHOWN_NAMES:
        return ", ".join(servers)
    return f"{len(servers)} servers ({', '.join(servers[:SHOWN_NAMES])}, ...)"


def _address_range(text: str) -> dict[str, int]:
    start, _, end = text.partition("-")
    try:
        return {"start": int(start), "end": int(end or start)}
    except ValueError:
        raise ConfigError(f"--addresses {text!r}: write START-END, like 0-99") from None
