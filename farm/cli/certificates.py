"""The certificates `farm certs DIR` makes: a throwaway CA, a server certificate and a
client certificate with a role, for trying Modbus/TCP Security (`--transport tls`).

Part of the CLI (farm.cli.certs is the command, and imports this only when it runs: loading
cryptography would cost every `farm` command 20 ms). Writes into DIR:
    ca.pem, ca.key          a self-signed CA (EC P-256), for nothing but this test
    server.pem, server.key  the farm's certificate: TLS server, for each --host (IPs or names)
    client.pem, client.key  a master's certificate: TLS client, with the Modbus/TCP Security
                            role extension (1.3.6.1.4.1.50316.802.1, a UTF8String) = --role
`farm up --transport tls --certs DIR` serves with the server pair and asks clients for a
certificate from the CA; `farm bench --transport tls --certs DIR` connects with the client
pair. Keys are written unencrypted, readable by their owner only: they are for tests.
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

from farm.errors import ConfigError, FarmError

ROLE_OID = x509.ObjectIdentifier("1.3.6.1.4.1.50316.802.1")  # farm.worker.tls reads it
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
) -> None:
    """Write the six files; raises FarmError (an existing file without `force`, no room)."""
    existing = [name for name in FILES if (directory / name).exists()]
    if existing and not force:
        raise ConfigError(
            f"{directory} already holds {', '.join(existing)}; pick another directory or "
            "pass --force to replace them"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in make_certificates(role, hosts, days).items():
            path = directory / name
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
    except OSError as exc:
        raise FarmError(f"cannot write certificates to {directory}: {exc.strerror or exc}") from exc
