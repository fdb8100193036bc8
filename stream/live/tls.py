"""HTTPS for `serve`: a certificate from files or made at start, and URLs a person can open.

Browsers give a page the camera only in a secure context: HTTPS, or `localhost`. A phone or a
second laptop on the LAN therefore needs HTTPS. `--tls-self-signed` makes a certificate at start
(an ECDSA P-256 key, valid for 30 days, for `localhost` and every address of this machine),
keeps it in memory only, and prints its SHA-256 fingerprint so that the person accepting the
browser's warning can compare it with what the browser shows.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stream.core.errors import ConfigError

#: Bind addresses that mean "every interface".
ANY_HOST = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class TlsSetup:
    """A server TLS context and what to tell the person starting the server."""

    context: ssl.SSLContext
    fingerprint: str  # SHA-256 of the certificate, colon-separated upper-case hex
    self_signed: bool


def machine_addresses(ipv6: bool = False) -> list[str]:
    """This machine's non-loopback interface addresses (IPv4 first; link-local IPv6 left out)."""
    import ifaddr  # aioice's own dependency: the interface list without parsing `ip` output

    v4: list[str] = []
    v6: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                addr = ipaddress.ip_address(ip.ip)
                if not addr.is_loopback and not addr.is_link_local and str(addr) not in v4:
                    v4.append(str(addr))
            elif ipv6:
                addr6 = ipaddress.ip_address(ip.ip[0])
                if not addr6.is_loopback and not addr6.is_link_local and str(addr6) not in v6:
                    v6.append(str(addr6))
    return v4 + v6


def open_urls(host: str, port: int, tls: bool, path: str = "/") -> list[str]:
    """URLs that reach a server bound to `host`: the machine's addresses for all interfaces.

    `localhost` comes first (a camera works there even without TLS), then the LAN addresses.
    """
    scheme = "https" if tls else "http"

    def url(h: str) -> str:
        return f"{scheme}://{f'[{h}]' if ':' in h else h}:{port}{path}"

    if host in ANY_HOST:
        return [url("localhost"), *(url(a) for a in machine_addresses(ipv6=host == "::"))]
    return [url(host)]


def make_self_signed(names: list[str], days: int = 30) -> tuple[bytes, bytes]:
    """A self-signed certificate and its key (PEM) for these host names and IP addresses."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for n in dict.fromkeys(names):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "emotion-stream (self-signed)")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def fingerprint(cert_pem: bytes) -> str:
    """The certificate's SHA-256 fingerprint as browsers show it (AB:CD:...)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    digest = x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


def _context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server context from PEM bytes (the key is written to a private temp file only while
    `ssl` loads it, then removed: Python's ssl module reads chains from files only)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="emotion-stream-tls-") as tmp:
        cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_file.write_bytes(cert_pem)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def check(cert: str, key: str, self_signed: bool) -> None:
    """Refuse contradicting TLS settings (before any model is loaded).

    Raises:
        ConfigError: only one of cert/key, or files and self-signed together.
    """
    if self_signed and (cert or key):
        raise ConfigError("use either --tls-cert/--tls-key or --tls-self-signed, not both")
    if bool(cert) != bool(key) and not self_signed:
        raise ConfigError("--tls-cert and --tls-key go together (a certificate and its key)")


def setup(cert: str = "", key: str = "", self_signed: bool = False, host: str = "") -> TlsSetup:
    """The TLS context for `serve`: from `cert`/`key` files, or a fresh self-signed one.

    Raises:
        ConfigError: contradicting settings (see `check`) or unreadable files.
    """
    check(cert, key, self_signed)
    if self_signed:
        names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), *machine_addresses(True)]
        if host and host not in ANY_HOST:
            names.append(host)
        cert_pem, key_pem = make_self_signed(names)
        return TlsSetup(_context(cert_pem, key_pem), fingerprint(cert_pem), True)
    try:
        cert_pem, key_pem = Path(cert).read_bytes(), Path(key).read_bytes()
        ctx = _context(cert_pem, key_pem)
        return TlsSetup(ctx, fingerprint(cert_pem), False)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"cannot use the certificate {cert} with key {key}: {exc}") from None
