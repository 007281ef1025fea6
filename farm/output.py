"""How the CLI and `farm bench` print: Rich consoles that print user text as it is.

Every name a user chose (a file, fleet, server, point or step) is printed literally: Rich
markup and emoji codes are off, so `site[a].yaml` and `pump:fire:` stay as they are. On a
terminal Rich fits tables to its width; in a pipe or a file there is no width to fit, and
Rich's default of 80 columns would cut a table's cells short (`127.0.0.1:…`), so the output
is given room for whole lines there (the COLUMNS variable still wins when set).
"""

from __future__ import annotations

import os

from rich.console import Console

PIPE_WIDTH = 240  # columns for output to a pipe or a file: a whole table row fits


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that prints text literally and cuts nothing short."""
    made = Console(stderr=stderr, markup=False, emoji=False)
    if made.is_terminal or "COLUMNS" in os.environ:
        return made
    return Console(stderr=stderr, markup=False, emoji=False, width=PIPE_WIDTH)
