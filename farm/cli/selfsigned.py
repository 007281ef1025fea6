"""The certificates `farm certs DIR` (or `farm certs FILE`) makes: a throwaway CA, a server
certificate and a client certificate with a role, for trying Modbus/TCP Security
(`--transport tls`).

Part of the CLI (farm.cli.certs is the command, and imports this only when it runs: loading
cryptography would cost every `farm` command 20 ms). Writes into DIR:
    ca.pem, ca.key          a self-signed CA (EC P-256), for nothing but this test
    server.pem, server.key  the farm's certificate: TLS server, for each --host (IPs or names)
    client.pem, client.key  a master's certificate: TLS client, with the Modbus/TCP Security
                            role extension (1.3.6.1.4.1.50316.802.1, a UTF8String) = --role
`farm up --transport tls --certs DIR` serves with the server pair and asks clients for a
certificate from the CA; `farm bench --transport tls --certs DIR` connects with the client
pair. Given a config FILE instead, the same files go where its TLS fleets name them
(`write_for_config`). Keys are written unencrypted, readable by their owner only: they are
for tests.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from farm.config.schema import read
from farm.errors import ConfigError, FarmError

ROLE_OID = x509.ObjectIdentifier("1.3.6.1.4.1.50316.802.1")  # farm.worker.transports.tls reads it
FILES = ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")


def utf8_string(text: str) -> bytes:
    """`text` as a DER UTF8String (the role extension's value)."""
    data = text.encode()
    if len(data) < 0x80:
        return bytes((0x0C, len(data))) + data
    size = (len(data).bit_length() + 7) // 8
    return bytes((0x0C, 0x80 | size)) + len(data).to_bytes(size, "big") + data


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "modbus-farm test"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_certificates(role: str, hosts: tuple[str, ...], days: int) -> dict[str, bytes]:
    """The six files' contents, by name."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("modbus-farm test CA")
    ca = (
        _builder("modbus-farm test CA", ca_name, ca_key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        _builder("modbus-farm server", ca_name, server_key, days)
        .add_extension(x509.SubjectAlternativeName([_alt_name(h) for h in hosts]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = (
        _builder(f"modbus-farm client ({role})", ca_name, client_key, days)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.UnrecognizedExtension(ROLE_OID, utf8_string(role)), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def pem(certificate: x509.Certificate) -> bytes:
        return certificate.public_bytes(serialization.Encoding.PEM)

    def private(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    return {
        "ca.pem": pem(ca),
        "ca.key": private(ca_key),
        "server.pem": pem(server),
        "server.key": private(server_key),
        "client.pem": pem(client),
        "client.key": private(client_key),
    }


def write_certificates(
    directory: Path, role: str, hosts: tuple[str, ...], days: int, force: bool
) -> list[Path]:
    """Write the six files into `directory`; raises FarmError (an existing file without
    `force`, no room)."""
    existing = [name for name in FILES if (directory / name).exists()]
    if existing and not force:
        raise ConfigError(
            f"{directory} already holds {', '.join(existing)}; pick another directory or "
            "pass --force to replace them"
        )
    return _write({directory / name: name for name in FILES}, role, hosts, days)


def write_for_config(
    config: Path, role: str, hosts: tuple[str, ...], days: int, force: bool
) -> list[Path]:
    """Write the files a config file's TLS fleets name (relative to it): the server pair
    at `certificate` and `key`, the CA at `client_ca` (else ca.pem beside the certificate)
    with its key beside it (ca.key), and client.pem and client.key beside the CA, for
    `farm bench --certs` that directory. One CA signs all of them."""
    paths = _config_paths(config)
    existing = [str(path) for path in paths if path.exists()]
    if existing and not force:
        raise ConfigError(
            f"{config}: its TLS files exist already ({', '.join(existing)}); "
            "pass --force to replace them"
        )
    return _write(paths, role, hosts, days)


def _config_paths(config: Path) -> dict[Path, str]:
    """Where each of FILES goes for `config`'s TLS fleets; raises ConfigError."""
    data = read(config)
    fleets = data.get("fleets") if isinstance(data, dict) else None
    paths: dict[Path, str] = {}
    for index, fleet in enumerate(fleets if isinstance(fleets, list) else []):
        if not isinstance(fleet, dict) or fleet.get("transport") != "tls":
            continue
        tls = fleet.get("tls")
        where = f"{config}: fleets[{index}].tls"
        if not isinstance(tls, dict) or not all(
            isinstance(tls.get(name), str) for name in ("certificate", "key")
        ):
            raise ConfigError(f"{where}: give certificate and key, the files to write")
        certificate = config.parent / tls["certificate"]
        ca = (
            config.parent / tls["client_ca"]
            if isinstance(tls.get("client_ca"), str)
            else certificate.parent / "ca.pem"
        )
        wanted = {
            certificate: "server.pem",
            config.parent / tls["key"]: "server.key",
            ca: "ca.pem",
            ca.with_suffix(".key"): "ca.key",
            ca.parent / "client.pem": "client.pem",
            ca.parent / "client.key": "client.key",
        }
        if len(wanted) < len(FILES):
            raise ConfigError(f"{where}: two of its files are one; name a file for each")
        for path, name in wanted.items():
            if paths.setdefault(path, name) != name:
                raise ConfigError(
                    f"{where}: {path} would hold both {paths[path]} and {name}; name other files"
                )
    if not paths:
        raise ConfigError(
            f"{config}: no fleet has transport: tls; `farm certs DIR` writes a set to DIR"
        )
    return paths


def _write(paths: dict[Path, str], role: str, hosts: tuple[str, ...], days: int) -> list[Path]:
    """One set of certificates, each file written where `paths` says (owner-only)."""
    contents = make_certificates(role, hosts, days)
    for path, name in paths.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
            descriptor = os.open(path, flags, 0o600)
            # The mode above is only for a new file: one there already (--force) keeps its
            # own, maybe world-readable, unless it is set here.
            os.fchmod(descriptor, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(contents[name])
        except OSError as exc:
            raise FarmError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return list(paths)
