"""A state file's sidecar, `FILE.failed`: when the last farm that used it failed to save.

Beside farm.master.state.saver in the master. A save that fails (a full disk, a read-only
filesystem) leaves the state file as it was at the last good save: the next start would
restore it as if nothing were lost. The sidecar says otherwise: the start compares its
`failed_at` with the state file's `saved_at` and warns when the file is the older.

The sidecar is made at start, `SIZE` bytes of padding, and a failure is written over it in
place: on a disk that has since filled up, rewriting blocks the file already holds still
works where creating a file does not. A sidecar whose failure predates the state file's
last save is stale and says nothing; it is never removed (a directory that lost it would
otherwise hide the next failure).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from farm.errors import InputError
from farm.files import read_bytes

SIZE = 512


@dataclass(frozen=True, slots=True)
class Failure:
    failed_at: str  # ISO 8601, UTC, as a state file's saved_at
    reason: str


def sidecar(state: Path) -> Path:
    return state.with_name(state.name + ".failed")


def last_failure(state: Path) -> Failure | None:
    """The failure the sidecar records, if any (an unreadable sidecar records none)."""
    try:
        data = json.loads(read_bytes(sidecar(state), SIZE, "state sidecar").rstrip(b" \n"))
    except (InputError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("failed_at"), str):
        return None
    return Failure(data["failed_at"], str(data.get("reason", "")))


def stale(saved_at: str, failure: Failure | None) -> bool:
    """Whether a state file saved at `saved_at` is older than the failure."""
    if failure is None:
        return False
    try:
        return datetime.fromisoformat(saved_at) < datetime.fromisoformat(failure.failed_at)
    except ValueError:
        return False


class Marker:
    """The sidecar, held open from the start so that a failure can be written in place."""

    def __init__(self, state: Path) -> None:
        self.fd: int | None = None
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        with contextlib.suppress(OSError):  # no sidecar: failures are still logged
            self.fd = os.open(sidecar(state), flags, 0o644)
            if os.fstat(self.fd).st_size < SIZE:
                os.pwrite(self.fd, b" " * SIZE, 0)

    def failed(self, reason: str) -> bool:
        """Record a failed save now; False when even that could not be written."""
        if self.fd is None:
            return False
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        record = json.dumps({"failed_at": now, "reason": reason[:300]}).encode()
        try:
            os.pwrite(self.fd, record.ljust(SIZE)[:SIZE], 0)
            os.fsync(self.fd)
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
