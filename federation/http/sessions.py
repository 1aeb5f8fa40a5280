"""Console sessions: a user whose certificate called the API gets a one-time login link; the
browser trades it for a session cookie that stands for that certificate. Every page then calls the
API as that certificate, so its role, its tenants and revocation apply as they do over gRPC."""
from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

LOGIN_TTL_S = 300.0          # a link not used by then is refused
SESSION_TTL_S = 8 * 3600.0   # a working day
MAX_SESSIONS = 10_000        # the oldest go first


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
            self._expire()
            self._logins[token] = Session(certificate, name, expires)
        return token, expires

    def log_in(self, token: str) -> str | None:
        """The session id for a login token (used once), or None."""
        with self._lock:
            login = self._logins.pop(token, None)
            if login is None or login.expires_at < self.clock():
                return None
            sid = secrets.token_urlsafe(32)
            self._sessions[sid] = Session(login.certificate, login.name, self.clock() + SESSION_TTL_S)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
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

    def _expire(self) -> None:
        now = self.clock()
        for table in (self._logins, self._sessions):
            for key in [k for k, s in table.items() if s.expires_at < now]:
                del table[key]
