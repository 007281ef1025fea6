"""The pipe's wire format has a version (farm.ipc.messages.VERSION): a change to the shape of
anything that travels on it (every message, and what they carry: FaultRule, templates, server
specs, ...) must come with a new version, or a master and a worker of different builds would
misread each other. The shape is fingerprinted here from msgspec's own view of the types."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec
import msgspec.inspect as mi

from farm.ipc import messages

# VERSION -> the fingerprint of the shape it names. A new shape: bump VERSION, add a line.
RECORDED = {
    3: "cc2fd0ef6d52378e",  # Assign.journal_segment (and, unbumped, Reply.clients)
    4: "9b57b221d9f7c3cb",  # FaultRule.extra
    5: "5c48fb2eb7076a67",  # Faults carries changes; the device identity's objects
    6: "84a1d7479cb3b703",  # Assign.journal_writes
    7: "122cd1c8ea54339e",  # Heartbeat without requests
    8: "9a5cbf91504764b7",  # Reply.tallies (per-client metrics), PollSummary.gaps
    9: "db3bb24611b15e42",  # PollSummary.gaps flat (pairs as one tuple of floats)
    10: "202fb60c02cfbfca",  # Listeners (a warm worker's sockets, after its Assign)
}


def shape(kind: mi.Type, named: dict[str, Any]) -> Any:
    """A plain, ordered description of a type; structs and dataclasses go to `named` once."""
    if isinstance(kind, mi.StructType | mi.DataclassType):
        name = f"{kind.cls.__module__}.{kind.cls.__qualname__}"
        if name not in named:
            named[name] = None  # recursion stops here
            tag = kind.tag if isinstance(kind, mi.StructType) else None
            fields = [[f.encode_name, shape(f.type, named), f.required] for f in kind.fields]
            named[name] = {"tag": tag, "fields": fields}
        return name
    if isinstance(kind, mi.UnionType):
        return ["union", sorted((shape(each, named) for each in kind.types), key=json.dumps)]
    if isinstance(kind, mi.TupleType):
        return ["tuple", [shape(each, named) for each in kind.item_types]]
    if isinstance(kind, mi.CollectionType):  # list, set, variable-length tuple
        return [type(kind).__name__, shape(kind.item_type, named)]
    if isinstance(kind, mi.DictType):
        return ["dict", shape(kind.key_type, named), shape(kind.value_type, named)]
    if isinstance(kind, mi.EnumType):
        return ["enum", kind.cls.__qualname__, [str(member.value) for member in kind.cls]]
    if isinstance(kind, mi.LiteralType):
        return ["literal", list(kind.values)]
    return type(kind).__name__  # IntType, FloatType, StrType, BoolType, BytesType, NoneType


def fingerprint() -> str:
    named: dict[str, Any] = {}
    root = shape(mi.type_info(messages.Message), named)
    text = json.dumps([root, named], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_the_pipes_shape_is_the_one_its_version_names() -> None:
    found = fingerprint()
    assert RECORDED.get(messages.VERSION) == found, (
        f"the pipe's messages have shape {found}, which is not the one recorded for "
        f"VERSION {messages.VERSION}: if the change is meant, bump farm.ipc.messages.VERSION "
        f"and record {found} for it in {__name__}.RECORDED"
    )
    assert found not in [each for version, each in RECORDED.items() if version != messages.VERSION]


def test_the_fingerprint_sees_a_field_change() -> None:
    """A field added to a message, or renamed, or retyped, changes the fingerprint."""

    class Probe(msgspec.Struct, frozen=True):
        a: int
        b: str = ""

    class Added(msgspec.Struct, frozen=True):
        a: int
        b: str = ""
        c: float = 0.0

    class Retyped(msgspec.Struct, frozen=True):
        a: float
        b: str = ""

    def one(kind: type) -> str:
        named: dict[str, Any] = {}
        shape(mi.type_info(kind), named)
        return json.dumps(list(named.values()))

    assert len({one(Probe), one(Added), one(Retyped)}) == 3
