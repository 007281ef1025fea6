"""How the CLI and `farm bench` print: Rich consoles that print user text as it is.

Every name a user chose (a file, fleet, server, point or step) is printed literally: Rich
markup and emoji codes are off, so `site[a].yaml` and `pump:fire:` stay as they are. On a
terminal Rich fits tables to its width; in a pipe or a file there is no width to fit, and
Rich's default of 80 columns would cut a table's cells short (`127.0.0.1:…`), so the output
is given room for whole lines there (the COLUMNS variable still wins when set).

`exit_with(error)` is how every command shows a FarmError: one line on stderr, then the exit.
"""

from __future__ import annotations

import os
import sys
import unicodedata
from typing import NoReturn

from rich.console import Console
from rich.text import Text

from farm.errors import FarmError

PIPE_WIDTH = 240  # columns for output to a pipe or a file: a whole table row fits


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that prints text literally and cuts nothing short."""
    made = Console(stderr=stderr, markup=False, emoji=False)
    if made.is_terminal or "COLUMNS" in os.environ:
        return made
    return Console(stderr=stderr, markup=False, emoji=False, width=PIPE_WIDTH)


def one_line(text: str) -> str:
    """`text` with every character that would break or hide part of a line (newlines,
    separators, escapes: Unicode categories Cc, Cf, Zl, Zp) written as an escape."""
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char) in _BREAKING
        else char
        for char in text
    )


_BREAKING = frozenset({"Cc", "Cf", "Zl", "Zp"})


def exit_with(error: FarmError) -> NoReturn:
    """Print `error` as the one line a user sees, and exit with its code.

    The message carries user text (file names, fleet names, addresses) that may hold
    square brackets: it goes out as a Text, never through Rich markup. It may hold control
    characters too (a YAML key with a newline in it): they are shown escaped, so the line
    stays one line.
    """
    line = Text.assemble(("farm: error:", "bold red"), " ", one_line(str(error)))
    Console(stderr=True, markup=False, emoji=False).print(line, highlight=False, soft_wrap=True)
    sys.exit(error.exit_code)
