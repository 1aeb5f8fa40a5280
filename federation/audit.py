"""An append-only, hash-chained, signed record of every decision that matters.

Each record holds its sequence number, time, actor, action, subject and details, the hash
of the record before it, its own hash (SHA-256 over the previous hash and its canonical
JSON), and the federation's ECDSA signature of that hash. `verify` walks the chain and
names the first record that was edited, dropped, reordered or not signed by the key.
Dropping records from the end leaves a valid shorter chain: keep the head (`fedctl audit
verify` prints it) somewhere the federation cannot write to detect that.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from federation.errors import ConfigError

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    at: float
    actor: str            # who: a certificate's name, or "scheduler"
    action: str           # job.submit, job.place, job.cancel, job.preempt, site.register, site.state, call.denied
    subject: str          # what: a job id, a site name
    detail: dict[str, Any] = field(default_factory=dict)
    prev: str = GENESIS
    hash: str = ""
    signature: str = ""

    def body(self) -> bytes:
        return json.dumps([self.seq, self.at, self.actor, self.action, self.subject, self.detail],
                          sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.prev.encode() + self.body()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Signer:
    """The federation's audit key: EC P-256, kept beside the store (mode 0600)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self.key = key

    @classmethod
    def beside(cls, store: Path) -> Signer:
        path = key_path(store)
        if path.exists():
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{path}: the audit key is not an EC private key")
            return cls(loaded)
        key = ec.generate_private_key(ec.SECP256R1())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        public_path(store).write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return cls(key)

    def seal(self, record: AuditRecord) -> AuditRecord:
        digest = record.digest()
        signature = self.key.sign(bytes.fromhex(digest), ec.ECDSA(hashes.SHA256())).hex()
        return replace(record, hash=digest, signature=signature)


def key_path(store: Path) -> Path:
    return Path(f"{store}.audit-key.pem")


def public_path(store: Path) -> Path:
    return Path(f"{store}.audit-pub.pem")


def load_public(path: Path) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"{path}: the audit public key is not an EC key")
    return key


def verify(records: Iterable[AuditRecord], public: ec.EllipticCurvePublicKey) -> tuple[int, str, str]:
    """(records checked, head hash, '' or what is wrong with the first bad record)."""
    prev, expected, n = GENESIS, 1, 0
    for r in records:
        n += 1
        where = f"record {r.seq} ({r.action} {r.subject})"
        if r.seq != expected:
            return n, prev, f"{where}: expected record {expected} here; records were dropped or reordered"
        if r.prev != prev:
            return n, prev, f"{where}: does not follow record {expected - 1} (its previous hash differs)"
        if r.digest() != r.hash:
            return n, prev, f"{where}: its content does not match its hash (edited)"
        try:
            public.verify(bytes.fromhex(r.signature), bytes.fromhex(r.hash), ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return n, prev, f"{where}: the signature is not the federation's"
        prev, expected = r.hash, expected + 1
    return n, prev, ""


def read(store: Path, action: str = "", subject: str = "", actor: str = "") -> list[AuditRecord]:
    """The log in a federation's SQLite file, opened read-only, in stored order; filtered when asked."""
    try:
        db = sqlite3.connect(f"file:{Path(store).resolve()}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise ConfigError(f"{store}: cannot open: {e}") from None
    try:
        rows = db.execute("SELECT seq, at, actor, action, subject, detail, prev, hash, signature FROM audit"
                          " ORDER BY rowid").fetchall()
    except sqlite3.Error as e:
        raise ConfigError(f"{store}: not a federation store with an audit log ({e})") from None
    finally:
        db.close()
    out = []
    for seq, at, who, what, about, detail, prev, digest, signature in rows:
        try:
            parsed = json.loads(detail)
        except ValueError:
            parsed = {"unreadable": detail}   # verify reports it: the hash will not match
        out.append(AuditRecord(seq, at, who, what, about, parsed, prev, digest, signature))
    return [r for r in out if (not action or r.action == action) and (not subject or r.subject == subject)
            and (not actor or r.actor == actor)]
