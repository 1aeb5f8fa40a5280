"""The HTTP/JSON API over HTTPS with client certificates: each route calls the gRPC servicer's own
method with the caller's certificate, so who may do what, and every refusal, is the gRPC API's."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, cast

import grpc
from aiohttp import web
from pydantic import TypeAdapter

from federation.errors import ErrorCode, FederationError
from federation.http.console import Console
from federation.http.context import HTTP_STATUS, Aborted, HttpContext
from federation.http.openapi import document
from federation.http.routes import ROUTES, Params, Route
from federation.http.sessions import Sessions
from federation.observe.serve import peer_certificate
from federation.service.errors import denied
from federation.service.users import FederationServicer

MAX_BODY = 4 << 20          # a job spec, as gRPC's largest message
MAX_LOG_ANSWER = 1 << 20    # of a log, an answer; the rest from the offset it gives
TEXT_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'"}


def error(code: ErrorCode, message: str) -> web.Response:
    return web.json_response({"code": code.value, "message": message}, status=HTTP_STATUS[code])


def guarded(servicer: FederationServicer, context: HttpContext, method: str, fn: Callable[[], web.Response]
            ) -> web.Response:
    """A call made outside `translate`: its refusals are audited and answered as `translate`'s are."""
    try:
        return fn()
    except FederationError as e:
        denied(servicer, cast(grpc.ServicerContext, context), method, e)
        return error(e.code, e.message)


class Gateway:
    def __init__(self, servicer: FederationServicer, leading: Callable[[], bool] = lambda: True,
                 refusal: Callable[[], str] = lambda: "", threads: int = 16) -> None:
        self.servicer, self.leading, self.refusal = servicer, leading, refusal
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="http")
        self.openapi = document()
        self.sessions = Sessions()

    @web.middleware
    async def _admit(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        """Before anything is read: only the leading replica serves (as gRPC's Gate), an API call
        needs a certificate, and a POST is JSON (a browser's cross-site form cannot send it)."""
        if request.path == "/v1/openapi.json":
            return await handler(request)
        if not self.leading():
            return error(ErrorCode.UNAVAILABLE, await _run(self.pool, self.refusal))
        if request.path.startswith("/v1/"):
            if peer_certificate(request) is None:
                return error(ErrorCode.PERMISSION_DENIED, "no client certificate: the API takes one from the "
                                                          "federation's CA")
            if request.method == "POST" and request.content_type != "application/json":
                return error(ErrorCode.INVALID_SPEC,
                             f"a POST carries application/json, not {request.content_type[:60]}")
        return await handler(request)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._admit])
        for route in ROUTES:
            app.router.add_route(route.method, route.path, self._handler(route))
        app.router.add_get("/v1/jobs/{id}/logs", self._logs)
        app.router.add_post("/v1/console/sessions", self._console_session)
        app.router.add_get("/v1/openapi.json", self._openapi)
        Console(self.servicer, self.sessions, self.pool, peer_certificate).routes(app)
        app.on_cleanup.append(self._close)
        return app

    async def _console_session(self, request: web.Request) -> web.Response:
        """A one-time link that logs a browser into the console as the calling certificate."""
        der = peer_certificate(request)
        context = HttpContext(der)

        def link() -> web.Response:
            who = self.servicer._caller(cast(grpc.ServicerContext, context))
            assert der is not None   # a caller without a certificate is refused by _admit
            token, expires = self.sessions.login_link(der, who.name)
            return web.json_response({"url": f"/console/login?token={token}", "expires_at": expires}, status=201)
        return await _run(self.pool, lambda: guarded(self.servicer, context, "CreateConsoleSession", link))

    async def _openapi(self, _: web.Request) -> web.Response:
        return web.json_response(self.openapi)

    async def _close(self, _: web.Application) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _handler(self, route: Route):
        adapter = TypeAdapter(route.returns)

        async def handle(request: web.Request) -> web.Response:
            params = Params(dict(request.match_info), request.query, await request.read() if route.body else b"")
            context = HttpContext(peer_certificate(request))
            return await _run(self.pool, lambda: self._call(route, params, context, adapter))
        return handle

    def _call(self, route: Route, params: Params, context: HttpContext, adapter: TypeAdapter) -> web.Response:
        try:
            message = route.build(params)
            answer = route.answer(getattr(self.servicer, route.rpc)(message, context))
        except FederationError as e:   # a query that cannot be read, before the call
            return error(e.code, e.message)
        except Aborted as e:
            return error(e.code or _code_of(e.status), e.details)
        return web.json_response(adapter.dump_python(answer, mode="json"),
                                 status=201 if route.method == "POST" and route.rpc == "SubmitJob" else 200)

    async def _logs(self, request: web.Request) -> web.Response:
        """The job's log from `offset` (bytes), as text; 409 with where they are when its site keeps them."""
        context = HttpContext(peer_certificate(request))
        job_id = request.match_info["id"]

        def read() -> web.Response:
            try:
                offset = max(0, int(request.query.get("offset", "0") or 0))
            except ValueError:
                return error(ErrorCode.INVALID_SPEC, "query offset: not a whole number of bytes")
            who = self.servicer._watcher(cast(grpc.ServicerContext, context), job_id, "StreamJobLogs")
            _, kept, data = self.servicer._logs_after(who, job_id, offset)
            if kept:
                return error(ErrorCode.INVALID_TRANSITION, kept)
            data = data[:MAX_LOG_ANSWER]   # the rest from X-Log-Offset
            return web.Response(body=data, content_type="text/plain", charset="utf-8",
                                headers={"X-Log-Offset": str(offset + len(data)), **TEXT_HEADERS})
        return await _run(self.pool, lambda: guarded(self.servicer, context, "StreamJobLogs", read))


T = TypeVar("T")


async def _run(pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(pool, fn)


def _code_of(status: grpc.StatusCode) -> ErrorCode:
    return ErrorCode.INTERNAL if status is not grpc.StatusCode.PERMISSION_DENIED else ErrorCode.PERMISSION_DENIED

