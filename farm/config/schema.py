"""Config files: the schema of templates and fleets in YAML or TOML, as pydantic models.

The start of the data flow (config -> fleets -> plan -> ...). `read` parses a file,
`FarmModel` validates its shape, and `describe` turns a validation error into one line that
names the file, the path inside it (`fleets[2].addressing.port_start`), what is expected and
what was found. farm.config.fleets checks the rest and expands it. The schema, by example, is in
README.md and examples/.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from string import Formatter
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from farm.config.templates import (
    BehaviourKind,
    ConnectionLimits,
    ConnectionPolicy,
    Identity,
    PointType,
    Table,
)
from farm.files import read_structured

Order = Literal["big", "little"]
Transport = Literal["tcp", "rtu-over-tcp", "udp", "tls"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BehaviourModel(Strict):
    kind: BehaviourKind = BehaviourKind.CONSTANT
    value: float = 0.0
    text: str = ""
    low: float = 0.0
    high: float = 1000.0
    step: float = 1.0
    period_s: float = Field(60.0, gt=0)
    interval_s: float = Field(1.0, gt=0)
    jitter: float = Field(0.0, ge=0)
    csv: str | None = None
    column: str | int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> BehaviourModel:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not be above high ({self.high})")
        if self.kind is BehaviourKind.REPLAY and (self.csv is None or self.column is None):
            raise ValueError("a replay behaviour needs csv (a file) and column (name or index)")
        return self


class PointModel(Strict):
    name: str = Field(min_length=1)
    unit_id: int | None = Field(None, ge=0, le=255)
    table: Table
    address: int = Field(ge=0, le=65535)
    type: PointType | None = None
    length: int | None = Field(None, ge=1, le=123)
    byte_order: Order = "big"
    word_order: Order = "big"
    scale: float = 1.0
    writable: bool = True
    value: float | str | None = None
    behaviour: BehaviourModel | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PointModel:
        kind = self.type or (PointType.BOOL if self.table.is_bits else PointType.UINT16)
        if self.table.is_bits and kind is not PointType.BOOL:
            raise ValueError(f"a point in {self.table} is a bool, not {kind}")
        if kind is PointType.STRING and self.length is None:
            raise ValueError("a string point needs length (registers, two characters each)")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.value is not None and self.behaviour is not None:
            raise ValueError("give either value (a constant) or behaviour, not both")
        if isinstance(self.value, str) and kind is not PointType.STRING:
            raise ValueError(f"value {self.value!r} is text but the point is {kind}")
        return self


class UnitModel(Strict):
    unit_id: int = Field(ge=0, le=255)
    coils: int = Field(0, ge=0, le=65536)
    discrete_inputs: int = Field(0, ge=0, le=65536)
    holding_registers: int = Field(0, ge=0, le=65536)
    input_registers: int = Field(0, ge=0, le=65536)


_IDENTITY = Identity()  # the defaults (its class attributes are slot descriptors)


def _object_id(value: Any) -> Any:
    """An extended object's id: 0x80 in YAML is a number already; TOML keys are text."""
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return value
    return value


class IdentityModel(Strict):
    """FC 43/14 objects (farm.config.templates.Identity says which are mandatory)."""

    vendor_name: str = _IDENTITY.vendor_name
    product_code: str = _IDENTITY.product_code
    revision: str = _IDENTITY.revision
    vendor_url: str | None = None
    product_name: str | None = None
    model_name: str | None = None
    user_application_name: str | None = None
    extended: dict[Annotated[int, BeforeValidator(_object_id)], str] = {}
    server_id: int = Field(default=_IDENTITY.server_id, ge=0, le=255)


Register = Annotated[int, Field(ge=0, le=65535)]


class FileModel(Strict):
    number: int = Field(ge=1, le=65535)
    records: int = Field(ge=1, le=10000)
    values: list[Register] = []

    @model_validator(mode="after")
    def _fits(self) -> FileModel:
        if len(self.values) > self.records:
            raise ValueError(f"{len(self.values)} values do not fit in {self.records} records")
        return self


class FifoModel(Strict):
    unit_id: int | None = Field(None, ge=0, le=255)
    address: int = Field(ge=0, le=65535)
    values: list[Register] = Field([], max_length=31)


_LIMITS = ConnectionLimits()


class ConnectionsModel(Strict):
    """`connections: {max: 8, policy: close_oldest, idle_timeout_s: 120, frame_timeout_s: 5}`"""

    max: int = Field(default=_LIMITS.max, ge=1, le=1_000_000)
    policy: ConnectionPolicy = _LIMITS.policy
    idle_timeout_s: float = Field(default=_LIMITS.idle_timeout_s, ge=0)
    frame_timeout_s: float = Field(default=_LIMITS.frame_timeout_s, ge=0)


class TemplateModel(Strict):
    units: list[UnitModel] = Field(min_length=1)
    points: list[PointModel] = []
    identity: IdentityModel = IdentityModel()
    exception_status_coil: int = Field(0, ge=0, le=65535)
    files: list[FileModel] = []
    fifos: list[FifoModel] = []
    connections: ConnectionsModel = ConnectionsModel()


SECURE_PORT = 802  # Modbus/TCP Security (TLS); a TLS fleet's `port` defaults to it


