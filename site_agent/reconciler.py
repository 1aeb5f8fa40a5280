"""One site's reconcile pass: observe Ray, plan (`site_agent.plan`, pure), apply.

Each pass starts desired attempts it lacks (unless the site vetoes them), stops federation jobs no
longer desired, and reports every federation attempt Ray holds, with new log bytes. Passes are
idempotent: Ray submission ids are derived from (job, attempt), so a repeated start is a no-op.
The effects (Ray calls, the attempts' files, the report) happen here and only here.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from federation.errors import InvalidSpec, RayError
from federation.service import wire
from federation.service.spec_wire import spec_from_pb
from federation.spec import SiteConfig
from federation.v1 import federation_pb2 as pb
from policies import LOGS
from site_agent.files import AttemptFiles, Fetch
from site_agent.inventory import SiteGpus
from site_agent.isolation import DatasetGrants
from site_agent.launch import Launcher, Submitted
from site_agent.plan import (
    Action,
    Records,
    Settle,
    SiteWord,
    Start,
    Stop,
    Wanted,
    keep_folder,
    newest,
    ours,
    plan,
    plan_fence,
    plan_report,
    starting,
)
from site_agent.ray_driver import RayDriver, RayJob

log = logging.getLogger("site_agent")

MAX_LOG_CHUNK = 1 << 20


@dataclass
class Reconciler:
    """One site's reconcile pass, separate from the wire so it can be driven directly."""

    config: SiteConfig
    driver: RayDriver
    desired: dict[str, pb.Assignment] = field(default_factory=dict)
    local: dict[str, SiteWord] = field(default_factory=dict)
    shipped: dict[str, int] = field(default_factory=dict)   # log bytes sent (or kept here), per submission id
    logs_done: set[str] = field(default_factory=set)        # ended, and every byte sent on this stream
    watched: set[str] = field(default_factory=set)         # attempts desired at some point in this process
    # What of each watched attempt may leave the site, as its assignment said; an attempt not here
    # (never assigned in this process) keeps its logs and messages at the site.
    crossing: dict[str, frozenset[str]] = field(default_factory=dict)
    synced: bool = False        # a desired set has arrived on the current stream
    starting: set[str] = field(default_factory=set)      # desired attempts Ray has not started yet
    submitted: set[str] = field(default_factory=set)     # desired attempts handed to Ray by this process
    ran: set[str] = field(default_factory=set)           # desired attempts seen past PENDING
    gpus: SiteGpus = field(default_factory=SiteGpus)     # this site's GPU inventory, for bindings
    epochs: dict[str, int] = field(default_factory=dict)   # per job, the newest attempt seen here
    fenced: str = ""            # why this site stopped its work and starts none (its lease expired)
    guards_fired: bool = False  # the agent before this one was silent past its attempts' guards' deadline
    fetch_input: Fetch | None = None   # (job, attempt, name) -> data, from the federation
    classified: dict[str, str] = field(default_factory=dict)   # dataset -> class, as the federation's policy says
    grants: DatasetGrants = field(default_factory=DatasetGrants)   # who may read which dataset now
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def classifications(self) -> dict[str, str]:
        """Each dataset's class: the federation's word once registered, before that the site config's."""
        return self.classified or {d.name: d.classification for d in self.config.spec.datasets}

    @property
    def files(self) -> AttemptFiles:
        return AttemptFiles.of(self.config)

    def set_desired(self, assignments: list[pb.Assignment]) -> None:
        """The whole desired set; an attempt listed by reference keeps the spec it came with before."""
        with self.lock:
            known = self.desired
            self.desired = {a.submission_id: a if a.HasField("spec") else known.get(a.submission_id, a)
                            for a in assignments}
            self.watched |= set(self.desired)
            self.crossing.update({a.submission_id: frozenset(a.may_cross_border) for a in assignments
                                  if a.HasField("spec")})
            self.synced = True
            self.fenced = ""   # the federation speaks: the lease was renewed when the site registered
            self.epochs = newest(self.epochs, [(a.job_id, a.attempt) for a in assignments])

    def fence(self, reason: str) -> int:
        """The lease ran out: the federation will soon re-place this site's work elsewhere, so stop
        it here first (a job must never run in two places) and start nothing until the federation
        speaks again. The stopped attempts are reported lost, which their retry policy covers."""
        with self.lock:
            if self.fenced:
                return 0
            self.fenced = reason
            try:
                jobs = ours(self.driver.jobs(), self.config.metadata.name)
            except RayError as e:
                log.warning("fencing: cannot list Ray jobs: %s", e.message)
                jobs = {}
            waiting = {sid for sid, a in self.desired.items() if waits_for_site(a)}
            actions = plan_fence(self.desired.keys(), jobs, self.local, reason, waiting)
            self._apply(actions)
            return sum(isinstance(a, Stop) for a in actions)

    def new_stream(self) -> None:
        """Until the federation speaks on a new stream, observe and report but change nothing:
        an empty desired set must not stop work that is running."""
        with self.lock:
            self.synced = False
            self.shipped.clear()
            self.logs_done.clear()

    def reconcile(self) -> pb.ConnectRequest | None:
        """One pass. Returns the full report, or None if Ray could not be observed."""
        with self.lock:
            return self._reconcile()

    def _reconcile(self) -> pb.ConnectRequest | None:
        self._step(None)   # new assignments start before Ray is listed
        observed = self._observe()
        if observed is None:
            return None
        acts, started = self._step(observed)
        self.grants.retain({sid for sid in self.desired if sid in started or (
            sid in observed and not observed[sid].terminal)})
        # What was just handed to Ray counts as pending even when the listing predates it.
        observed |= {sid: RayJob(sid, "PENDING") for sid in started if sid in self.submitted}
        if acts:
            self.starting = starting(self.desired.keys(), observed, self.local.keys())
        return self._report(observed)

    def _observe(self) -> dict[str, RayJob] | None:
        try:
            return ours(self.driver.jobs(), self.config.metadata.name)
        except RayError as e:
            log.warning("cannot observe Ray: %s", e.message)
            return None

    def _step(self, observed: dict[str, RayJob] | None) -> tuple[bool, list[str]]:
        """Plan on what is known now and apply it: whether it acted, and which attempts it started."""
        wanted = {sid: Wanted(a.job_id, a.attempt, a.HasField("spec")) for sid, a in self.desired.items()}
        records = Records(self.local, self.submitted, self.ran, self.epochs, self.synced, self.fenced)
        step = plan(wanted, observed, records)
        self.submitted, self.ran, self.epochs = set(step.submitted), set(step.ran), step.epochs
        self._apply(step.actions)
        return step.acts, [a.sid for a in step.actions if isinstance(a, Start)]

    def _apply(self, actions: Iterable[Action]) -> None:
        for action in actions:
            if isinstance(action, Start):
                self._start(action)
            elif isinstance(action, Stop):
                self._stop(action)
            elif isinstance(action, Settle):
                log.warning("%s: %s", action.sid, action.word.message)
                self.local[action.sid] = action.word

    def _start(self, action: Start) -> None:
        launcher = Launcher(self.config, self.driver, self.gpus, self.files, self.fetch_input, self.classifications,
                            self.grants)
        outcome = launcher.launch(self.desired[action.sid], ray_reachable=action.ray_reachable)
        if isinstance(outcome, Submitted):
            self.submitted.add(action.sid)
        elif isinstance(outcome, SiteWord):
            self.local[action.sid] = outcome

    def _stop(self, action: Stop) -> None:
        try:
            self.driver.stop(action.sid)
            log.info("stopped %s: %s", action.sid, action.why)
        except RayError as e:
            log.warning("stopping %s (%s): %s", action.sid, action.why, e.message)

    def any_started(self) -> bool:
        """A cheap check between full passes: has Ray started any attempt we are waiting on?"""
        handed = [sid for sid in self.starting if sid in self.submitted]   # the others Ray cannot have started
        try:
            return any(s not in (None, "PENDING") for s in self.driver.statuses(handed).values())
        except RayError:
            return True  # let the full pass find out

    def _report(self, observed: dict[str, RayJob]) -> pb.ConnectRequest:
        speaks = {sid for sid, what in self.crossing.items() if LOGS in what}
        report = plan_report(self.desired.keys(), observed, self.local, self.watched, self.logs_done,
                             speaks=speaks, site=self.config.metadata.name, guards_fired=self.guards_fired)
        files = self.files
        # Files leave only where the job's data lets results or model updates cross at all.
        outputs = [pb.Output(job_id=ref.job_id, attempt=ref.attempt, name=name, data=data)
                   for ref in report.outputs if self.crossing.get(ref.sid, frozenset()) & {"results", "model-updates"}
                   for name, data in files.outputs(ref.sid)]
        logs = []
        for ref, ended in report.logs:
            chunk = self._new_log_bytes(ref.sid, observed[ref.sid].log_size)
            if chunk is None:
                pass  # Ray did not answer; try again next pass
            elif chunk[1] and ref.sid in speaks:
                logs.append(pb.LogChunk(job_id=ref.job_id, attempt=ref.attempt, offset=chunk[0], data=chunk[1]))
            elif chunk[1]:
                self._keep_log(ref.sid, *chunk)
            elif ended:
                self.logs_done.add(ref.sid)  # Ray writes no more once a job ended
        statuses = [pb.AttemptStatus(job_id=s.job_id, attempt=s.attempt, state=wire.ATTEMPT_STATE_TO_PB[s.state],
                                     message=s.message) for s in report.statuses]
        # Forget local decisions the federation has taken in, and attempts Ray no longer holds.
        self.local = {sid: w for sid, w in self.local.items() if sid in self.desired}
        self._forget(observed)
        self.watched &= set(observed) | set(self.desired)
        self.crossing = {sid: what for sid, what in self.crossing.items() if sid in self.watched}
        files.forget(lambda sid: keep_folder(sid, self.desired.keys(), observed))
        return pb.ConnectRequest(site=self.config.metadata.name, statuses=statuses, logs=logs, outputs=outputs,
                                 complete=True)

    def _forget(self, observed: dict[str, RayJob]) -> None:
        """Ended attempts the federation has taken in (no longer desired) and whose logs are all read:
        the runner of the task path lets them go, so each listing holds only recent work."""
        done = [sid for sid, job in observed.items() if job.terminal and sid not in self.desired
                and (sid in self.logs_done or sid not in self.watched)]
        if done:
            try:
                self.driver.forget(done)
            except RayError as e:
                log.warning("letting %d ended attempts go: %s", len(done), e.message)

    def _keep_log(self, sid: str, offset: int, data: bytes) -> None:
        """The rules of the attempt's data keep its logs here: into the site's own folder, not the report."""
        try:
            self.files.keep_log(sid, offset, data)
        except (OSError, ValueError) as e:
            log.warning("keeping the logs of %s at the site: %s", sid, e)
            self.shipped[sid] = offset   # read them again next pass

    def _new_log_bytes(self, sid: str, size: int | None) -> tuple[int, bytes] | None:
        """(offset, bytes not yet sent), or None when Ray cannot be read. Not read at all when
        the listing gave the log's `size` and nothing is new."""
        start = self.shipped.get(sid, 0)
        if size is not None and size <= start:
            return start, b""
        try:
            data = self.driver.logs(sid, start)
        except RayError:
            return None
        chunk = data[:MAX_LOG_CHUNK]
        self.shipped[sid] = start + len(chunk)
        return start, chunk


def waits_for_site(assignment: pb.Assignment) -> bool:
    """The job says `on_site_loss: wait`: the federation never re-places it while this site is silent."""
    try:
        return spec_from_pb(assignment.spec).spec.on_site_loss == "wait"
    except InvalidSpec:  # a spec this agent cannot read is fenced like any other
        return False
