"""HTTPS with client certificates for /metrics (or plain HTTP on loopback) and the HTTP API, each
served by aiohttp from a thread of its own.

Who may scrape is decided per request from the client certificate, as for gRPC calls: the CA
vouches for the name and role, and `may_read` says whether that role may read these metrics."""
from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from federation.errors import ConfigError
from federation.identity import ANONYMOUS, Identity, of_certificate
from federation.spec.metrics import MetricsSettings

log = logging.getLogger("federation.observe")


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path
    client_ca: Path


def tls_context(tls: Tls, what: str = "spec.metrics.tls") -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert, tls.key)
        ctx.load_verify_locations(tls.client_ca)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"{what}: {e}") from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def peer_certificate(request: web.Request) -> bytes | None:
    """The DER of the client's verified certificate; None without one (or on plain HTTP)."""
    obj = request.transport.get_extra_info("ssl_object") if request.transport is not None else None
    return obj.getpeercert(binary_form=True) if isinstance(obj, ssl.SSLObject) else None


def caller(request: web.Request) -> Identity:
    """The scraper: its verified certificate's identity; on plain HTTP (loopback), anonymous."""
    if request.transport is None or request.transport.get_extra_info("ssl_object") is None:
        return ANONYMOUS
    der = peer_certificate(request)
    return of_certificate(ssl.DER_cert_to_PEM_cert(der).encode()) if der else Identity("unauthenticated")


class AppServer:
    """An aiohttp application served from a thread of its own (with `ssl`: HTTPS)."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None, what: str) -> None:
        self.host, self.wanted, self.ssl, self.what = host, port, ssl_context, what
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name=what, daemon=True)

    def start(self, app: web.Application) -> int:
        """Serve `app`; the port it listens on."""
        self._thread.start()
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._start(app), self._loop).result(30)
        except OSError as e:
            self.stop()
            raise ConfigError(f"spec.{self.what}.listen: cannot bind {self.host}:{self.wanted}: {e.strerror}") from None
        log.info("%s on %s://%s:%d", self.what, "https" if self.ssl else "http", self.host, self.port)
        return self.port

    async def _start(self, app: web.Application) -> int:
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.wanted, ssl_context=self.ssl)
        await site.start()
        server = site._server   # aiohttp keeps the bound sockets there; port 0 asks the OS for one
        assert server is not None and isinstance(server, asyncio.base_events.Server)
        return int(server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread.is_alive():
            self._thread.join(5)


class MetricsServer:
    def __init__(self, settings: MetricsSettings, registry: CollectorRegistry, tls: Tls | None,
                 may_read: Callable[[Identity], bool]) -> None:
        if tls is None and not settings.plain_allowed():
            raise ConfigError(f"spec.metrics.listen: {settings.listen}: plain HTTP is served only on loopback; "
                              "give spec.metrics.tls (or insecure: true, for development)")
        self.registry, self.may_read = registry, may_read
        self.server = AppServer(settings.host, settings.port, tls_context(tls) if tls is not None else None, "metrics")

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        return self.server.start(app)

    def stop(self) -> None:
        self.server.stop()

    async def _metrics(self, request: web.Request) -> web.Response:
        who = caller(request)
        if self.server.ssl is not None and not self.may_read(who):   # plain HTTP: whoever reaches it (loopback)
            log.warning("metrics: refused %s (%s)", who.name, who.role or "no role")
            return web.Response(status=403, text=f"{who.name} ({who.role or 'no role'}) may not read metrics\n")
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
