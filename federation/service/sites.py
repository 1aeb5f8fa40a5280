"""SiteService: what site agents call."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator

import grpc
from pydantic import ValidationError

from federation import identity
from federation.control import AttemptReport, ControlPlane, LogChunk, Output
from federation.errors import InvalidSpec, PermissionDenied, Unavailable
from federation.identity import Identity
from federation.jobs import Attempt, Job
from federation.pki import Issued
from federation.service import wire
from federation.service.errors import caller, offload, translate, translate_stream
from federation.service.loop import Pool
from federation.service.spec_wire import spec_to_pb
from federation.spec.common import check_labels
from federation.spec.site import DatasetSpec, Location, SiteMetadata
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc

log = logging.getLogger("federation.sites")
RESEND_S = 5.0
FIRST_MESSAGE_S = 30.0   # a Connect stream that names no site by then is closed
MESSAGE_BUDGET = 2 << 20   # new specs per Connect message; the channel's cap is 8 MiB


def _a_site(context: grpc.aio.ServicerContext) -> None:
    """Only sites call SiteService (anyone on a plain-text development channel): checked on the
    event loop, from the certificate alone, before a call takes any of the sites' threads."""
    who = identity.of_context(context)
    if who is not identity.ANONYMOUS and who.role != "site":
        raise PermissionDenied(f"certificate for {who.name} ({who.role or 'no role'}) is not a site's")