class AddressingModel(Strict):
    """A port range on one host, a range of addresses on one port, or a subnet's addresses.

    With `subnet`, each device takes the next host address of the subnet (`ip_start`, if
    given, is the first one): a SCADA then reaches every device at its own IP on `port`, once
    the subnet is local to the farm host (`farm net plan`).
    """

    host: str = "127.0.0.1"
    port_start: int | None = Field(None, ge=1, le=65535)
    port_end: int | None = Field(None, ge=1, le=65535)
    subnet: ipaddress.IPv4Network | None = None
    ip_start: ipaddress.IPv4Address | None = None
    ip_end: ipaddress.IPv4Address | None = None
    port: int = Field(502, ge=1, le=65535)

    @field_validator("subnet", mode="before")
    @classmethod
    def _network(cls, value: Any) -> Any:
        # pydantic's own message ("not a valid IPv4 network") hides the usual slip: an
        # address with its host bits set, such as 10.77.0.1/16.
        if isinstance(value, str):
            try:
                ipaddress.IPv4Network(value)
            except ValueError as exc:
                try:
                    network = ipaddress.IPv4Network(value, strict=False)
                except ValueError:
                    raise ValueError(f"{value!r} is not an IPv4 network ({exc})") from None
                raise ValueError(f"{value} has host bits set; the network is {network}") from None
        return value

    @model_validator(mode="after")
    def _one_mode(self) -> AddressingModel:
        by_ip = self.ip_start is not None or self.subnet is not None
        if (self.port_start is None) == (not by_ip):
            raise ValueError(
                "give port_start (a port range on host), or subnet or ip_start "
                "(an address each, on port)"
            )
        if self.subnet is not None:
            for name in ("ip_start", "ip_end"):
                address = getattr(self, name)
                if address is not None and address not in self.subnet:
                    raise ValueError(f"{name} {address} is outside subnet {self.subnet}")
        return self


class TlsModel(Strict):
    """Modbus/TCP Security: the server's certificate and key, and the CA that client
    certificates must chain to (none: clients are not asked for one). Paths are relative
    to the config file."""

    certificate: str = Field(min_length=1)
    key: str = Field(min_length=1)
    client_ca: str | None = None


NAME_FIELDS = ("i", "n", "fleet")
MAX_NAME_WIDTH = 32  # `{i:032d}`: wider is no name, just memory (`{i:999999999}` was 3 GiB)
_INTEGER_SPEC = re.compile(r"0?(?P<width>[0-9]{0,9})d?")


def check_name_pattern(pattern: str) -> None:
    """`name_pattern` takes {i}, {n} and {fleet} only, i and n with a plain integer format
    of at most MAX_NAME_WIDTH digits (`{i:04d}`), fleet as it is: no attribute or index
    access (`{i.__class__}`), no conversion, no nested field."""
    expected = "use {i}, {n} and {fleet}, as in '{fleet}-{i:04d}'"
    try:
        fields = [
            (f, spec, conv) for _, f, spec, conv in Formatter().parse(pattern) if f is not None
        ]
    except ValueError as exc:
        raise ValueError(f"cannot be formatted ({exc}); {expected}") from exc
    for field, spec, conversion in fields:
        if field not in NAME_FIELDS or conversion is not None:
            raise ValueError(f"field {{{field}}} is not one of {{i}}, {{n}}, {{fleet}}; {expected}")
        match = _INTEGER_SPEC.fullmatch(spec or "")
        if field == "fleet" and spec:
            raise ValueError(f"{{fleet}} takes no format ({spec!r}); {expected}")
        if match is None:
            raise ValueError(f"{{{field}:{spec}}}: only a width of digits, as in {{i:04d}}")
        if int(match["width"] or 0) > MAX_NAME_WIDTH:
            raise ValueError(f"{{{field}:{spec}}}: wider than {MAX_NAME_WIDTH} digits")


class FleetModel(Strict):
    name: str = Field(min_length=1)
    template: str
    count: int = Field(ge=0)
    addressing: AddressingModel
    name_pattern: str = Field("{fleet}-{i:04d}", max_length=256)
    overrides: dict[str, BehaviourModel] = {}
    transport: Transport = "tcp"
    tls: TlsModel | None = None

    @field_validator("name_pattern")
    @classmethod
    def _plain_pattern(cls, pattern: str) -> str:
        check_name_pattern(pattern)
        return pattern

    @model_validator(mode="before")
    @classmethod
    def _secure_port(cls, data: Any) -> Any:
        # Modbus/TCP Security's own port is 802: a TLS fleet's devices at addresses of their
        # own listen there unless `port` says otherwise (plain Modbus/TCP's default is 502).
        if isinstance(data, dict) and data.get("transport") == "tls":
            addressing = data.get("addressing")
            if isinstance(addressing, dict) and not {"port", "port_start"} & addressing.keys():
                return {**data, "addressing": {**addressing, "port": SECURE_PORT}}
        return data

    @model_validator(mode="after")
    def _tls_settings(self) -> FleetModel:
        if self.transport == "tls" and self.tls is None:
            raise ValueError("transport tls needs tls: {certificate: FILE, key: FILE}")
        if self.transport != "tls" and self.tls is not None:
            raise ValueError(f"tls settings given but transport is {self.transport}")
        return self


class FarmModel(Strict):
    seed: int = 0
    templates: dict[str, TemplateModel] = {}
    fleets: list[FleetModel] = Field(min_length=1)
    # A timeline to play (farm.config.scenario.model checks it, with its own messages).
    scenario: dict[str, Any] | None = None


def read(path: Path) -> Any:
    """A config file's data (YAML, or TOML by its suffix), read by farm.files' rules: a
    regular file, at most files.CONFIG_BYTES, UTF-8, nested at most files.MAX_DEPTH deep."""
    return read_structured(path)
