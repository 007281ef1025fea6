"""Fleets: a validated config file expanded into device templates and servers.

Second half of the config stage (config -> fleets -> plan -> ...). `load(path)` reads a file
through the schema (farm.config.schema); `FarmFile` resolves templates (with per-fleet
behaviour overrides and CSV replay columns: farm.config.template_reader), and `expand()`
scales fleet counts, assigns addresses and names, and checks what the schema alone cannot:
fleets whose addresses overlap, ranges too small for their count, TLS files that cannot
serve (farm.config.tlsfiles).
Every mistake is a ConfigError naming the file and the path inside it.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from farm.config.growth import FleetSpec
from farm.config.plan import ServerRequest, TlsSettings
from farm.config.problems import describe
from farm.config.schema import AddressingModel, FarmModel, FleetModel, TlsModel, read
from farm.config.template_reader import TemplateReader, identity_problem
from farm.config.templates import DeviceTemplate, default_template
from farm.config.tlsfiles import TlsFileError, check_tls
from farm.errors import ConfigError

LOOPBACK_LAST = ipaddress.IPv4Address("127.255.255.254")  # 127.0.0.0/8, broadcast excluded
UNICAST_LAST = ipaddress.IPv4Address("223.255.255.255")  # multicast and reserved follow


def ip_range(addressing: AddressingModel) -> tuple[int, int]:
    """First and last address (as integers) a fleet addressed by IP may take.

    A subnet gives its host addresses (not the network and broadcast addresses, which a
    SCADA could not reach as a device), from ip_start and up to ip_end when given.
    """
    subnet = addressing.subnet
    if subnet is None:  # no end given: as far as the addresses a device can have go
        assert addressing.ip_start is not None
        first = int(addressing.ip_start)
        last = int(LOOPBACK_LAST if addressing.ip_start.is_loopback else UNICAST_LAST)
    elif subnet.prefixlen >= 31:
        first, last = int(subnet.network_address), int(subnet.broadcast_address)
    else:
        first, last = int(subnet.network_address) + 1, int(subnet.broadcast_address) - 1
    if addressing.ip_start is not None:
        first = int(addressing.ip_start)
    if addressing.ip_end is not None:
        last = int(addressing.ip_end)
    return first, last


def load(path: str | Path, allowed: Sequence[Path] = ()) -> FarmFile:
    """Read and validate a config file; raises ConfigError. `allowed`: places outside the
    file's directory that its data files may be in (`--allow-outside`)."""
    source = Path(path)
    data = read(source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with templates and fleets at the top")
    try:
        model = FarmModel.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, source)) from exc
    return FarmFile(source, model, allowed)


