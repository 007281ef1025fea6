"""Words for numbers in what the farm and the CLI print: '1 server', '2 servers'.

Pure text, imported by every process (config, master, worker, CLI, bench): no dependencies.
"""

from __future__ import annotations


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """'1 server', '2 servers', '0 servers' (`plural` for nouns that do not take an s)."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"
