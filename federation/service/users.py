"""FederationService: what users call (SDK, fedctl)."""
from __future__ import annotations

import asyncio
from dataclasses import asdict

import grpc
from pydantic import ValidationError

from federation import identity
from federation import privacy_budget as budget
from federation.changes import Changes
from federation.control import ControlPlane, SiteStatus
from federation.errors import InvalidSpec, NotFound, PermissionDenied, Unavailable
from federation.identity import Identity
from federation.jobs import Job
from federation.queues import GROUPS
from federation.service import batch, wire
from federation.service.errors import caller, translate, translate_stream
from federation.service.loop import Pool
from federation.service.spec_wire import spec_from_pb, training_spec_from_pb
from federation.service.streams import StreamSlots
from federation.spec.common import check_labels
from federation.spec.execution import execution_of
from federation.spec.site import Location, SiteMetadata
from federation.training import TrainingLoop
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc
from training.model import Training

LOG_CHUNK = 64 * 1024
WAIT_S = 1.0
GAP_S = 0.2   # a stream reads the store at most this often: a burst of changes is one read, not one each


async def _next_change(changes: Changes, seen: int) -> None:
    await changes.changed(seen, WAIT_S)
    await asyncio.sleep(GAP_S)


class FederationServicer(pb_grpc.FederationServiceServicer):
    def __init__(self, control: ControlPlane, pool: Pool, trainings: TrainingLoop | None = None) -> None:
        self.control = control
        self.pool = pool   # where the streams' reads run (the users' calls run there too)
        self.trainings = trainings or TrainingLoop(control)
        self.streams = StreamSlots.of(control.core.policy.spec.limits)

    def _caller(self, context: grpc.ServicerContext) -> Identity:
        who = self.control.trust.authenticate(identity.of_context(context))
        who.check_user()
        return who

    def _visible(self, context: grpc.ServicerContext, kind: str, thing_id: str, tenant: str,
                 method: str) -> Identity:
        """Another tenant's job or training is 'not found' to the caller, and the attempt is audited."""
        who = self._caller(context)
        if not who.sees_tenant(tenant):
            self.control.refuse(who.name, "call.denied", method, f"{method}: another tenant's {kind}",
                                **{kind: thing_id}, reason=f"{kind} of tenant {tenant}")
            raise NotFound(f"{kind} {thing_id} not found")
        return who

    def _job(self, context: grpc.ServicerContext, job_id: str, method: str) -> Job:
        job = self.control.views.job(job_id)
        self._visible(context, "job", job_id, job.tenant, method)
        return job

    def _watcher(self, context: grpc.ServicerContext, job_id: str, method: str) -> Identity:
        """The caller of a stream about a job it may see; the stream checks it again before each message."""
        return self._visible(context, "job", job_id, self.control.views.job(job_id).tenant, method)

    @translate
    def SubmitJob(self, request: pb.SubmitJobRequest, context: grpc.ServicerContext) -> pb.SubmitJobResponse:
        self.control.admission.rates.take(caller(context))
        spec = spec_from_pb(request.spec)
        self._caller(context).check_tenant(spec.metadata.tenant, "submit jobs")
        jobs = self.control.admission.submit(spec, caller(context), batch.request_id_of(request))
        return batch.submitted(jobs)

    @translate
    def SubmitJobs(self, request: pb.SubmitJobsRequest, context: grpc.ServicerContext) -> pb.SubmitJobsResponse:
        self.control.admission.rates.take(caller(context), max(1, len(request.items)))
        items = batch.decode(request)
        who = self._caller(context)
        for tenant in sorted(batch.tenants(items)):   # one item for a tenant not the caller's refuses the call
            who.check_tenant(tenant, "submit jobs")
        return batch.submit(self.control.admission, items, caller(context))

    @translate
    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.GetJobResponse:
        return pb.GetJobResponse(job=wire.job_to_pb(self._job(context, request.id, "GetJob")))

    @translate
    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        who = self._caller(context)
        states = [wire.JOB_STATE_FROM_PB[s] for s in request.states if s in wire.JOB_STATE_FROM_PB]
        limit = max(1, min(request.limit or 1000, 10_000))
        if request.tenant:
            who.check_tenant(request.tenant, "list jobs")
        tenants = [request.tenant] if request.tenant else None if who.every_tenant else who.tenants
        jobs = self.control.views.jobs(tenants, states, limit, wire.page_after(request.page_token),
                                       request.submitter or None)
        return pb.ListJobsResponse(jobs=[wire.job_to_pb(j, brief=True) for j in jobs],
                                   next_page_token=wire.page_token(jobs[-1]) if len(jobs) == limit else "")

    @translate
    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.CancelJobResponse:
        self._job(context, request.id, "CancelJob")
        return pb.CancelJobResponse(job=wire.job_to_pb(self.control.admission.cancel(request.id, caller(context))))

    @translate_stream
    async def WatchJob(self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext):
        who = await self.pool.run(self._watcher, context, request.id, "WatchJob")
        with self.streams.slot(who.name):
            changes = self.control.changes
            last: Job | None = None
            while True:
                generation = changes.generation
                job = await self.pool.run(self._still_watched, who, request.id)
                if last is None or (job.state, job.updated_at, len(job.attempts)) != (
                        last.state, last.updated_at, len(last.attempts)):
                    yield pb.WatchJobResponse(job=wire.job_to_pb(job))
                    last = job
                if job.state.terminal:
                    return
                await _next_change(changes, generation)

    def _still_watched(self, who: Identity, job_id: str) -> Job:
        self.control.trust.check(who)
        return self.control.views.job(job_id)

    @translate_stream
    async def StreamJobLogs(self, request: pb.StreamJobLogsRequest, context: grpc.aio.ServicerContext):
        who = await self.pool.run(self._watcher, context, request.id, "StreamJobLogs")
        with self.streams.slot(who.name):
            changes = self.control.changes
            offset = max(0, request.offset)
            while True:
                generation = changes.generation
                job, kept, data = await self.pool.run(self._logs_after, who, request.id, offset)
                if kept:
                    yield pb.StreamJobLogsResponse(kept_at_site=kept)
                    return
                attempt = job.current_attempt.number if job.current_attempt else 0
                for i in range(0, len(data), LOG_CHUNK):
                    chunk = data[i:i + LOG_CHUNK]
                    offset += len(chunk)
                    yield pb.StreamJobLogsResponse(data=chunk, offset=offset, attempt=attempt)
                if not request.follow or (job.state.terminal and not data):
                    return
                await _next_change(changes, generation)

    def _logs_after(self, who: Identity, job_id: str, offset: int) -> tuple[Job, str, bytes]:
        """The job, where its logs are kept if not here, and its log from `offset`."""
        job = self._still_watched(who, job_id)
        if kept := self.control.views.logs_kept(job):
            return job, kept, b""
        return job, "", self.control.views.log(job_id, offset)

    @translate
    def ExplainJob(self, request: pb.ExplainJobRequest, context: grpc.ServicerContext) -> pb.ExplainJobResponse:
        job = self._job(context, request.id, "ExplainJob")
        e, execution = job.explanation, str(execution_of(job.spec))
        if e is None:
            return pb.ExplainJobResponse(job=wire.job_to_pb(job), summary="not yet evaluated by the scheduler",
                                         execution=execution)
        return pb.ExplainJobResponse(
            job=wire.job_to_pb(job), summary=e.summary, evaluated_at=e.evaluated_at, execution=execution,
            verdicts=[pb.SiteVerdict(site=s, eligible=ok, reason_code=code, reason=detail)
                      for s, ok, code, detail in e.verdicts])

    @translate
    def ListQueue(self, request: pb.ListQueueRequest, context: grpc.ServicerContext) -> pb.ListQueueResponse:
        who = self._caller(context)
        entries, states = self.control.views.queue()
        limit = max(1, min(request.limit or 1000, 10_000))
        chosen = [e for e in entries if (not request.queue or e.job.queue == request.queue)
                  and (not request.tenant or e.job.tenant == request.tenant) and who.sees_tenant(e.job.tenant)][:limit]
        return pb.ListQueueResponse(
            entries=[pb.QueueEntry(position=k + 1, job=wire.job_to_pb(e.job), tier=e.tier, share=e.share,
                                   held=e.held_back, reserved_site=e.reserved.site if e.reserved else "",
                                   reserved_at=e.reserved.start if e.reserved else 0.0)
                     for k, e in enumerate(chosen)],
            queues=[pb.QueueStatus(name=q.queue.name, parent=q.queue.parent or "", deserved=q.queue.deserved,
                                   limit=q.queue.limit, over_quota_weight=q.queue.weight, running=q.running,
                                   history=q.history, tier=q.factors.tier, share=q.factors.ratio, pending=q.pending)
                    for q in states if not request.queue or q.queue.name == request.queue])

    @translate
    def GetUsage(self, request: pb.GetUsageRequest, context: grpc.ServicerContext) -> pb.GetUsageResponse:
        who = self._caller(context)
        by = tuple(request.group_by) or ("tenant",)
        for field in by:
            if field not in GROUPS:
                raise InvalidSpec(f"group_by: unknown field '{field}'; choose from {', '.join(GROUPS)}")
        if len(set(by)) != len(by):
            raise InvalidSpec("group_by: a field is given twice")
        until = request.until or self.control.clock()
        if request.since > until:
            raise InvalidSpec("since: after until")
        rows = self.control.views.usage_report(by, request.since, until, None if who.every_tenant else who.tenants)
        privacy = budget.usage(self.control.core.policy, self.control.store.trainings(),
                               None if who.every_tenant else who.tenants)
        return pb.GetUsageResponse(rows=[pb.UsageRow(**r) for r in rows], since=request.since, until=until,
                                   privacy=[pb.PrivacyUsage(**asdict(row)) for row in privacy])

    # ------------------------------------------------------------ federated training

    def _training(self, context: grpc.ServicerContext, training_id: str, method: str) -> Training:
        t = self.control.views.training(training_id)
        self._visible(context, "training", training_id, t.tenant, method)
        return t

    @translate
    def SubmitTraining(self, request: pb.SubmitTrainingRequest,
                       context: grpc.ServicerContext) -> pb.SubmitTrainingResponse:
        self.control.admission.rates.take(caller(context))
        spec = training_spec_from_pb(request.spec)
        self._caller(context).check_tenant(spec.metadata.tenant, "submit trainings")
        if self.control.admission.draining:
            raise Unavailable("the federation is draining: it takes no submissions now (retry later)")
        t = self.trainings.submit(spec, caller(context))
        return pb.SubmitTrainingResponse(training=wire.training_to_pb(t))

    @translate
    def GetTraining(self, request: pb.GetTrainingRequest, context: grpc.ServicerContext) -> pb.GetTrainingResponse:
        t = self._training(context, request.id, "GetTraining")
        return pb.GetTrainingResponse(training=wire.training_to_pb(t, self.control.views.rounds(t.id)))

    @translate
    def ListTrainings(self, request: pb.ListTrainingsRequest,
                      context: grpc.ServicerContext) -> pb.ListTrainingsResponse:
        who = self._caller(context)
        if request.tenant:
            who.check_tenant(request.tenant, "list trainings")
        found = self.control.views.trainings(request.tenant or None)
        return pb.ListTrainingsResponse(trainings=[wire.training_to_pb(t) for t in found if who.sees_tenant(t.tenant)])

    @translate
    def CancelTraining(self, request: pb.CancelTrainingRequest,
                       context: grpc.ServicerContext) -> pb.CancelTrainingResponse:
        self._training(context, request.id, "CancelTraining")
        t = self.trainings.cancel(request.id, caller(context))
        return pb.CancelTrainingResponse(training=wire.training_to_pb(t, self.control.views.rounds(t.id)))

    @translate
    def GetTrainingModel(self, request: pb.GetTrainingModelRequest,
                         context: grpc.ServicerContext) -> pb.GetTrainingModelResponse:
        self._training(context, request.id, "GetTrainingModel")
        model, completed = self.trainings.model(request.id)
        return pb.GetTrainingModelResponse(model=model, round=completed)

    @translate
    def DrainFederation(self, request: pb.DrainFederationRequest,
                        context: grpc.ServicerContext) -> pb.DrainFederationResponse:
        who = self._caller(context)
        if not who.admin:
            raise PermissionDenied(f"{who.name} ({who.role}) may not drain the federation")
        self.control.admission.drain(request.drain, who.name)
        pending, live = self.control.views.backlog()
        return pb.DrainFederationResponse(draining=self.control.admission.draining, pending=pending, live=live)

    @translate
    def RevokeCertificates(self, request: pb.RevokeCertificatesRequest,
                           context: grpc.ServicerContext) -> pb.RevokeCertificatesResponse:
        who = self._caller(context)
        if not who.admin:
            raise PermissionDenied(f"{who.name} ({who.role}) may not revoke certificates")
        if not request.name:
            raise InvalidSpec("name: which user or site")
        return pb.RevokeCertificatesResponse(revoked=self.control.trust.revoke(request.name, who.name))

    @translate
    def CreateJoinToken(self, request: pb.CreateJoinTokenRequest,
                        context: grpc.ServicerContext) -> pb.CreateJoinTokenResponse:
        who = self._caller(context)
        if not who.admin:
            raise PermissionDenied(f"{who.name} ({who.role}) may not create join tokens")
        try:
            SiteMetadata(name=request.name)
            location = Location(jurisdiction=request.location.jurisdiction, region=request.location.region)
            labels = check_labels(dict(request.labels))
        except (ValidationError, ValueError) as e:
            raise InvalidSpec(f"join token for {request.name!r}: {_first(e)}") from None
        if not 0 <= request.ttl_s <= 7 * 86400:
            raise InvalidSpec("ttl_s: between 0 (one hour) and a week")
        token, expires = self.control.trust.create_join_token(request.name, location.jurisdiction, location.region,
                                                              labels, request.ttl_s, who.name)
        return pb.CreateJoinTokenResponse(token=token, expires_at=expires)

    @translate
    def ListSites(self, request: pb.ListSitesRequest, context: grpc.ServicerContext) -> pb.ListSitesResponse:
        self._caller(context)
        return pb.ListSitesResponse(sites=[_site(s) for s in self.control.views.site_statuses()])

    @translate
    def GetSite(self, request: pb.GetSiteRequest, context: grpc.ServicerContext) -> pb.GetSiteResponse:
        self._caller(context)
        (status,) = self.control.views.site_statuses(request.name)
        return pb.GetSiteResponse(site=_site(status))

    @translate
    def SetSiteState(self, request: pb.SetSiteStateRequest, context: grpc.ServicerContext) -> pb.SetSiteStateResponse:
        self._caller(context).check_site(request.name, "change the state of")
        state = wire.SITE_STATE_FROM_PB.get(request.state)
        if state is None:
            raise InvalidSpec("state: must be READY, CORDONED or DRAINING")
        self.control.sites.set_state(request.name, state, caller(context), request.handover)
        (status,) = self.control.views.site_statuses(request.name)
        return pb.SetSiteStateResponse(site=_site(status))


def _site(s: SiteStatus) -> pb.Site:
    return wire.site_to_pb(s.record, connected=s.connected, allocated=s.allocated, running=s.running, lost=s.lost)


def _first(e: Exception) -> str:
    if isinstance(e, ValidationError):
        err = e.errors()[0]
        return f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
    return str(e)
