"""Replay CSVs: the column of numbers a `replay` behaviour plays, read by farm.files' rules.

Part of the config stage, for farm.config.template_reader. The file is named relative to the
config file's directory and may not leave it (nor may a symlink) unless the user allowed the
place (`--allow-outside PATH`): a config from elsewhere must not make the farm read, and
serve as registers, a file of the machine it runs on. Errors name the file and the line,
never the content: a file that is no CSV of numbers (`/etc/shadow`) is not echoed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from farm.errors import InputError
from farm.files import DATA_BYTES, confined, read_text


def csv_column(
    base: Path, name: str, column: str | int, allowed: Sequence[Path] = ()
) -> tuple[float, ...]:
    """Column `column` (a header name, or an index) of the CSV `name` under `base`, as
    numbers; raises InputError naming the file (as the config wrote it) and the line."""
    path = confined(base, name, allowed)
    text = read_text(path, DATA_BYTES, "replay CSV")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise InputError(f"{name}: not CSV ({exc})") from exc
    if not rows:
        raise InputError(f"{name} is empty")
    header, body = rows[0], rows[1:]
    if isinstance(column, int):
        index = column
    elif column in header:
        index = header.index(column)
    else:
        raise InputError(f"{name}: line 1 (the header) has no column {column!r}")
    values = []
    for line, row in enumerate(body, start=2):
        if not row:
            continue
        try:
            values.append(float(row[index]))
        except IndexError as exc:
            raise InputError(f"{name}: line {line} has no column {column!r}") from exc
        except ValueError as exc:
            raise InputError(f"{name}: line {line}: column {column!r} is not a number") from exc
    if not values:
        raise InputError(f"{name} has no rows under its header")
    return tuple(values)
