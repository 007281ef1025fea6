"""TLS files on disk: the names in a `farm certs` directory and the check that each is
readable, made before any process needs them (so a mistake is one line, not a handshake
error later).

Used by fleets (a config file's `tls:` files), `farm up`/`farm validate --certs` (the
server side of a directory) and `farm bench --certs` (its client side).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from farm.errors import ConfigError

SERVER_SIDE = {"certificate": "server.pem", "key": "server.key", "client_ca": "ca.pem"}
CLIENT_SIDE = {"ca": "ca.pem", "certificate": "client.pem", "key": "client.key"}


def unreadable(path: Path) -> str | None:
    """Why `path` cannot be read (the system's words), or None when it can."""
    try:
        path.read_bytes()
    except OSError as exc:
        return str(exc.strerror)
    return None


def certs_dir(certs: str, files: Mapping[str, str]) -> dict[str, str]:
    """`files` (field -> name) of the `--certs` directory as absolute paths, each readable."""
    paths = {}
    for field, name in files.items():
        path = Path(certs, name).resolve()
        reason = unreadable(path)
        if reason is not None:
            raise ConfigError(f"--certs {certs}: cannot read {name}: {reason}")
        paths[field] = str(path)
    return paths
