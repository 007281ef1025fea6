"""A config file's problems in one line: where in the file, what is wrong, and the fix.

Part of the config stage (schema -> problems): pydantic's errors for FarmModel become the
line a user reads. A key that is not one comes first, with the key it was probably meant to
be (a typo is the fix, and the "Field required" it causes only its echo).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from farm.config.schema import FarmModel
from farm.words import counted


def _path(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def describe(error: ValidationError, source: Path, model: type[BaseModel] = FarmModel) -> str:
    """One line for a file's problems: a key that is not one first (a typo is the fix, and
    the "Field required" it causes is only its echo), with the key it was probably meant
    to be."""
    details = sorted(error.errors(), key=lambda each: each["type"] != "extra_forbidden")
    first = details[0]
    location = tuple(p for p in first["loc"] if not str(p).startswith("function-after"))
    message = first["msg"].removeprefix("Value error, ")
    found = first.get("input")
    shown = "" if isinstance(found, dict | list) or found is None else f" (found {found!r})"
    if first["type"] == "extra_forbidden" and location:
        message = f"no such key{_meant(location, model)}"
        shown = ""
    more = f" (and {counted(len(details) - 1, 'more problem')})" if len(details) > 1 else ""
    return f"{source}: {_path(location)}: {message}{shown}{more}"


def _meant(location: tuple[int | str, ...], model: type[BaseModel]) -> str:
    """'; did you mean 'count'?' when a key the file's format takes where the unknown key
    stands (its siblings) is close to it."""
    close = difflib.get_close_matches(
        str(location[-1]), sorted(_keys_at(location[:-1], model)), n=1
    )
    return f"; did you mean {close[0]!r}?" if close else ""


def _keys_at(location: tuple[int | str, ...], model: type[BaseModel]) -> set[str]:
    """The keys the models at `location` (a path into `model`) take."""
    kinds: list[Any] = [model]
    for part in location:
        inner = [each for kind in kinds for each in _inside(kind, part)]
        kinds = inner or kinds  # a union's tag in the path names no field: stay
    return {
        field.alias or name
        for kind in kinds
        if isinstance(kind, type) and issubclass(kind, BaseModel)
        for name, field in kind.model_fields.items()
    }


def _inside(kind: Any, part: int | str) -> list[Any]:
    """What `kind[part]` is: a model's field, a list's item, a mapping's value."""
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        for name, field in kind.model_fields.items():
            if part in (name, field.alias):
                return _unwrapped(field.annotation)
        return []
    origin, args = get_origin(kind), get_args(kind)
    if origin is list and isinstance(part, int):
        return _unwrapped(args[0])
    if origin is dict and isinstance(part, str):
        return _unwrapped(args[1])
    return []


def _unwrapped(kind: Any) -> list[Any]:
    """Optional, unions and Annotated taken apart into the types they hold."""
    if get_origin(kind) is Annotated:
        return _unwrapped(get_args(kind)[0])
    if get_origin(kind) in (Union, UnionType):
        return [inner for arg in get_args(kind) for inner in _unwrapped(arg)]
    return [kind]
