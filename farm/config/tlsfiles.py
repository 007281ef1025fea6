"""TLS files on disk: the names in a `farm certs` directory, the check that each is
readable, and the check that a certificate and key can serve, made before any process needs
them (so a mistake is one line naming the file, not a handshake error or a worker serving
nothing later).

Used by fleets (a config file's `tls:` files), `farm up`/`farm validate --certs` (the
server side of a directory) and `farm bench --certs` (its client side). Every file is read
by farm.files' rules first (a regular file of at most files.PEM_BYTES: a FIFO in its place
would hang the TLS library's own read); then `check_tls` loads the certificate and key as a
worker will, so a key that does not match its certificate, or a file that is no
certificate, is found by `farm validate` and stops `farm up` before anything is bound.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path

from farm.errors import ConfigError, InputError, MissingFile
from farm.files import PEM_BYTES, read_bytes, read_text

SERVER_SIDE = {"certificate": "server.pem", "key": "server.key", "client_ca": "ca.pem"}
CLIENT_SIDE = {"ca": "ca.pem", "certificate": "client.pem", "key": "client.key"}


def unreadable(path: Path) -> str | None:
    """Why `path` cannot be read as a TLS file (in a few words), or None when it can."""
    try:
        read_bytes(path, PEM_BYTES, "TLS file")
    except MissingFile:
        return "No such file or directory"
    except InputError as exc:
        return str(exc).removeprefix(f"{path}: ")
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


class TlsFileError(InputError):
    """One of the files is wrong: `field` says which (certificate, key or client_ca)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_tls(certificate: Path, key: Path, client_ca: Path | None = None) -> None:
    """Raises InputError (naming the file and what is wrong) unless a server could serve
    with these files."""
    try:
        certificate_pem = read_text(certificate, PEM_BYTES, "certificate")
    except InputError as exc:
        raise TlsFileError("certificate", str(exc)) from exc
    try:
        read_text(key, PEM_BYTES, "private key")
    except InputError as exc:
        raise TlsFileError("key", str(exc)) from exc
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cadata=certificate_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise TlsFileError("certificate", f"{certificate}: not a PEM certificate") from exc
    try:
        context.load_cert_chain(certificate, key, password=_no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise InputError(
                f"{key}: this key does not match the certificate {certificate}"
            ) from exc
        raise InputError(
            f"{key}: not a PEM private key (or one protected by a password, which the farm "
            "cannot give)"
        ) from exc
    except ValueError as exc:  # the password callback refused
        raise TlsFileError(
            "key", f"{key}: a private key protected by a password; give one without"
        ) from exc
    if client_ca is not None:
        try:
            context.load_verify_locations(cadata=read_text(client_ca, PEM_BYTES, "CA file"))
        except InputError as exc:
            raise TlsFileError("client_ca", str(exc)) from exc
        except (ssl.SSLError, ValueError) as exc:
            raise TlsFileError("client_ca", f"{client_ca}: not a PEM CA certificate") from exc


def _no_password() -> bytes:
    # Without a callback, OpenSSL asks for a password on the terminal: a start would hang.
    raise ValueError("a password is needed")
