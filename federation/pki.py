"""A small certificate authority for mutual TLS between federation, sites and users.

`init_pki` makes what a single-machine federation needs (the demo, tests, a first
try): a CA, a server certificate for localhost, and one client certificate per
name. Keys never leave the directory; it is created with mode 0700.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federation.identity import BACKDATE_S, binding, scopes

VALID_DAYS = 30
BACKDATE = dt.timedelta(seconds=BACKDATE_S)   # every certificate starts this long before its issue


SiteSpec = Mapping[str, Any]   # a Site spec body, as in a site config: location, labels, ...


def site_binding(spec: SiteSpec) -> list[str]:
    """The certificate units that fix a site's location and labels (see federation.identity)."""
    location = spec["location"]
    return binding(location["jurisdiction"], location["region"], dict(spec.get("labels") or {}))


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _name(common_name: str, units: tuple[str, ...] = ()) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedctl"),
                      *(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, u) for u in units),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def create_ca(directory: Path, name: str = "fedctl CA") -> Issued:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    issued = Issued(directory / "ca.pem", directory / "ca.key")
    issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(issued.key, key)
    return issued


def issue(ca: Issued, directory: Path, name: str, *, server: bool = False,
          hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), days: float = VALID_DAYS,
          units: tuple[str, ...] = ()) -> Issued:
    """A certificate for `name`; `units` carry a client's role and scope (see federation.identity).
    One valid for less than a day starts a day before it ends, so it reads as issued earlier than it
    was (a revocation by name refuses it if anything too readily)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = _signing_key(ca.key)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    end = now + dt.timedelta(days=days)
    start = min(now - BACKDATE, end - dt.timedelta(days=1))  # days < 0: already expired
    builder = (x509.CertificateBuilder()
               .subject_name(_name(name, units)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]),
                   critical=False))
    if server:
        sans: list[x509.GeneralName] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    issued = Issued(directory / f"{name}.pem", directory / f"{name}.key")
    issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(issued.key, key)
    return issued


def init_pki(directory: Path, clients: tuple[str, ...] = ("admin",),
             sites: Mapping[str, SiteSpec] | None = None) -> dict[str, Issued]:
    """CA, `server` certificate and client certificates, reusing a CA already there: `admin` is a
    federation admin, every other name a site; a site in `sites` has its location and labels bound
    into its certificate, so it cannot register as anything else."""
    directory = Path(directory)
    ca = Issued(directory / "ca.pem", directory / "ca.key")
    if not ca.cert.exists():
        ca = create_ca(directory)
    out = {"ca": ca, "server": issue(ca, directory, "server", server=True)}
    for name in (*clients, *(s for s in sites or {} if s not in clients)):
        if name == "admin":
            units = scopes("federation-admin")
        else:
            units = scopes("site", sites=(name,))
            if sites and name in sites:
                units += site_binding(sites[name])
        out[name] = issue(ca, directory, name, units=tuple(units))
    return out


def sign_request(ca: Issued, csr_pem: bytes, name: str, units: tuple[str, ...], days: int = VALID_DAYS) -> bytes:
    """A client certificate for `name` with `units`, for the key in a certificate signing request.
    Only the request's public key is used: its subject is the CA's to decide."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise ValueError("csr_pem: not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise ValueError("csr_pem: its signature does not match its key")
    if not isinstance(csr.public_key(), ec.EllipticCurvePublicKey):
        raise ValueError("csr_pem: the key must be an EC key")
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = _signing_key(ca.key)
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(name, units)).issuer_name(ca_cert.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def new_request(name: str, directory: Path) -> tuple[bytes, Path]:
    """A key (written to `directory`, mode 0600) and a signing request for it."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    path = directory / f"{name}.key"
    _write_key(path, key)
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(name)).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM), path


def _signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: the CA key is not an EC private key")
    return key
