"""FederationService: what users call (SDK, fedctl)."""
from __future__ import annotations

import grpc

from federation.controlplane import ControlPlane
from federation.jobs import Job
from federation.service import wire
from federation.service.errors import translate, translate_stream
from federation.sites import Capacity, SiteRecord
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc

LOG_CHUNK = 64 * 1024
WAIT_S = 1.0


class FederationServicer(pb_grpc.FederationServiceServicer):
    def __init__(self, control: ControlPlane) -> None:
        self.control = control
        self.store = control.store

    @translate
    def SubmitJob(self, request: pb.SubmitJobRequest, context) -> pb.SubmitJobResponse:
        job = self.control.submit(wire.spec_from_pb(request.spec))
        return pb.SubmitJobResponse(job=wire.job_to_pb(job))

    @translate
    def GetJob(self, request: pb.GetJobRequest, context) -> pb.GetJobResponse:
        return pb.GetJobResponse(job=wire.job_to_pb(self.store.get_job(request.id)))

    @translate
    def ListJobs(self, request: pb.ListJobsRequest, context) -> pb.ListJobsResponse:
        states = [wire.JOB_STATE_FROM_PB[s] for s in request.states if s in wire.JOB_STATE_FROM_PB]
        limit = min(request.limit or 1000, 10_000)
        jobs = self.store.list_jobs(tenant=request.tenant or None, states=states, limit=limit)
        return pb.ListJobsResponse(jobs=[wire.job_to_pb(j) for j in jobs])

    @translate
    def CancelJob(self, request: pb.CancelJobRequest, context) -> pb.CancelJobResponse:
        return pb.CancelJobResponse(job=wire.job_to_pb(self.control.cancel(request.id)))

    @translate_stream
    def WatchJob(self, request: pb.WatchJobRequest, context):
        changes = self.control.changes
        last: Job | None = None
        while context.is_active():
            generation = changes.generation
            job = self.store.get_job(request.id)
            if last is None or (job.state, job.updated_at, len(job.attempts)) != (
                    last.state, last.updated_at, len(last.attempts)):
                yield pb.WatchJobResponse(job=wire.job_to_pb(job))
                last = job
            if job.state.terminal:
                return
            changes.wait(generation, WAIT_S)

    @translate_stream
    def StreamJobLogs(self, request: pb.StreamJobLogsRequest, context):
        changes = self.control.changes
        offset = max(0, request.offset)
        while context.is_active():
            generation = changes.generation
            job = self.store.get_job(request.id)
            data = self.store.read_log(request.id, offset)
            for i in range(0, len(data), LOG_CHUNK):
                chunk = data[i:i + LOG_CHUNK]
                offset += len(chunk)
                attempt = job.current_attempt.number if job.current_attempt else 0
                yield pb.StreamJobLogsResponse(data=chunk, offset=offset, attempt=attempt)
            if not request.follow or (job.state.terminal and not data):
                return
            changes.wait(generation, WAIT_S)

    @translate
    def ExplainJob(self, request: pb.ExplainJobRequest, context) -> pb.ExplainJobResponse:
        job = self.store.get_job(request.id)
        e = job.explanation
        if e is None:
            return pb.ExplainJobResponse(job=wire.job_to_pb(job), summary="not yet evaluated by the scheduler")
        return pb.ExplainJobResponse(
            job=wire.job_to_pb(job), summary=e.summary, evaluated_at=e.evaluated_at,
            verdicts=[pb.SiteVerdict(site=s, eligible=ok, reason_code=code, reason=detail)
                      for s, ok, code, detail in e.verdicts])

    @translate
    def ListSites(self, request: pb.ListSitesRequest, context) -> pb.ListSitesResponse:
        usage = self.control.usage()
        return pb.ListSitesResponse(sites=[self._site(s, usage) for s in self.store.list_sites()])

    @translate
    def GetSite(self, request: pb.GetSiteRequest, context) -> pb.GetSiteResponse:
        return pb.GetSiteResponse(site=self._site(self.store.get_site(request.name), self.control.usage()))

    @translate
    def SetSiteState(self, request: pb.SetSiteStateRequest, context) -> pb.SetSiteStateResponse:
        state = wire.SITE_STATE_FROM_PB.get(request.state)
        if state is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "state: must be READY, CORDONED or DRAINING")
        site = self.control.set_site_state(request.name, state)
        return pb.SetSiteStateResponse(site=self._site(site, self.control.usage()))

    def _site(self, site: SiteRecord, usage: dict[str, tuple[Capacity, int]]) -> pb.Site:
        allocated, running = usage.get(site.name, (Capacity(), 0))
        connected = site.connected(self.control.clock(), self.control.site_timeout_s)
        return wire.site_to_pb(site, connected=connected, allocated=allocated, running=running)
