"""Files and bodies read from outside: one rule for every one of them.

Config files, replay CSVs, state files, TLS certificates and keys (farm.config), and the
control API's request bodies (farm.master.http) all pass here, for everyone:

- Regular files only. A path is opened with `O_NONBLOCK` (so a FIFO neither blocks the open
  nor, being refused, the read), then `fstat`: a FIFO, a device (`/dev/zero`), a socket or a
  directory is refused by name before a byte is read.
- A size limit for each kind of file (the table below), read with a bound: never more than
  the limit plus one byte, whatever the file says its size is or becomes.
- Text is UTF-8; an error names the path, the line and the column, never the content.
- YAML, TOML and JSON are nested at most `MAX_DEPTH` deep (a config is about 8 deep), and
  an error says where, in one line.
- Data files named by a config are read relative to its directory and may not leave it
  (`confined`), unless the user names the place (`farm validate/up --allow-outside PATH`).

    CONFIG_BYTES    16 MiB   a config file (farm validate, up, plan, certs, scenario)
    DATA_BYTES      64 MiB   a replay CSV
    PEM_BYTES        1 MiB   a certificate, key or CA file
    BODY_BYTES       1 MiB   an API request body (aiohttp's `client_max_size`: 413 past it)
    a state file             what the farm's banks can hold, compressed (farm.master.state)

Every refusal is an `InputError` (farm.errors): one line, exit 2 in the CLI, 400 or 413 from
the API.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farm.errors import InputError, MissingFile

if TYPE_CHECKING:
    from yaml import MarkedYAMLError

MiB = 1024 * 1024
CONFIG_BYTES = 16 * MiB
DATA_BYTES = 64 * MiB
PEM_BYTES = 1 * MiB
BODY_BYTES = 1 * MiB
MAX_DEPTH = 64

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_bytes(path: Path | str, limit: int, what: str = "file") -> bytes:
    """The whole of a regular file of at most `limit` bytes; raises InputError.

    A file that does not exist is MissingFile (a state file that does not exist yet is no
    error).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise MissingFile(f"{path}: cannot read this {what}: it does not exist") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read this {what}: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
        for test, kind in _KINDS:
            if test(mode):
                raise InputError(f"{path}: is {kind}, not a regular file; give a {what} here")
        return _bounded(fd, path, limit, what)
    finally:
        os.close(fd)


def _bounded(fd: int, path: Path | str, limit: int, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        try:
            chunk = os.read(fd, min(limit + 1 - size, MiB))
        except OSError as exc:
            if exc.errno == errno.EAGAIN:  # a regular file never says it; a changed one may
                raise InputError(f"{path}: cannot read this {what} without waiting") from exc
            raise InputError(f"{path}: cannot read this {what}: {exc.strerror or exc}") from exc
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    raise InputError(f"{path}: larger than {limit:,} bytes, the limit for a {what}")


def decode(data: bytes, where: str) -> str:
    """UTF-8 text (a BOM dropped); an error names the line and column, not the bytes."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(f"{where}: line {line}, column {column}: not UTF-8 text") from exc


def read_text(path: Path | str, limit: int, what: str = "file") -> str:
    return decode(read_bytes(path, limit, what), str(path))


def parse(text: str, syntax: str, where: str) -> Any:
    """YAML, TOML or JSON text as data, at most MAX_DEPTH deep; raises InputError."""
    import yaml  # here: `farm up --count N` reads no file, and starts its workers sooner

    try:
        if syntax == "toml":
            data: Any = tomllib.loads(text)
        elif syntax == "json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except RecursionError as exc:  # a parser's own recursion gave up first
        raise _too_deep(where) from exc
    except yaml.MarkedYAMLError as exc:
        raise InputError(f"{where}: not valid YAML: {_yaml_problem(exc)}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"{where}: not valid YAML: {_one_line(str(exc))}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{where}: not valid TOML: {_one_line(str(exc))}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{where}: not JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    if depth(data) > MAX_DEPTH:
        raise _too_deep(where)
    return data


def _too_deep(where: str) -> InputError:
    return InputError(f"{where}: nested more than {MAX_DEPTH} levels deep")


def _yaml_problem(exc: MarkedYAMLError) -> str:
    """Line and column and what is wrong, without the snippet of the file yaml adds."""
    mark = exc.problem_mark or exc.context_mark
    place = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return place + _one_line(" ".join(p for p in (exc.context, exc.problem) if p))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def depth(data: Any) -> int:
    """How deep lists and dicts nest in `data` (a scalar is 0), without recursion; past
    MAX_DEPTH the answer is just "more".

    Shared nodes (YAML aliases) are measured once: a billion-laughs document costs its
    distinct nodes, not its expansion. A cycle (`a: &a [*a]`) counts as too deep.
    """
    known: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, expanded = stack.pop()
        key = id(node)
        if expanded:
            found = 1 + max((known.get(id(c), 0) for c in _children(node)), default=0)
            if found > MAX_DEPTH:
                return found
            known[key] = found
            open_nodes.discard(key)
        elif key in open_nodes:
            return MAX_DEPTH + 1
        elif key not in known and isinstance(node, dict | list):
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in _children(node) if isinstance(c, dict | list))
    return known.get(id(data), 0)


def _children(node: Any) -> list[Any]:
    return list(node.values()) if isinstance(node, dict) else list(node)


def read_structured(path: Path | str, limit: int = CONFIG_BYTES, what: str = "config file") -> Any:
    """A YAML (or, by its suffix, TOML or JSON) file as data, by the rules above."""
    suffix = Path(path).suffix.lower()
    syntax = {".toml": "toml", ".json": "json"}.get(suffix, "yaml")
    return parse(read_text(path, limit, what), syntax, str(path))


def confined(base: Path, name: str, allowed: Sequence[Path] = ()) -> Path:
    """`name` relative to the directory `base`, symlinks followed; refused when it leaves
    `base` and no path of `allowed` holds it."""
    root = base.resolve()
    path = (root / name).resolve()
    for place in (root, *(Path(a).resolve() for a in allowed)):
        if path == place or path.is_relative_to(place):
            return path
    raise InputError(
        f"{name} is outside {root} (the config file's directory); "
        f"move it there or allow it with --allow-outside {path}"
    )
