"""The web console: read-only pages rendered on the server from the API's own calls.

A page is drawn for the certificate behind the request (the browser's own, or the one a session
stands for), through the gRPC servicer's methods: a submitter sees its tenants' work only, a
revoked name is refused, and every refusal is the API's. Pages are escaped by Jinja2, framed by
nobody, cached by nobody, and run no script."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import grpc
from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape

from federation import results
from federation.errors import FederationError, PermissionDenied
from federation.http import drawing
from federation.http.context import HTTP_STATUS, Aborted, HttpContext
from federation.http.sessions import SESSION_TTL_S, Sessions
from federation.identity import of_certificate
from federation.service.errors import denied
from federation.service.users import FederationServicer
from federation.v1 import federation_pb2 as pb

COOKIE = "fedctl_session"
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                                      "form-action 'self'; frame-ancestors 'none'",
           "X-Frame-Options": "DENY", "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
           "X-Content-Type-Options": "nosniff"}
LOG_TAIL = 64 << 10
STATES = ("pending", "placed", "running", "succeeded", "failed", "cancelled")
Page = Callable[[web.Request, HttpContext], tuple[str, dict[str, Any]]]


class Console:
    def __init__(self, servicer: FederationServicer, sessions: Sessions, pool: ThreadPoolExecutor,
                 certificate: Callable[[web.Request], bytes | None]) -> None:
        self.servicer, self.sessions, self.pool, self.certificate = servicer, sessions, pool, certificate
        self.env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                               autoescape=select_autoescape(default=True, default_for_string=True))
        self.env.filters["when"] = drawing.when
        self.env.filters["num"] = lambda v: f"{v:.4g}" if isinstance(v, (int, float)) else ""

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/console/login", self._login)
        app.router.add_post("/console/logout", self._logout)
        for path, page in (("/console/", self._sites), ("/console/sites", self._sites), ("/console/queue", self._queue),
                           ("/console/jobs", self._jobs), ("/console/jobs/{id}", self._job),
                           ("/console/trainings", self._trainings), ("/console/trainings/{id}", self._training),
                           ("/console/audit", self._audit)):
            app.router.add_get(path, self._handler(page))

    def _handler(self, page: Page) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return await self._page(request, page)
        return handle

    async def _login(self, request: web.Request) -> web.Response:
        sid = self.sessions.log_in(request.query.get("token", ""))
        if sid is None:
            return self._render("error.html", {"status": 403, "message": "this login link is unknown, used or "
                                               "expired: ask for a new one"}, 403)
        response = web.HTTPSeeOther("/console/sites")
        response.set_cookie(COOKIE, sid, max_age=int(SESSION_TTL_S), path="/console", secure=True, httponly=True,
                            samesite="Strict")
        raise response

    async def _logout(self, request: web.Request) -> web.Response:
        self.sessions.log_out(request.cookies.get(COOKIE, ""))
        response = web.HTTPSeeOther("/console/sites")
        response.del_cookie(COOKIE, path="/console")
        raise response

    async def _page(self, request: web.Request, page: Page) -> web.Response:
        der = self.certificate(request)
        if der is None:
            session = self.sessions.get(request.cookies.get(COOKIE, ""))
            der = session.certificate if session is not None else None
        if der is None:
            return self._render("error.html", {"status": 401, "message": "log in with a link from POST "
                                               "/v1/console/sessions (your certificate asks for it)"}, 401)
        context = HttpContext(der)
        try:
            template, data = await asyncio.get_running_loop().run_in_executor(self.pool, self._drawn, page, request,
                                                                              context)
        except Aborted as e:
            status = HTTP_STATUS[e.code] if e.code is not None else 500
            return self._render("error.html", {"status": status, "message": e.details}, status)
        except FederationError as e:
            return self._render("error.html", {"status": HTTP_STATUS[e.code], "message": e.message},
                                HTTP_STATUS[e.code])
        who = of_certificate(context.auth_context()["x509_pem_cert"][0])
        return self._render(template, {**data, "who": who, "path": request.path})

    def _render(self, template: str, data: dict[str, Any], status: int = 200) -> web.Response:
        return web.Response(text=self.env.get_template(template).render(**data), status=status,
                            content_type="text/html", charset="utf-8", headers=HEADERS)

    def _drawn(self, page: Page, request: web.Request, context: HttpContext) -> tuple[str, dict[str, Any]]:
        """A page's data; what it was refused outside the servicer's own methods is audited as they do."""
        try:
            return page(request, context)
        except FederationError as e:
            denied(self.servicer, cast(grpc.ServicerContext, context), f"console {request.path[:80]}", e)
            raise

    def _call(self, context: HttpContext, rpc: str, message: Any) -> Any:
        return getattr(self.servicer, rpc)(message, context)

    # ------------------------------------------------------------ pages (run in the pool)

    def _sites(self, request: web.Request, context: HttpContext) -> tuple[str, dict[str, Any]]:
        sites = self._call(context, "ListSites", pb.ListSitesRequest()).sites
        return "sites.html", {"sites": [(results.site_info(s), drawing.topology(s.inventory)) for s in sites]}

    def _queue(self, request: web.Request, context: HttpContext) -> tuple[str, dict[str, Any]]:
        r = self._call(context, "ListQueue", pb.ListQueueRequest(limit=500))
        return "queue.html", {"entries": [results.queue_entry(e) for e in r.entries],
                              "queues": [results.queue_info(q) for q in r.queues]}

    def _jobs(self, request: web.Request, context: HttpContext) -> tuple[str, dict[str, Any]]:
        state, tenant = request.query.get("state", ""), request.query.get("tenant", "")
        states = [getattr(pb, f"JOB_STATE_{state.upper()}")] if state in STATES else []
        r = self._call(context, "ListJobs", pb.ListJobsRequest(tenant=tenant, states=states, limit=500))
        return "jobs.html", {"jobs": [results.job_status(j) for j in r.jobs], "state": state, "tenant": tenant,
                             "states": STATES}

    def _job(self, request: web.Request, context: HttpContext) -> tuple[str, dict[str, Any]]:
        job_id = request.match_info["id"]
        explained = self._call(context, "ExplainJob", pb.ExplainJobRequest(id=job_id))
        who = self.servicer._watcher(cast(grpc.ServicerContext, context), job_id, "StreamJobLogs")
        _, kept, log = self.servicer._logs_after(who, job_id, 0)
        return "job.html", {"job": results.job_status(explained.job), "placement": results.placement(explained),
                            "kept": kept, "log": log[-LOG_TAIL:].decode("utf-8", "replace"),
                            "cut": len(log) > LOG_TAIL}

    def _trainings(self, request: web.Request, context: HttpContext) -> tuple[str, dict[str, Any]]:
        r = self._call(context, "ListTrainings", pb.ListTrainingsRequest())
        return "trainings.html", {"trainings": [results.training_status(t) for t in r.trainings]}

    def _training(self, request: web.Request, context: HttpContext) -> tuple[str, dict[str, Any]]:
        t = results.training_status(self._call(context, "GetTraining",
                                               pb.GetTrainingRequest(id=request.match_info["id"])).training)
        return "training.html", {"t": t, "chart": drawing.rounds_chart(t.history)}

    def _audit(self, request: web.Request, context: HttpContext) -> tuple[str, dict[str, Any]]:
        who = self.servicer._caller(cast(grpc.ServicerContext, context))
        if not who.admin:
            raise PermissionDenied(f"{who.name} ({who.role}) may not read the audit log")
        control = self.servicer.control
        seq, broken = control.audit_watch.state(control.store)
        head = control.store.audit_head()[0]
        records = control.store.audit_records(max(0, head - 200), 200)
        return "audit.html", {"records": list(reversed(records)), "verified": seq, "head": head, "broken": broken,
                              "signed": control.core.signer is not None}