class SiteServicer(pb_grpc.SiteServiceServicer):
    def __init__(self, control: ControlPlane, pool: Pool, heartbeat_interval_s: float = 2.0,
                 ca: Issued | None = None, cert_days: int = 30, replica: str = "federation",
                 leading: Callable[[], bool] = lambda: True) -> None:
        self.control = control
        self.pool = pool   # the sites' own: users' calls never hold up a heartbeat
        self._streams: dict[str, asyncio.Event] = {}   # per site: set to end its Connect stream
        self.replica = replica
        self.leading = leading   # a Connect stream ends when this replica stops leading
        self.heartbeat_interval_s = heartbeat_interval_s
        self.ca = ca
        self.cert_days = cert_days

    @offload(admit=_a_site)
    def RenewCertificate(self, request: pb.RenewCertificateRequest,
                         context: grpc.ServicerContext) -> pb.RenewCertificateResponse:
        who = self.control.trust.authenticate(identity.of_context(context))
        if who.role != "site" or not who.sites:
            raise PermissionDenied(f"{who.name} ({who.role or 'no role'}): only a site renews its certificate here")
        if len(request.csr_pem) > 16_384:
            raise InvalidSpec("csr_pem: too large")
        cert = self.control.trust.renew(who, request.csr_pem, self.ca, self.cert_days)
        return pb.RenewCertificateResponse(cert_pem=cert)

    @offload(admit=_a_site)
    def RegisterSite(self, request: pb.RegisterSiteRequest, context: grpc.ServicerContext) -> pb.RegisterSiteResponse:
        who = _authorize(self.control, context, request.name)
        _validate_registration(request)
        site = self.control.sites.register(who, wire.site_from_register(request), caller(context))
        log.info("site %s registered (%s, %s)", site.name, site.jurisdiction, site.region)
        return pb.RegisterSiteResponse(heartbeat_interval_s=self.heartbeat_interval_s,
                                       lease_s=self.control.core.site_timeout_s,
                                       datasets=[pb.Dataset(name=d.name, classification=d.classification)
                                                 for d in site.datasets])

    @offload(admit=_a_site)
    def Leader(self, request: pb.LeaderRequest, context: grpc.ServicerContext) -> pb.LeaderResponse:
        _authorize(self.control, context, request.site, remember=False)   # answered by every replica: writes nothing
        store = self.control.store
        lead = store.leadership()
        if lead is None:
            return pb.LeaderResponse(answered_by=self.replica)
        hears = self.control.core.hearing(store.newest_heartbeat(), self.control.clock())
        return pb.LeaderResponse(live=lead.live(store.clock()), address=lead.address, term=lead.term,
                                 answered_by=self.replica, hears_sites=hears)

    @offload(admit=_a_site)
    def GetInput(self, request: pb.GetInputRequest, context: grpc.ServicerContext) -> pb.GetInputResponse:
        _authorize(self.control, context, request.site)
        data, digest = self.control.sites.input_of(request.site, request.job_id, request.attempt, request.name)
        return pb.GetInputResponse(data=data, sha256=digest)

    @offload(admit=_a_site)
    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatResponse:
        _authorize(self.control, context, request.name)
        capacity = wire.capacity_from_pb(request.capacity) if request.HasField("capacity") else None
        inventory = wire.inventory_from_pb(request.inventory, "inventory") if request.HasField("inventory") else None
        site = self.control.sites.heartbeat(request.name, capacity, inventory, dict(request.nodes_up))
        seq, digest = self.control.store.audit_head()
        return pb.HeartbeatResponse(state=wire.SITE_STATE_TO_PB[site.state],
                                    audit_head=pb.AuditHead(seq=seq, hash=digest) if seq else None)

    @translate_stream
    async def Connect(self, request_iterator, context: grpc.aio.ServicerContext):
        _a_site(context)
        try:
            async with asyncio.timeout(FIRST_MESSAGE_S):
                first = await anext(aiter(request_iterator), None)
        except TimeoutError:
            raise InvalidSpec(f"Connect: no first message within {FIRST_MESSAGE_S:g}s") from None
        if first is None or not first.site:
            raise InvalidSpec("the first message on Connect must name the site")
        site = first.site
        who = await self.pool.run(self._open, context, site, first)
        with self._only_stream(site) as replaced:
            reader = asyncio.ensure_future(self._read(site, who, request_iterator))
            try:
                async for response in self._desired(site, who, reader, replaced):
                    yield response
                reader.result()   # the reader's error, if it ended on one
            finally:
                reader.cancel()
                if reader.done() and not reader.cancelled():
                    reader.exception()   # retrieved: the stream's own error, if any, was raised above

    def _open(self, context: grpc.ServicerContext, site: str, first: pb.ConnectRequest) -> Identity:
        who = _authorize(self.control, context, site)
        self.control.views.site(site)  # NotFound for a site that never registered
        self._apply(site, first)
        return who

    @contextlib.contextmanager
    def _only_stream(self, site: str) -> Iterator[asyncio.Event]:
        """One Connect stream per site: a newer one (an agent that reconnected before its old
        stream was seen to break) ends the one before, which would otherwise read and wake on the
        site's behalf until its connection timed out. Yields the event that says so."""
        replaced = asyncio.Event()
        before = self._streams.get(site)
        if before is not None:
            log.warning("site %s connected again: its earlier stream is closed", site)
            before.set()
        self._streams[site] = replaced
        try:
            yield replaced
        finally:
            if self._streams.get(site) is replaced:
                del self._streams[site]

    async def _desired(self, site: str, who: Identity, reader: asyncio.Future, replaced: asyncio.Event):
        """The site's desired set whenever it may have changed, and at least every RESEND_S, until
        the site stops reading or a newer stream replaces this one."""
        run = self.pool.run
        changes = self.control.changes
        sent: list[tuple[str, int]] | None = None
        sent_at = 0.0
        generation_sent = 0
        described: set[str] = set()   # attempts whose spec this stream has carried
        ends = (reader, asyncio.ensure_future(replaced.wait()))
        try:
            while not reader.done():
                if replaced.is_set():
                    raise Unavailable(f"a newer Connect stream for {site} replaced this one")
                await run(_still_trusted, self.control, who)
                if not self.leading():
                    raise Unavailable("this replica no longer leads the federation: connect again")
                generation = changes.assignments(site)
                desired = await run(self.control.sites.desired, site)
                keys = [(job.id, attempt.number) for attempt, job in desired]
                now = time.monotonic()
                undescribed = [(a, job) for a, job in desired if a.submission_id not in described]
                if keys != sent or undescribed or now - sent_at >= RESEND_S:
                    generation_sent += 1
                    assignments = await run(self._assignments, desired, undescribed, described)
                    yield pb.ConnectResponse(generation=generation_sent, assignments=assignments)
                    sent, sent_at = keys, now
                    if any(a.submission_id not in described for a, _ in undescribed):
                        continue   # specs left for the next message: send it at once
                waiting = asyncio.ensure_future(changes.assignments_changed(site, generation, RESEND_S))
                try:
                    await asyncio.wait((waiting, *ends), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiting.cancel()
        finally:
            ends[1].cancel()

    def _assignments(self, desired: list[tuple[Attempt, Job]], undescribed: list[tuple[Attempt, Job]],
                     described: set[str]) -> list[pb.Assignment]:
        """The whole desired set, each attempt by reference once its spec has been sent on this
        stream; new specs up to MESSAGE_BUDGET bytes a message, the rest in the next ones. So the
        set is never larger than its references, and no job's size holds up another's."""
        inputs = self.control.views.inputs(job.id for _, job in undescribed)
        crossing = self.control.views.crossing(job for _, job in undescribed)
        full: dict[str, pb.Assignment] = {}
        budget = MESSAGE_BUDGET
        for a, job in undescribed:
            message = pb.Assignment(job_id=job.id, attempt=a.number, submission_id=a.submission_id,
                                    spec=spec_to_pb(job.spec), binding=wire.binding_to_pb(a.binding),
                                    inputs=[pb.ArtifactRef(name=n, sha256=h, size=size)
                                            for n, h, size in inputs.get(job.id, ())],
                                    may_cross_border=sorted(crossing[job.id]), node_type=a.node_type)
            size = message.ByteSize()
            if size > budget and full:
                break
            budget -= size
            full[a.submission_id] = message
        described.intersection_update(a.submission_id for a, _ in desired)
        described.update(full)
        return [full.get(a.submission_id) or pb.Assignment(job_id=job.id, attempt=a.number,
                                                           submission_id=a.submission_id)
                for a, job in desired]

    async def _read(self, site: str, who: Identity, request_iterator) -> None:
        async for message in request_iterator:
            await self.pool.run(self._take, site, who, message)

    def _take(self, site: str, who: Identity, message: pb.ConnectRequest) -> None:
        _still_trusted(self.control, who)  # nothing more from a site revoked while connected
        if message.site and message.site != site:
            raise InvalidSpec(f"stream opened for {site} cannot report for {message.site}")
        self._apply(site, message)

    def _apply(self, site: str, message: pb.ConnectRequest) -> None:
        reports = []
        for s in message.statuses:
            state = wire.ATTEMPT_STATE_FROM_PB.get(s.state)
            if state is None:
                raise InvalidSpec(f"statuses: attempt {s.job_id}/{s.attempt} has no state")
            reports.append(AttemptReport(s.job_id, s.attempt, state, s.message))
        logs = [LogChunk(c.job_id, c.attempt, c.offset, c.data) for c in message.logs]
        outputs = [Output(o.job_id, o.attempt, o.name, o.data) for o in message.outputs]
        self.control.reports.apply(site, reports, logs, complete=message.complete, outputs=outputs)


def _still_trusted(control: ControlPlane, who: Identity) -> None:
    if control.trust.revoked(who):
        raise PermissionDenied(f"the certificate of {who.name} was revoked")


def _authorize(control: ControlPlane, context: grpc.ServicerContext, site: str, remember: bool = True) -> Identity:
    """With client certificates, only a site's own certificate, not revoked, may speak for it."""
    who = identity.of_context(context)
    if remember:
        control.trust.authenticate(who)
    else:
        control.trust.check(who)
    if who is identity.ANONYMOUS:
        return who  # plain text, development only
    if who.role != "site" or site not in who.sites:
        raise PermissionDenied(f"certificate for {who.name} ({who.role or 'no role'}) cannot act as site {site!r}")
    return who


MAX_LABELS, MAX_DATASETS = 64, 1024


def _validate_registration(request: pb.RegisterSiteRequest) -> None:
    if len(request.labels) > MAX_LABELS or len(request.datasets) > MAX_DATASETS:
        raise InvalidSpec(f"registration of {request.name[:64]!r}: at most {MAX_LABELS} labels and "
                          f"{MAX_DATASETS} datasets")
    try:
        SiteMetadata(name=request.name)
        Location(jurisdiction=request.location.jurisdiction, region=request.location.region)
        for d in request.datasets:
            DatasetSpec(name=d.name, classification=d.classification, path=d.path, size=d.size_bytes)
    except ValidationError as e:
        err = e.errors()[0]
        raise InvalidSpec(f"registration of {request.name!r}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    try:
        check_labels(dict(request.labels))
    except ValueError as e:
        raise InvalidSpec(f"registration of {request.name!r}: labels: {e}") from None



class EnrollmentServicer(pb_grpc.EnrollmentServiceServicer):
    """Sites without a certificate: a one-time join token buys one, naming the token's site."""

    def __init__(self, control: ControlPlane, ca: Issued, days: int) -> None:
        self.control = control
        self.ca = ca
        self.days = days

    @translate
    def EnrollSite(self, request: pb.EnrollSiteRequest, context: grpc.ServicerContext) -> pb.EnrollSiteResponse:
        if len(request.csr_pem) > 16_384 or len(request.token) > 256:
            raise InvalidSpec("token or csr_pem: too large")
        cert = self.control.trust.enroll(request.token, request.csr_pem, self.ca, self.days)
        return pb.EnrollSiteResponse(cert_pem=cert, ca_pem=self.ca.cert.read_bytes())
