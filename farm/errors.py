"""Errors a user can meet, each turned into one line and a non-zero exit by the CLI.

FarmError                  base: `str(error)` is the line the user sees
├── ConfigError            a bad option or config file (exit 2)
│   └── InputError         a file or body refused by farm.files: not a regular file, too
│       └── MissingFile    large, not UTF-8, nested too deep, outside its directory; absent
├── PortBusyError          addresses already in use at start (exit 1)
├── ResourceLimitError     too many servers for this machine's limits (exit 1)
├── BootError              a worker could not boot, repeatedly (exit 1)
├── StateFileError         a state file that cannot be used: corrupt, foreign (exit 2)
├── StateSaveError         the farm could not save its state file while it ran (exit 1)
└── FarmUnreachable        the CLI could not reach a farm's control API (exit 1)

`farm.output.exit_with(error)` is how every command shows one: a single line on stderr, then
the exit. This module imports nothing but the standard library: every program raises these
errors, a worker too, and a worker never loads Rich (farm.worker's map).
"""

from __future__ import annotations


class FarmError(Exception):
    """Base of every error that reaches the user as one line."""

    exit_code = 1


class ConfigError(FarmError):
    """A bad option or configuration file.

    `about` names the parameters of the model at fault (`count`, `port_base`, ...): the
    model speaks of itself, and a front end (the CLI) names its own options for them.
    """

    exit_code = 2

    def __init__(self, message: str, about: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.about = about


class PortBusyError(FarmError):
    """One or more server addresses are already in use."""


class ResourceLimitError(FarmError):
    """The requested farm does not fit this machine's limits (open files)."""


class BootError(FarmError):
    """A worker slot failed to boot repeatedly; the farm stops."""


class StateFileError(FarmError):
    """A state file (`farm up --state`) that is unreadable, corrupt, or for another fleet."""

    exit_code = 2


class StateSaveError(FarmError):
    """The farm ran, but one or more saves of its state file failed: values may be lost."""


class InputError(ConfigError):
    """A file or request body refused by farm.files; the message names the path (or body)
    and the position, never the content."""


class MissingFile(InputError):
    """The file does not exist (for a state file, not an error: there is none yet)."""


class FarmUnreachable(FarmError):
    """No farm answers on the control port."""
