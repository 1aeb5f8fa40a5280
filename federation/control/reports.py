"""What sites report about their attempts: states, log bytes and output files, applied with the
checks that keep a site to its own work."""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from federation.control.border import Border
from federation.control.core import Core
from federation.control.snapshot import catalog
from federation.errors import InvalidSpec, NotFound
from federation.jobs import Attempt, AttemptState, Job, JobState, asked_stop_ends

log = logging.getLogger("federation.control")

OUTPUT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_ARTIFACT_BYTES = 4 << 20
MAX_OUTPUTS = 16

Live = dict[tuple[str, int], tuple[Attempt, Job]]


@dataclass(frozen=True)
class AttemptReport:
    job_id: str
    number: int
    state: AttemptState
    message: str = ""


@dataclass(frozen=True)
class LogChunk:
    job_id: str
    number: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class Output:
    job_id: str
    number: int
    name: str
    data: bytes


def vanished(attempt: Attempt, job: Job) -> tuple[AttemptState, str] | None:
    """How an attempt the site holds but did not list in a complete report ends, if it does."""
    if job.state is JobState.CANCELLED:
        return AttemptState.STOPPED, "cancelled before it started"
    if attempt.stop_requested_at:
        return asked_stop_ends(attempt), f"{attempt.stop_reason} (before it started)"
    if attempt.state is AttemptState.RUNNING:
        return AttemptState.LOST, "vanished from the site's Ray cluster (restarted?)"
    return None  # assigned and not yet submitted: the agent will start it


MAX_STALE = 10_000   # stale (job, attempt) reports remembered, so each is refused and logged once


class Reports:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._stale: set[tuple[str, int]] = set()
        self._dropped: set[tuple[str, int]] = set()         # attempts whose logs were refused, warned once

    def apply(self, site: str, reports: Iterable[AttemptReport], logs: Iterable[LogChunk],
              complete: bool, outputs: Iterable[Output] = ()) -> None:
        """Apply what an agent saw: log bytes and output files first, so a job is never seen ended
        before its last lines and its outputs. With `complete`, `reports` is every attempt its Ray
        cluster holds."""
        now = self.core.clock()
        reports, logs, outputs = list(reports), list(logs), list(outputs)
        concerned = None if complete else ({r.job_id for r in reports} | {c.job_id for c in logs}
                                           | {o.job_id for o in outputs})
        live = {(a.job_id, a.number): (a, j) for a, j in self.core.store.live_attempts(site, concerned)}
        self._take_outputs(site, outputs, live, now)
        changed = self._take_logs(site, logs, live)
        changed |= self._take_states(site, reports, live, now)
        if complete:
            changed |= self._end_vanished(live, {(r.job_id, r.number) for r in reports}, now)
        if changed:
            self.core.changes.bump()

    def _take_outputs(self, site: str, outputs: list[Output], live: Live, now: float) -> None:
        store = self.core.store
        for out in outputs:
            if (out.job_id, out.number) not in live:
                continue   # only from the site running the attempt, while it runs
            if not OUTPUT_NAME_RE.match(out.name) or len(out.data) > MAX_ARTIFACT_BYTES:
                raise InvalidSpec(f"outputs: {out.job_id}/{out.number} {out.name[:64]!r}: a name of letters, digits"
                                  f" and . _ - and at most {MAX_ARTIFACT_BYTES >> 20} MiB")
            job = live[(out.job_id, out.number)][1]
            if blocked := self._output_blocked(job):
                # Counted with its like: a site may send any number of names.
                self.core.refusals.refuse(site, "output.refused", out.job_id, "output of data that may not leave",
                                          attempt=out.number, name=out.name, reason=blocked)
                continue
            stored = store.artifact_refs([out.job_id], out.number).get(out.job_id, [])
            if len(stored) >= MAX_OUTPUTS and out.name not in {name for name, _, _ in stored}:
                raise InvalidSpec(f"outputs: {out.job_id}/{out.number}: at most {MAX_OUTPUTS} files an attempt")
            store.put_artifact(out.job_id, out.number, out.name, out.data, now)

    def _take_logs(self, site: str, logs: list[LogChunk], live: Live) -> bool:
        changed = False
        border: Border | None = None
        kept: dict[str, str] = {}
        for chunk in logs:
            key = (chunk.job_id, chunk.number)
            job = live[key][1] if key in live else self._ran_at(site, *key)
            if job is None:
                continue
            if job.id not in kept:
                border = border or Border(self.core)
                kept[job.id] = border.logs_kept(job)
            if kept[job.id]:
                # The site should have kept them: its agent is modified, or older than this rule.
                if key not in self._dropped:
                    self._dropped.add(key)
                    log.warning("%s sent logs of %s that its data's rules keep at the site; dropped", site, job.id)
                self.core.refusals.refuse(site, "logs.refused", job.id, "logs kept at site", attempt=chunk.number,
                                          reason=kept[job.id])
                continue
            self.core.store.append_log(chunk.job_id, chunk.number, chunk.offset, chunk.data)
            changed = True
        return changed

    def _take_states(self, site: str, reports: list[AttemptReport], live: Live, now: float) -> bool:
        changed = False
        for r in reports:
            if (r.job_id, r.number) not in live:
                if r.state.live:
                    self._refuse_stale(site, r)
                continue  # an attempt that ended here already, or one this site does not hold
            changed |= self.core.applied(self.core.store.apply_attempt_status(r.job_id, r.number, r.state, r.message,
                                                                             now), r.number)
        return changed

    def _end_vanished(self, live: Live, seen: set[tuple[str, int]], now: float) -> bool:
        changed = False
        for key, (attempt, job) in live.items():
            ending = None if key in seen else vanished(attempt, job)
            if ending is not None:
                state, message = ending
                changed |= self.core.applied(self.core.store.apply_attempt_status(job.id, attempt.number, state,
                                                                                 message, now), attempt.number)
        return changed

    def _refuse_stale(self, site: str, r: AttemptReport) -> None:
        """An attempt the site runs that the federation no longer assigns to it (its lease expired
        and the job was re-placed, or it ended here): its epoch is stale. Its reports change
        nothing, and the agent stops it because the desired set no longer holds it."""
        if (r.job_id, r.number) in self._stale:
            return
        if len(self._stale) >= MAX_STALE:
            self._stale.clear()   # a site may name any job: forget rather than grow
        self._stale.add((r.job_id, r.number))
        log.warning("%s reports attempt %d of %s as %s: a stale epoch, refused", site, r.number, r.job_id,
                    r.state.value)
        self.core.refusals.refuse(site, "attempt.stale", r.job_id, "stale epoch", attempt=r.number, site=site,
                                  state=r.state.value)

    def _ran_at(self, site: str, job_id: str, number: int) -> Job | None:
        """Logs may arrive after an attempt ended; accept them only from the site that ran it."""
        try:
            job = self.core.store.get_job(job_id)
        except NotFound:
            return None
        return job if any(a.number == number and a.site == site for a in job.attempts) else None

    def _output_blocked(self, job: Job) -> str:
        """Why the outputs of `job` may not leave its site, or '': none of its data's rules lets
        anything cross (may_cross_border: [nothing], or no rule)."""
        known = catalog(self.core.store.list_sites(), self.core.policy)
        for name in job.spec.spec.datasets:
            info = known.get(name)
            rule = self.core.rules.classifications.get(info.classification) if info else None
            if rule is None or not (rule.may_cross_border - {"nothing"}):
                return f"{name}: nothing of its data may leave the site"
        return ""
