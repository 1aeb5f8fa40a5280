"""Who may speak: join tokens, enrolment, certificate renewal and revocation."""
from __future__ import annotations

import hashlib
import secrets

from federation.control.core import Core
from federation.errors import InvalidSpec, PermissionDenied, Unsatisfiable
from federation.identity import Identity, binding, scopes
from federation.pki import Issued, sign_request


class Trust:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._seen: set[str] = set()
        self._revoked = core.store.revoked_serials()

    def authenticate(self, who: Identity) -> Identity:
        """The caller, unless its certificate was revoked; certificates are remembered when first
        seen so that they can be revoked by name."""
        if who.serial:
            if who.serial in self._revoked:
                raise PermissionDenied(f"the certificate of {who.name} (serial {who.serial}) is revoked")
            if who.serial not in self._seen:
                self.core.store.remember_certificate(who.serial, who.name, self.core.clock())
                self._seen.add(who.serial)
        return who

    def create_join_token(self, name: str, jurisdiction: str, region: str, labels: dict[str, str], ttl_s: float,
                          actor: str) -> tuple[str, float]:
        """A one-time token for site `name` with its attributes bound; (token, expiry)."""
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = self.core.clock()
        expires = now + (ttl_s or 3600.0)
        attributes = {"jurisdiction": jurisdiction, "region": region, "labels": dict(labels)}
        self.core.store.add_join_token(token_id, hashlib.sha256(secret.encode()).hexdigest(), name, attributes, now,
                                       expires)
        self.core.record(actor, "site.token", name, token=token_id, expires_at=expires, **attributes)
        return f"{token_id}.{secret}", expires

    def enroll(self, token: str, csr_pem: bytes, ca: Issued, days: int) -> bytes:
        """A site certificate for the key in `csr_pem`, naming the token's site and attributes."""
        token_id, _, secret = token.partition(".")
        name, attrs = self.core.store.use_join_token(token_id, hashlib.sha256(secret.encode()).hexdigest(),
                                                     self.core.clock())
        units = (*scopes("site", sites=(name,)), *binding(attrs["jurisdiction"], attrs["region"], attrs["labels"]))
        try:
            cert = sign_request(ca, csr_pem, name, units, days)
        except ValueError as e:
            raise InvalidSpec(str(e)) from None
        self.core.record(name, "site.enrol", name, token=token_id, **attrs)
        return cert

    def renew(self, who: Identity, csr_pem: bytes, ca: Issued | None, days: int) -> bytes:
        """A new certificate for a site's new key: its name, role and bound attributes unchanged."""
        if ca is None:
            raise Unsatisfiable("certificate renewal needs the CA key (spec.enrolment in the federation config)")
        units = (*scopes("site", sites=tuple(sorted(who.sites))), *who.bound)
        try:
            cert = sign_request(ca, csr_pem, who.name, units, days)
        except ValueError as e:
            raise InvalidSpec(str(e)) from None
        self.core.record(who.name, "cert.renew", who.name, old_serial=who.serial)
        return cert

    def revoke(self, name: str, actor: str) -> int:
        """Refuse every certificate seen for `name`, at once (open streams included)."""
        serials = self.core.store.revoke_certificates(name, self.core.clock())
        self._revoked.update(serials)
        self.core.record(actor, "cert.revoke", name, serials=serials)
        self.core.changes.bump()
        return len(serials)

    def revoked(self, who: Identity) -> bool:
        return bool(who.serial) and who.serial in self._revoked
