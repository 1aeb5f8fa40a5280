"""An append-only, hash-chained, signed record of every decision that matters.

Each record holds its sequence number, time, actor, action, subject and details, the hash
of the record before it, its own hash (SHA-256 over the previous hash and its canonical
JSON), and the federation's ECDSA signature of that hash. `verify` walks the chain and
names the first record that was edited, dropped, reordered or not signed by the key.

The chain alone cannot show that records were dropped from its end, that it was emptied, or
that whoever holds the signing key rewrote and re-signed all of it. So its head (seq, hash)
goes out with every heartbeat acknowledgement and each site agent keeps the latest in a file
(an `Anchor`); `check_anchor` then requires the log to hold that record with that hash. The
anchor together with a public key kept apart from the store and its signing key (the key's
path is `spec.audit.key`; by default beside the store) is what catches a re-signed log.
Refusals that anyone can provoke are counted, not logged one by one
(`federation.control.refusals`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from federation.errors import ConfigError

GENESIS = "0" * 64
HASH_RE = re.compile(r"^[0-9a-f]{64}$")


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
    """The federation's audit key: EC P-256, mode 0600, beside the store unless configured elsewhere."""

    MEMO = 100_000   # signatures remembered for a watch (32 bytes each); past that, a watch verifies them

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self.key = key
        self._made: set[bytes] | None = None

    def remember(self) -> None:
        """From now on, keep what this process signs, so that a watch over the log need not verify
        those signatures (`signed_here`): verifying one costs as much CPU as a submission's audit."""
        if self._made is None:
            self._made = set()

    def signed_here(self, record: AuditRecord) -> bool:
        """Whether this process signed `record`'s hash with `record`'s signature (so the signature is
        the key's); forgotten once asked."""
        if self._made is None:
            return False
        mark = _mark(record)
        if mark in self._made:
            self._made.discard(mark)
            return True
        return False

    @classmethod
    def beside(cls, store: Path) -> Signer:
        key_path(store).parent.mkdir(parents=True, exist_ok=True)
        return cls.at(key_path(store), public_path(store))

    @classmethod
    def at(cls, path: Path, *publics: Path) -> Signer:
        """The key at `path`, made there if absent (its folder must exist) with its public half
        written to each of `publics`. OSError or ValueError when it cannot be read or made."""
        if path.exists():
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{path}: the audit key is not an EC private key")
            return cls(loaded)
        key = ec.generate_private_key(ec.SECP256R1())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        for p in publics:
            p.write_bytes(public)
        return cls(key)

    def seal(self, record: AuditRecord) -> AuditRecord:
        digest = record.digest()
        signature = self.key.sign(bytes.fromhex(digest), ec.ECDSA(hashes.SHA256())).hex()
        sealed = replace(record, hash=digest, signature=signature)
        if self._made is not None and len(self._made) < self.MEMO:
            self._made.add(_mark(sealed))
        return sealed


def _mark(record: AuditRecord) -> bytes:
    return hashlib.sha256(f"{record.hash}:{record.signature}".encode()).digest()


def key_path(store: Path) -> Path:
    return Path(f"{store}.audit-key.pem")


def public_path(store: Path) -> Path:
    return Path(f"{store}.audit-pub.pem")


def load_public(path: Path) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"{path}: the audit public key is not an EC key")
    return key


def verify(records: Iterable[AuditRecord], public: ec.EllipticCurvePublicKey, after: int = 0,
           head: str = GENESIS, signed_here: Callable[[AuditRecord], bool] = lambda r: False
           ) -> tuple[int, str, str]:
    """(records checked, head hash, '' or what is wrong with the first bad record); the records
    follow record `after`, whose hash is `head` (by default, the log from its start). A record
    `signed_here` (by this process, with this signature) needs no signature check."""
    prev, expected, n = head, after + 1, 0
    for r in records:
        n += 1
        where = f"record {r.seq} ({r.action} {r.subject})"
        if r.seq != expected:
            return n, prev, f"{where}: expected record {expected} here; records were dropped or reordered"
        if r.prev != prev:
            return n, prev, f"{where}: does not follow record {expected - 1} (its previous hash differs)"
        if r.digest() != r.hash:
            return n, prev, f"{where}: its content does not match its hash (edited)"
        if not signed_here(r):
            try:
                public.verify(bytes.fromhex(r.signature), bytes.fromhex(r.hash), ec.ECDSA(hashes.SHA256()))
            except (InvalidSignature, ValueError):
                return n, prev, f"{where}: the signature is not the federation's"
        prev, expected = r.hash, expected + 1
    return n, prev, ""


@dataclass(frozen=True)
class Anchor:
    """A copy of the log's head kept where the federation cannot write: a site's agent keeps one."""
    seq: int
    hash: str
    at: float = 0.0        # when it was received
    source: str = ""       # the federation it came from

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "hash": self.hash, "at": self.at, "source": self.source},
                          sort_keys=True) + "\n"


def parse_anchor(text: str) -> Anchor:
    """ValueError unless `text` is an anchor file: JSON with a seq >= 1 and a 64-hex-digit hash."""
    try:
        data = json.loads(text)
        seq, digest = data["seq"], data["hash"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("not an audit anchor (JSON with seq and hash)") from None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 or not isinstance(digest, str) \
            or not HASH_RE.match(digest):
        raise ValueError("not an audit anchor (seq must be a positive integer, hash 64 hex digits)")
    return Anchor(seq, digest, float(data.get("at") or 0.0), str(data.get("source") or ""))


def load_anchor(path: Path) -> Anchor:
    try:
        return parse_anchor(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: {e.strerror if isinstance(e, OSError) else e}") from None


def check_anchor(records: Sequence[AuditRecord], anchor: Anchor, name: str = "the anchor") -> str:
    """'' when the log holds the anchored record with the anchored hash, else what is wrong."""
    if not records:
        return f"the log is empty, but {name} holds record {anchor.seq}: the log was emptied"
    last = records[-1].seq
    if last < anchor.seq:
        return (f"the log ends at record {last}, but {name} holds record {anchor.seq}: "
                "records were dropped from its end")
    found = next((r for r in records if r.seq == anchor.seq), None)
    if found is None:
        return f"the log has no record {anchor.seq}, which {name} holds: records were dropped"
    if found.hash != anchor.hash:
        return (f"record {anchor.seq} has hash {found.hash[:16]}…, but {name} holds {anchor.hash[:16]}…: "
                "the log was rewritten (and re-signed)")
    return ""


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
