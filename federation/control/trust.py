"""Who may speak: join tokens, enrolment, certificate renewal and revocation."""
from __future__ import annotations

import hashlib
import secrets
import threading
import time

from federation.control.core import Core
from federation.errors import InvalidSpec, PermissionDenied, Unsatisfiable
from federation.identity import Identity, binding, scopes
from federation.pki import Issued, sign_request


class Trust:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._seen: set[str] = set()
        self.reload()
        # Held while this federation issues a certificate and while it revokes a name, so that a
        # certificate is issued either before the revocation (and refused) or not at all.
        self._issuing = threading.Lock()

    def reload(self) -> None:
        """Revocations as the store holds them (another replica may have revoked)."""
        self._revoked = self.core.store.revoked_serials()
        self._revoked_names = self.core.store.revoked_names()

    def authenticate(self, who: Identity) -> Identity:
        """The caller, unless its certificate was revoked; certificates are remembered when first
        seen so that `revoke` can count them."""
        self.check(who)
        if who.serial and who.serial not in self._seen:
            self.core.store.remember_certificate(who.serial, who.name, self.core.clock())
            self._seen.add(who.serial)
        return who

    def check(self, who: Identity) -> None:
        """PermissionDenied if the caller's certificate was revoked. Open streams call this before
        each message they send."""
        refusal = self._refusal(who)
        if refusal:
            raise PermissionDenied(refusal)

    def revoked(self, who: Identity) -> bool:
        return bool(self._refusal(who))

    def _refusal(self, who: Identity) -> str:
        """Why `who` is refused: its serial was revoked, or its name after its certificate was issued."""
        if not who.serial:
            return ""  # no certificate: the plain-text development channel
        if who.serial in self._revoked:
            return f"the certificate of {who.name} (serial {who.serial}) is revoked"
        revoked_at = self._revoked_names.get(who.name)
        if revoked_at is not None and who.issued_at <= revoked_at:
            return (f"the certificate of {who.name} (serial {who.serial}) is revoked: every certificate issued "
                    f"for {who.name} up to {_utc(revoked_at)} is refused")
        return ""

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
        with self._issuing:
            name, attrs = self.core.store.use_join_token(token_id, hashlib.sha256(secret.encode()).hexdigest(),
                                                         self.core.clock())
            units = (*scopes("site", sites=(name,)), *binding(attrs["jurisdiction"], attrs["region"],
                                                              attrs["labels"]))
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
        with self._issuing:
            self.check(who)  # again: it may have been revoked since the call was authenticated
            try:
                cert = sign_request(ca, csr_pem, who.name, units, days)
            except ValueError as e:
                raise InvalidSpec(str(e)) from None
        self.core.record(who.name, "cert.renew", who.name, old_serial=who.serial)
        return cert

    def revoke(self, name: str, actor: str) -> int:
        """Refuse, at once (open streams included), every certificate issued for `name` up to now,
        whether or not it was ever used, and the join tokens for `name` not yet used; how many of
        those certificates had been seen. A certificate issued afterwards works."""
        with self._issuing:
            now = self.core.clock()
            serials = self.core.store.revoke_certificates(name, now)
            self._revoked.update(serials)
            self._revoked_names[name] = max(now, self._revoked_names.get(name, now))
        self.core.record(actor, "cert.revoke", name, serials=serials, revoked_at=now,
                         refused=f"every certificate issued up to {_utc(now)}")
        self.core.changes.bump()
        return len(serials)


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
