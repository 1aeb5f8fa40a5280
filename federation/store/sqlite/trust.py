"""The audit chain, join tokens, the certificates seen, and the names revoked."""
from __future__ import annotations

import hmac
import json
import sqlite3
from collections.abc import Callable
from dataclasses import replace

from federation.audit import GENESIS, AuditRecord
from federation.errors import PermissionDenied
from federation.store.sqlite.database import Database


def insert_audit(db: sqlite3.Connection, record: AuditRecord,
                 seal: Callable[[AuditRecord], AuditRecord]) -> AuditRecord:
    """Append `record` after the last one, inside the caller's transaction."""
    last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    sealed = seal(replace(record, seq=last["seq"] + 1 if last else 1, prev=last["hash"] if last else GENESIS))
    db.execute("INSERT INTO audit (seq, at, actor, action, subject, detail, prev, hash, signature)"
               " VALUES (?,?,?,?,?,?,?,?,?)",
               (sealed.seq, sealed.at, sealed.actor, sealed.action, sealed.subject,
                json.dumps(sealed.detail, sort_keys=True), sealed.prev, sealed.hash, sealed.signature))
    return sealed


class TrustTables(Database):
    def append_audit(self, record: AuditRecord, seal: Callable[[AuditRecord], AuditRecord]) -> AuditRecord:
        with self._tx() as db:
            return insert_audit(db, record, seal)

    def audit_records(self, after: int, limit: int) -> list[AuditRecord]:
        with self._reading(statements=1) as db:   # read by every scrape: never queued behind writers
            rows = db.execute("SELECT seq, at, actor, action, subject, detail, prev, hash, signature FROM audit"
                              " WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall()
        return [AuditRecord(r["seq"], r["at"], r["actor"], r["action"], r["subject"], _detail(r["detail"]), r["prev"],
                            r["hash"], r["signature"]) for r in rows]

    def audit_head(self) -> tuple[int, str]:
        with self._reading(statements=1) as db:
            rows = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchall()
        return (rows[0]["seq"], rows[0]["hash"]) if rows else (0, GENESIS)

    def add_join_token(self, token_id: str, secret_sha256: str, name: str, attributes: dict, now: float,
                       expires_at: float) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO join_tokens (id, secret_sha256, name, attributes, created_at, expires_at)"
                       " VALUES (?,?,?,?,?,?)",
                       (token_id, secret_sha256, name, json.dumps(attributes), now, expires_at))

    def use_join_token(self, token_id: str, secret_sha256: str, now: float) -> tuple[str, dict]:
        with self._tx() as db:
            row = db.execute("SELECT * FROM join_tokens WHERE id=?", (token_id,)).fetchone()
            if row is None or not hmac.compare_digest(row["secret_sha256"], secret_sha256):
                raise PermissionDenied("join token: not one this federation issued")
            if row["used_at"]:
                raise PermissionDenied(f"join token for {row['name']}: already used")
            if row["expires_at"] <= now:
                raise PermissionDenied(f"join token for {row['name']}: expired")
            db.execute("UPDATE join_tokens SET used_at=? WHERE id=?", (now, token_id))
            return row["name"], json.loads(row["attributes"])

    def remember_certificate(self, serial: str, name: str, now: float) -> None:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO certificates (serial, name, first_seen) VALUES (?,?,?)",
                       (serial, name, now))

    def revoke_certificates(self, name: str, now: float) -> list[str]:
        with self._tx() as db:
            serials = [r["serial"] for r in db.execute(
                "SELECT serial FROM certificates WHERE name=? AND revoked_at=0", (name,))]
            db.execute("UPDATE certificates SET revoked_at=? WHERE name=? AND revoked_at=0", (now, name))
            db.execute("INSERT INTO revoked_names (name, revoked_at) VALUES (?,?) ON CONFLICT(name)"
                       " DO UPDATE SET revoked_at=max(revoked_at, excluded.revoked_at)", (name, now))
            db.execute("UPDATE join_tokens SET expires_at=min(expires_at, ?) WHERE name=? AND used_at=0", (now, name))
            return serials

    def revoked_serials(self) -> set[str]:
        return {r["serial"] for r in self._read("SELECT serial FROM certificates WHERE revoked_at>0", ())}

    def revoked_names(self) -> dict[str, float]:
        return {r["name"]: r["revoked_at"] for r in self._read("SELECT name, revoked_at FROM revoked_names", ())}


def _detail(text: str) -> dict:
    try:
        return json.loads(text)
    except ValueError:
        return {"unreadable": text}   # verifying finds it: the hash will not match
