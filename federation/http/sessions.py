"""Console sessions: a user whose certificate called the API gets a one-time login link; the
browser trades it for a session cookie that stands for that certificate. Every page then calls the
API as that certificate, so its role, its tenants and revocation apply as they do over gRPC."""
from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from cryptography import x509

LOGIN_TTL_S = 300.0          # a link not used by then is refused
SESSION_TTL_S = 8 * 3600.0   # a working day
MAX_SESSIONS = 10_000        # the oldest go first
PER_NAME = 16                # sessions (and login links) of one name at once


@dataclass(frozen=True)
class Session:
    certificate: bytes   # DER of the certificate the link was asked with
    name: str
    expires_at: float


class Sessions:
    """In this process only: a restarted or another replica asks its users to log in again."""

    def __init__(self, clock=time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._logins: dict[str, Session] = {}
        self._sessions: dict[str, Session] = {}

    def login_link(self, certificate: bytes, name: str) -> tuple[str, float]:
        token, expires = secrets.token_urlsafe(32), self.clock() + LOGIN_TTL_S
        with self._lock:
            _add(self._logins, token, Session(certificate, name, min(expires, _valid_until(certificate))))
        return token, expires

    def log_in(self, token: str) -> str | None:
        """The session id for a login token (used once), or None. A session ends with its certificate."""
        with self._lock:
            login = self._logins.pop(token, None)
            if login is None or login.expires_at < self.clock():
                return None
            sid = secrets.token_urlsafe(32)
            expires = min(self.clock() + SESSION_TTL_S, _valid_until(login.certificate))
            _add(self._sessions, sid, Session(login.certificate, login.name, expires))
            return sid

    def get(self, sid: str) -> Session | None:
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None and session.expires_at < self.clock():
                del self._sessions[sid]
                return None
            return session

    def log_out(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)



def _add(table: dict[str, Session], key: str, session: Session) -> None:
    """One more, past a name's PER_NAME its oldest going first, so nobody logs others out by logging in
    often; past MAX_SESSIONS, the oldest of all."""
    mine = [k for k, s in table.items() if s.name == session.name]
    for k in mine[:max(0, len(mine) - PER_NAME + 1)]:
        del table[k]
    table[key] = session
    while len(table) > MAX_SESSIONS:
        table.pop(next(iter(table)))


def _valid_until(der: bytes) -> float:
    return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
