"""Statements a site signs with the key of its certificate, and their checks by its peers.

Secure aggregation (`training.bonawitz`) relays every message between sites through the
federation, which it must not have to trust: each message is signed by its site's TLS key, and a
peer accepts it only with a certificate the federation's CA issued to that site (role `site`,
named as the site). What is still trusted is that CA: whoever holds its key could issue a site's
certificate and speak for it (docs/training.md).
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from federation.identity import of_certificate


class Refused(ValueError):
    """A secure-aggregation message this site will not act on, and why."""


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Signer:
    site: str
    certificate: bytes            # PEM
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def load(cls, site: str, cert: Path, key: Path) -> Signer:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise Refused(f"{key}: secure aggregation signs with an EC key")
        return cls(site, cert.read_bytes(), private)

    def sign(self, body: dict[str, Any]) -> dict[str, Any]:
        signature = self.key.sign(canonical(body), ec.ECDSA(hashes.SHA256()))
        return {"body": body, "signature": signature.hex(), "certificate": self.certificate.decode()}


def verify(signed: Any, site: str, ca: x509.Certificate, now: dt.datetime | None = None) -> dict[str, Any]:
    """The body of a statement `site` signed, or Refused: its certificate must be the CA's, valid
    now, for the role `site` and this site's name, and the signature its key's."""
    if not isinstance(signed, dict) or not isinstance(signed.get("body"), dict):
        raise Refused(f"{site}: not a signed statement")
    try:
        cert = x509.load_pem_x509_certificate(str(signed["certificate"]).encode())
        cert.verify_directly_issued_by(ca)
    except (KeyError, ValueError, TypeError, InvalidSignature) as e:
        raise Refused(f"{site}: its certificate is not one the federation's CA issued ({e})") from None
    now = now or dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise Refused(f"{site}: its certificate is not valid now")
    who = of_certificate(cert.public_bytes(serialization.Encoding.PEM))
    if who.role != "site" or who.name != site:
        raise Refused(f"{site}: signed by {who.name!r} ({who.role or 'no role'}), not by site {site}")
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise Refused(f"{site}: its certificate's key cannot sign this")
    try:
        public.verify(bytes.fromhex(str(signed["signature"])), canonical(signed["body"]), ec.ECDSA(hashes.SHA256()))
    except (KeyError, ValueError, InvalidSignature):
        raise Refused(f"{site}: the signature does not match what it says") from None
    return signed["body"]
