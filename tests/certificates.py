"""Real X.509 certificates for the TLS tests, made with `cryptography`: a CA, a server certificate for localhost and
127.0.0.1 and a client certificate, both signed by it, and a client certificate from another CA (same subject).

    pki = make_pki(tmp_path)
    pki.ssl_config(client_verify=True)  # TF Serving's text-format SSLConfig for the server
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_NAME = "marketplace-inference"


@dataclasses.dataclass(frozen=True)
class Pki:
    """PEM files under one directory."""

    ca: Path  # the CA certificate: it signs the server and the client
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate with the same subject, signed by a CA the server does not trust
    stranger_key: Path

    def ssl_config(self, client_verify: bool) -> str:
        """tensorflow.serving.SSLConfig in text format: PEM text itself, not file names, as TF Serving reads it."""
        fields = {
            "server_key": self.server_key.read_text(),
            "server_cert": self.server_cert.read_text(),
            "custom_ca": self.ca.read_text(),
        }
        lines = [f"{name}: {_quoted(value)}" for name, value in fields.items()]
        lines.append(f"client_verify: {str(client_verify).lower()}")
        return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _ca(common_name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(common_name, _name(common_name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(ca, subject: str, usage, alt_names=()):
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(subject, ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(alt_names)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _write(directory: Path, stem: str, cert, key) -> tuple[Path, Path]:
    cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, other_ca = _ca("test serving CA"), _ca("some other CA")
    server_names = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server = _leaf(ca, "localhost", ExtendedKeyUsageOID.SERVER_AUTH, server_names)
    client = _leaf(ca, CLIENT_NAME, ExtendedKeyUsageOID.CLIENT_AUTH)
    stranger = _leaf(other_ca, CLIENT_NAME, ExtendedKeyUsageOID.CLIENT_AUTH)
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    return Pki(
        ca_file,
        *_write(directory, "server", *server),
        *_write(directory, "client", *client),
        *_write(directory, "stranger", *stranger),
    )