class FarmFile:
    """A validated config file, ready to expand into templates and servers."""

    def __init__(self, source: Path, model: FarmModel, allowed: Sequence[Path] = ()) -> None:
        self.source = source
        self.model = model
        reader = TemplateReader(source, allowed)
        self.templates = {name: reader.template(name, t) for name, t in model.templates.items()}
        self.templates.setdefault("default", default_template())
        names: set[str] = set()
        for i, fleet in enumerate(model.fleets):
            if fleet.name in names:
                raise self.fail(f"fleets[{i}].name", f"fleet name {fleet.name!r} is used twice")
            names.add(fleet.name)
        self.fleet_templates = [
            reader.fleet_template(i, f, self.templates) for i, f in enumerate(model.fleets)
        ]

    @property
    def seed(self) -> int:
        return self.model.seed

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {path}: {message}")

    def _tls(self, index: int, model: TlsModel | None) -> TlsSettings | None:
        """The fleet's TLS files, relative to the config file, each checked readable."""
        if model is None:
            return None
        paths: dict[str, Path | None] = {}
        for field in ("certificate", "key", "client_ca"):
            name = getattr(model, field)
            paths[field] = None if name is None else (self.source.parent / name).resolve()
        certificate, key, client_ca = paths["certificate"], paths["key"], paths["client_ca"]
        assert certificate is not None and key is not None
        try:
            check_tls(certificate, key, client_ca)
        except TlsFileError as exc:
            raise self.fail(f"fleets[{index}].tls.{exc.field}", str(exc)) from exc
        return TlsSettings(
            certificate=str(certificate),
            key=str(key),
            client_ca=None if client_ca is None else str(client_ca),
        )

    def counts(self, total: int | None) -> list[int]:
        """Each fleet's count; with `total`, scaled in proportion so they add up to it."""
        counts = [fleet.count for fleet in self.model.fleets]
        if total is None:
            return counts
        if total < 1:
            raise ConfigError(
                f"the fleets must hold at least 1 server in all, got {total}", about=("count",)
            )
        whole = sum(counts) or len(counts)
        weights = counts if sum(counts) else [1] * len(counts)
        exact = [total * w / whole for w in weights]
        scaled = [int(x) for x in exact]
        by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - scaled[i], reverse=True)
        for i in by_remainder[: total - sum(scaled)]:
            scaled[i] += 1
        return scaled

    def expand(
        self, total: int | None = None
    ) -> tuple[dict[str, DeviceTemplate], list[ServerRequest]]:
        """Templates by name and one request per server; checks addresses and names."""
        requests: list[ServerRequest] = []
        templates: dict[str, DeviceTemplate] = {}
        for index, (fleet, count) in enumerate(
            zip(self.model.fleets, self.counts(total), strict=True)
        ):
            template = self.fleet_templates[index]
            templates[template.name] = template
            servers = self._servers(index, fleet, count, template.name)
            self._check_identity(fleet.template, template, servers)
            requests.extend(servers)
        self._check_unique(requests)
        return templates, requests

    def _check_identity(
        self, name: str, template: DeviceTemplate, servers: list[ServerRequest]
    ) -> None:
        """Each FC 43/14 object fits one answer with the fleet's longest server name."""
        if not servers:
            return
        longest = max((server.name for server in servers), key=len)
        problem = identity_problem(template.identity, longest)
        if problem is not None:
            raise self.fail(f"templates.{name}.identity.{problem[0]}", problem[1])

    def _servers(
        self, index: int, fleet: FleetModel, count: int, template: str
    ) -> list[ServerRequest]:
        where = f"fleets[{index}]"
        addressing = fleet.addressing
        if addressing.port_start is not None:
            last = addressing.port_end or 65535
            if last < addressing.port_start:
                raise self.fail(
                    f"{where}.addressing.port_end",
                    f"found {last}, expected at least port_start {addressing.port_start}",
                )
            capacity = last - addressing.port_start + 1
            field, unit = "port_end" if addressing.port_end else "port_start", "ports"
            addresses = [
                (addressing.host, addressing.port_start + i) for i in range(min(count, capacity))
            ]
        else:
            first, last = ip_range(addressing)
            if last < first:
                raise self.fail(
                    f"{where}.addressing.ip_end",
                    f"found {addressing.ip_end}, expected at least "
                    f"{addressing.ip_start or 'the subnet start'}",
                )
            capacity = last - first + 1
            field = "ip_end" if addressing.ip_end else "ip_start"
            if addressing.subnet is not None and not addressing.ip_end:
                field = "subnet"
            unit = "addresses"
            addresses = [
                (str(ipaddress.IPv4Address(first + i)), addressing.port)
                for i in range(min(count, capacity))
            ]
        if count > capacity:
            raise self.fail(
                f"{where}.addressing.{field}",
                f"count {count} needs {count} {unit} but the range holds {capacity}",
            )
        tls = self._tls(index, fleet.tls)
        names = []
        for i in range(count):
            try:
                names.append(fleet.name_pattern.format(i=i, n=i + 1, fleet=fleet.name))
            except (KeyError, IndexError, ValueError) as exc:
                raise self.fail(
                    f"{where}.name_pattern",
                    f"{fleet.name_pattern!r} cannot be formatted ({exc}); "
                    "use {i}, {n} and {fleet}",
                ) from exc
        return [
            ServerRequest(
                name=name,
                fleet=fleet.name,
                host=host,
                port=port,
                template=template,
                transport=fleet.transport,
                tls=tls,
            )
            for name, (host, port) in zip(names, addresses, strict=True)
        ]

    def routed_networks(self, total: int | None = None) -> list[ipaddress.IPv4Network]:
        """The networks, outside 127.0.0.0/8, that the fleets' own addresses fill.

        What the AnyIP route must make local on the farm host and what a SCADA host must
        route to it (`farm net plan`): each fleet's subnet, or the smallest networks that
        cover its ip_start..ip_end range.
        """
        loopback = ipaddress.IPv4Network("127.0.0.0/8")
        found: list[ipaddress.IPv4Network] = []
        for fleet, count in zip(self.model.fleets, self.counts(total), strict=True):
            addressing = fleet.addressing
            if addressing.subnet is not None:
                networks = [addressing.subnet]
            elif addressing.ip_start is not None and count > 0:
                first, last = ip_range(addressing)
                end = ipaddress.IPv4Address(min(last, first + count - 1))
                networks = list(ipaddress.summarize_address_range(addressing.ip_start, end))
            else:
                continue
            found.extend(n for n in networks if not n.subnet_of(loopback))
        return list(ipaddress.collapse_addresses(found))

    def _check_unique(self, requests: list[ServerRequest]) -> None:
        fleets = {f.name: i for i, f in enumerate(self.model.fleets)}
        seen_names: dict[str, str] = {}
        # UDP and TCP ports are separate: a udp fleet may share a port number with a tcp one.
        by_port: dict[tuple[bool, int], dict[str, str]] = {}
        for request in requests:
            where = f"fleets[{fleets[request.fleet]}]"
            if request.name in seen_names:
                raise self.fail(
                    f"{where}.name_pattern",
                    f"server name {request.name!r} is also made by fleet "
                    f"{seen_names[request.name]}",
                )
            seen_names[request.name] = request.fleet
            hosts = by_port.setdefault((request.transport == "udp", request.port), {})
            wildcard = request.host in ("0.0.0.0", "::")
            clash = hosts.get(request.host) or (
                next(iter(hosts.values())) if wildcard and hosts else None
            )
            clash = clash or hosts.get("0.0.0.0") or hosts.get("::")
            if clash is not None:
                raise self.fail(
                    f"{where}.addressing", f"{request.host}:{request.port} overlaps fleet {clash}"
                )
            hosts[request.host] = request.fleet

    def fleet_specs(self, counts: list[int]) -> tuple[FleetSpec, ...]:
        """Each fleet at its count, as it can grow (farm.config.growth)."""
        return tuple(
            FleetSpec(
                name=fleet.name,
                template=self.fleet_templates[index].name,
                count=count,
                capacity=_capacity(fleet.addressing),
                servers=functools.partial(
                    self._servers, index, fleet, template=self.fleet_templates[index].name
                ),
            )
            for index, (fleet, count) in enumerate(zip(self.model.fleets, counts, strict=True))
        )


def _capacity(addressing: AddressingModel) -> int:
    """How many servers a fleet's addressing holds (as `FarmFile._servers` assigns them)."""
    if addressing.port_start is not None:
        return max(0, (addressing.port_end or 65535) - addressing.port_start + 1)
    first, last = ip_range(addressing)
    return max(0, last - first + 1)
