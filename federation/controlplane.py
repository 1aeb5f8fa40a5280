"""What the federation does, independent of the wire.

Servicers translate requests into these calls; the scheduler loop reads the
snapshot from here and writes decisions back through it. All durable state is in
the store; this object holds only the policy and the change signal.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import logging
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import policies
import policies.holds
import policies.placement
from federation import queues
from federation.audit import AuditRecord, Signer
from federation.changes import Changes
from federation.control.rules import rules_from_policy
from federation.errors import (
    Conflict,
    FederationError,
    InvalidSpec,
    NotFound,
    PermissionDenied,
    Unavailable,
    UnknownDataset,
    Unsatisfiable,
)
from federation.gpus import request_of
from federation.identity import Identity, binding, scopes
from federation.jobs import (
    Attempt,
    AttemptState,
    Explanation,
    Job,
    JobState,
    new_job_id,
)
from federation.pki import Issued, sign_request
from federation.sites import Capacity, SiteRecord, SiteState
from federation.spec import JobSpec, PolicyConfig, gang_parts
from federation.spec.array import parse_array
from federation.store import Store, SubmitRequest
from policies import fairshare, preemption
from policies.holds import Hold
from policies.topology import Inventory, synthesized

PRIORITY = {"low": -1, "normal": 0, "high": 1}
log = logging.getLogger("federation.control")
SLUGS = {int(r): r.slug for r in policies.Reason}


@dataclass(frozen=True)
class QueuedJob:
    job: Job
    tier: int            # its queue's fair-share tier when its turn comes; -1: held back
    share: float
    held: str            # what holds it back beyond capacity, if anything


@dataclass(frozen=True)
class QueueState:
    queue: fairshare.Queue
    factors: fairshare.Factors
    running: dict
    history: dict
    pending: int


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


OUTPUT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_ARTIFACT_BYTES = 4 << 20
MAX_OUTPUTS = 16


@dataclass(frozen=True)
class AttemptReport:
    job_id: str
    number: int
    state: AttemptState
    message: str = ""


def _waiting(job: Job) -> "policies.holds.Waiting":
    body = job.spec.spec
    return policies.holds.Waiting(
        id=job.id, tenant=job.tenant, name=job.spec.metadata.name, submitted_at=job.created_at,
        after=tuple(body.dependencies.all()), singleton=body.singleton, array_id=job.array_id,
        array_index=job.array_index, throttle=parse_array(body.array).throttle if job.array_id and body.array else None)


def _element(spec: JobSpec, array_id: str, index: int, count: int) -> JobSpec:
    """An array element's spec: the array's, with its index in the environment."""
    return _with_env(spec, {"FEDCTL_ARRAY_ID": array_id, "FEDCTL_ARRAY_INDEX": str(index),
                            "FEDCTL_ARRAY_COUNT": str(count)})


def _with_env(spec: JobSpec, extra: dict[str, str]) -> JobSpec:
    env = dict(spec.spec.runtime_env)
    env["env_vars"] = {**env.get("env_vars", {}), **extra}
    return spec.model_copy(update={"spec": spec.spec.model_copy(update={"runtime_env": env})})


def gpu_inventory(site: SiteRecord) -> Inventory:
    """The site's GPU topology; a site that published only a total gets one node without NVLink."""
    if site.inventory.nodes:
        return site.inventory
    return synthesized(site.name, site.capacity.gpus)


class ControlPlane:
    def __init__(self, store: Store, policy: PolicyConfig, *, site_timeout_s: float = 30.0,
                 max_placements: int | None = None, signer: Signer | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.signer = signer
        self._seen: set[str] = set()
        self._revoked = store.revoked_serials()
        self.max_placements = max_placements
        self.policy = policy
        self.tree = queues.queue_tree(policy)
        self._queue = {q.name: q for q in self.tree}
        self.rules = rules_from_policy(policy)
        self.site_timeout_s = site_timeout_s
        # Leases count from the later of a site's last heartbeat and this process's start: while
        # the federation was down no site could renew, and none is lost for that.
        self.clock = clock
        self.started_at = clock()
        self._stale: set[tuple[str, int]] = set()
        self._refused: set[tuple[str, int, str]] = set()   # outputs refused and audited once
        self.changes = Changes()
        self._draining = self.store.get_meta("draining") == "1"

    def audit_record(self, actor: str, action: str, subject: str, **detail: Any) -> AuditRecord:
        plain = json.loads(json.dumps(detail, sort_keys=True, default=str))
        return AuditRecord(0, self.clock(), actor, action, subject, plain)

    def record(self, actor: str, action: str, subject: str, **detail: Any) -> None:
        """Append to the audit log (a no-op without a signing key)."""
        if self.signer is not None:
            self.store.append_audit(self.audit_record(actor, action, subject, **detail), self.signer.seal)

    # ------------------------------------------------------------ identities

    def authenticate(self, who: Identity) -> Identity:
        """The caller, unless its certificate was revoked; certificates are remembered when first
        seen so that they can be revoked by name."""
        if who.serial:
            if who.serial in self._revoked:
                raise PermissionDenied(f"the certificate of {who.name} (serial {who.serial}) is revoked")
            if who.serial not in self._seen:
                self.store.remember_certificate(who.serial, who.name, self.clock())
                self._seen.add(who.serial)
        return who

    def create_join_token(self, name: str, jurisdiction: str, region: str, labels: dict[str, str], ttl_s: float,
                          actor: str) -> tuple[str, float]:
        """A one-time token for site `name` with its attributes bound; (token, expiry)."""
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = self.clock()
        expires = now + (ttl_s or 3600.0)
        attributes = {"jurisdiction": jurisdiction, "region": region, "labels": dict(labels)}
        self.store.add_join_token(token_id, hashlib.sha256(secret.encode()).hexdigest(), name, attributes, now,
                                  expires)
        self.record(actor, "site.token", name, token=token_id, expires_at=expires, **attributes)
        return f"{token_id}.{secret}", expires

    def enroll(self, token: str, csr_pem: bytes, ca: Issued, days: int) -> bytes:
        """A site certificate for the key in `csr_pem`, naming the token's site and attributes."""
        token_id, _, secret = token.partition(".")
        name, attrs = self.store.use_join_token(token_id, hashlib.sha256(secret.encode()).hexdigest(), self.clock())
        units = (*scopes("site", sites=(name,)), *binding(attrs["jurisdiction"], attrs["region"], attrs["labels"]))
        try:
            cert = sign_request(ca, csr_pem, name, units, days)
        except ValueError as e:
            raise InvalidSpec(str(e)) from None
        self.record(name, "site.enrol", name, token=token_id, **attrs)
        return cert

    def renew(self, who: Identity, csr_pem: bytes, ca: Issued | None, days: int) -> bytes:
        """A new certificate for a site's new key: its name, role and bound attributes unchanged."""
        if ca is None:
            raise Unsatisfiable("certificate renewal needs the CA key (spec.enrolment in the federation config)")
        units = (*scopes("site", sites=tuple(sorted(who.sites))), *who.bound)
        try:
            cert = sign_request(ca, csr_pem, who.name, units, days)
        except ValueError as e:
            raise InvalidSpec(str(e)) from None
        self.record(who.name, "cert.renew", who.name, old_serial=who.serial)
        return cert

    def revoke(self, name: str, actor: str) -> int:
        """Refuse every certificate seen for `name`, at once (open streams included)."""
        serials = self.store.revoke_certificates(name, self.clock())
        self._revoked.update(serials)
        self.record(actor, "cert.revoke", name, serials=serials)
        self.changes.bump()
        return len(serials)

    def revoked(self, who: Identity) -> bool:
        return bool(who.serial) and who.serial in self._revoked

    # ------------------------------------------------------------ users

    @property
    def draining(self) -> bool:
        return self._draining

    def drain(self, drain: bool, actor: str) -> None:
        """A draining federation takes no submissions; what is queued or running goes on. It stays
        draining across restarts until resumed."""
        if drain != self.draining:
            self.store.set_meta("draining", "1" if drain else "0")
            self._draining = drain
            self.record(actor, "federation.drain" if drain else "federation.resume", "federation")

    def submit(self, spec: JobSpec, actor: str = "", request_id: str = "",
               inputs: dict[str, dict[str, bytes]] | None = None) -> list[Job]:
        """The job, or every element of a job array or part of a gang, stored together or not at all.
        With a request id, a repeated submission returns the jobs the first one stored. `inputs`:
        per part name ('' for a plain job), files its attempts fetch; stored before the jobs, so no
        attempt can start without them."""
        digest = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()
        request = SubmitRequest(actor, request_id, digest, self.clock()) if request_id else None
        if request is not None:
            earlier = self.store.submission(request)
            if earlier is not None:
                return self.store.jobs_by_id(earlier)
        if self.draining:
            raise Unavailable("the federation is draining: it takes no submissions now (retry later)")
        queue = queues.resolve(self.policy, spec.metadata.tenant, spec.spec.queue)
        self._check_dependencies(spec)
        sites = self.store.list_sites()
        parts = gang_parts(spec) if spec.spec.gang is not None else [("", spec)]
        for k, (name, part) in enumerate(parts):
            try:
                self._check_queue_limits(part, queue)
                self._check_datasets(part, sites)
                self._check_satisfiable(part, sites)
            except FederationError as e:
                if not name:
                    raise
                raise type(e)(f"spec.gang.parts[{k}] ({name}): {e.message}") from None
        now = self.clock()
        job_id = new_job_id()
        if spec.spec.gang is not None:
            jobs = [Job(id=f"{job_id}-{name}", spec=_with_env(part, {
                        "FEDCTL_GANG_ID": job_id, "FEDCTL_GANG_PART": name, "FEDCTL_GANG_SIZE": str(len(parts))}),
                        created_at=now, updated_at=now, message="waiting for placement", queue=queue, gang_id=job_id)
                    for name, part in parts]
        elif spec.spec.array is None:
            jobs = [Job(id=job_id, spec=spec, created_at=now, updated_at=now, message="waiting for placement",
                        queue=queue)]
        else:
            indices = parse_array(spec.spec.array).indices
            jobs = [Job(id=f"{job_id}-{i}", spec=_element(spec, job_id, i, len(indices)), created_at=now,
                        updated_at=now, message="waiting for placement", queue=queue, array_id=job_id, array_index=i)
                    for i in indices]
        for job in jobs:
            part = job.id[len(job_id) + 1:] if job.gang_id else ""
            for name, data in (inputs or {}).get(part, {}).items():
                self.store.put_artifact(job.id, 0, name, data, now)
        audit = [self.audit_record(actor, "job.submit", j.id, tenant=j.tenant, queue=j.queue,
                                   name=j.spec.metadata.name, spec_sha256=digest)
                 for j in jobs] if self.signer is not None else []
        stored = self.store.add_jobs(jobs, request, audit, self.signer.seal if self.signer else None)
        if request is not None and stored != [j.id for j in jobs]:
            return self.store.jobs_by_id(stored)  # a concurrent retry of the same request stored first
        self.changes.bump(assignments=False)
        return jobs

    def _check_dependencies(self, spec: JobSpec) -> None:
        after = spec.spec.dependencies.all()
        if not after:
            return
        states = self.store.dependency_states(ref for _, ref in after)
        deps = spec.spec.dependencies
        for kind in ("after_ok", "after_any", "after_not_ok"):
            for i, ref in enumerate(getattr(deps, kind)):
                if not states[ref]:
                    raise NotFound(f"spec.dependencies.{kind}[{i}]: no job or array '{ref}'")

    def _check_datasets(self, spec: JobSpec, sites: list[SiteRecord]) -> None:
        catalog = self.catalog(sites)
        for i, name in enumerate(spec.spec.datasets):
            if name not in catalog:
                hint = difflib.get_close_matches(name, list(catalog), n=1)
                suffix = f" (did you mean '{hint[0]}'?)" if hint else (
                    f"; known: {', '.join(sorted(catalog))}" if catalog else "; no site has registered any dataset")
                raise UnknownDataset(f"spec.datasets[{i}]: unknown dataset '{name}'{suffix}")

    def _check_queue_limits(self, spec: JobSpec, queue: str) -> None:
        """A job bigger than a hard limit of its queue or a parent could never start."""
        asks = fairshare.demand(self.pending_view_of(spec, queue))
        q = self._queue.get(queue)
        while q is not None:
            for dim, cap in q.limit.items():
                if asks.get(dim, 0.0) > cap:
                    raise Unsatisfiable(f"spec.resources: asks {fairshare.describe_dim(dim, asks[dim])}; queue "
                                        f"{q.name}'s limit is {fairshare.describe_dim(dim, cap)}")
            q = self._queue.get(q.parent) if q.parent else None

    def _check_satisfiable(self, spec: JobSpec, sites: list[SiteRecord]) -> None:
        r = spec.spec.resources
        if not sites:
            return
        roomy = [s for s in sites if r.cpus <= s.capacity.cpus and r.memory <= s.capacity.memory]
        req = request_of(spec.spec)
        if roomy and req is None:
            return
        if roomy:
            state = policies.GpuState([gpu_inventory(s) for s in roomy])
            misses = []
            for i, s in enumerate(roomy):
                _, miss = state.fit(i, req, capacity=True)
                if miss is None:
                    return
                misses.append(f"{s.name}: {miss.detail or 'no GPUs'}")
            raise Unsatisfiable(f"spec.resources: no site could ever hold {req.shape()} ({'; '.join(misses)})")
        biggest = max(sites, key=lambda s: (s.capacity.gpus, s.capacity.cpus, s.capacity.memory))
        raise Unsatisfiable(
            f"spec.resources: no site could ever hold {r.cpus:g} cpus, {r.memory / 2**30:.3g}Gi memory "
            f"(largest: {biggest.name} with {biggest.capacity.cpus:g} cpus, "
            f"{biggest.capacity.memory / 2**30:.3g}Gi, {biggest.capacity.gpus:g} gpus)")

    def cancel(self, job_id: str, actor: str = "") -> Job:
        job = self.store.cancel_job(job_id, self.clock())
        self.record(actor, "job.cancel", job_id, reason=job.message)
        self.changes.bump()
        return job

    # ------------------------------------------------------------ sites

    def register_site(self, site: SiteRecord, actor: str = "") -> SiteRecord:
        for other in self.store.list_sites():
            if other.name == site.name:
                continue
            theirs = {d.name: d.classification for d in other.datasets}
            for d in site.datasets:
                if d.name in theirs and theirs[d.name] != d.classification:
                    raise Conflict(f"dataset {d.name} is classified {theirs[d.name]} by site {other.name}, "
                                   f"not {d.classification}")
        now = self.clock()
        record = self.store.upsert_site(SiteRecord(
            name=site.name, jurisdiction=site.jurisdiction, region=site.region, labels=dict(site.labels),
            datasets=site.datasets, capacity=site.capacity, registered_at=now, last_heartbeat=now,
            inventory=site.inventory, autonomous=site.autonomous, agreement_key=site.agreement_key))
        self.record(actor, "site.register", site.name, jurisdiction=site.jurisdiction, region=site.region,
                    labels=dict(site.labels), datasets={d.name: d.classification for d in site.datasets})
        self.changes.bump()
        return record

    def heartbeat(self, name: str, capacity: Capacity | None, inventory: Inventory | None = None) -> SiteRecord:
        site = self.store.heartbeat(name, capacity, self.clock(), inventory)
        if inventory is not None:
            self.changes.bump()
        return site

    def set_site_state(self, name: str, state: SiteState, actor: str = "", handover: bool = False) -> SiteRecord:
        """With `handover` (draining only), the site's running attempts are stopped as a preemption
        would stop them, and their jobs go back to the queue to run elsewhere."""
        if handover and state is not SiteState.DRAINING:
            raise InvalidSpec("handover: only a draining site hands its work over")
        site = self.store.set_site_state(name, state)
        handed = []
        if handover:
            now = self.clock()
            for attempt, job in self.store.live_attempts(name):
                if not attempt.stop_requested_at and self.store.request_stop(
                        job.id, attempt.number, f"handed over: site {name} drained", now):
                    handed.append(job.id)
        self.record(actor, "site.state", name, state=state.value, **({"handed_over": handed} if handover else {}))
        self.changes.bump()
        return site

    def apply_report(self, site: str, reports: Iterable[AttemptReport], logs: Iterable[LogChunk],
                     complete: bool, outputs: Iterable[Output] = ()) -> None:
        """Apply what an agent saw: log bytes and output files first, so a job is never seen ended
        before its last lines and its outputs. With `complete`, `reports` is every attempt its Ray
        cluster holds."""
        now = self.clock()
        seen: set[tuple[str, int]] = set()
        reports, logs, outputs = list(reports), list(logs), list(outputs)
        held = None if complete else ({r.job_id for r in reports} | {c.job_id for c in logs}
                                      | {o.job_id for o in outputs})
        live = {(a.job_id, a.number): (a, j) for a, j in self.store.live_attempts(site, held)}
        changed = False
        for out in outputs:
            if (out.job_id, out.number) not in live:
                continue   # only from the site running the attempt, while it runs
            if not OUTPUT_NAME_RE.match(out.name) or len(out.data) > MAX_ARTIFACT_BYTES:
                raise InvalidSpec(f"outputs: {out.job_id}/{out.number} {out.name[:64]!r}: a name of letters, digits"
                                  f" and . _ - and at most {MAX_ARTIFACT_BYTES >> 20} MiB")
            job = live[(out.job_id, out.number)][1]
            if blocked := self._output_blocked(job):
                if (out.job_id, out.number, out.name) not in self._refused:
                    self._refused.add((out.job_id, out.number, out.name))
                    self.record(site, "output.refused", out.job_id, attempt=out.number, name=out.name, reason=blocked)
                continue
            held = self.store.artifact_refs([out.job_id], out.number).get(out.job_id, [])
            if len(held) >= MAX_OUTPUTS and out.name not in {name for name, _, _ in held}:
                raise InvalidSpec(f"outputs: {out.job_id}/{out.number}: at most {MAX_OUTPUTS} files an attempt")
            self.store.put_artifact(out.job_id, out.number, out.name, out.data, now)
        for chunk in logs:
            if (chunk.job_id, chunk.number) in live or self._ran_at(site, chunk.job_id, chunk.number):
                self.store.append_log(chunk.job_id, chunk.number, chunk.offset, chunk.data)
                changed = True
        for r in reports:
            seen.add((r.job_id, r.number))
            if (r.job_id, r.number) not in live:
                if r.state.live:
                    self._refuse_stale(site, r)
                continue  # an attempt that ended here already, or one this site does not hold
            changed |= self.store.apply_attempt_status(r.job_id, r.number, r.state, r.message, now) is not None
        if complete:
            for key, (attempt, job) in live.items():
                if key in seen:
                    continue
                if job.state is JobState.CANCELLED:
                    state, message = AttemptState.STOPPED, "cancelled before it started"
                elif attempt.stop_requested_at:
                    state, message = AttemptState.PREEMPTED, f"{attempt.stop_reason} (before it started)"
                elif attempt.state is AttemptState.RUNNING:
                    state, message = AttemptState.LOST, "vanished from the site's Ray cluster (restarted?)"
                else:
                    continue  # assigned and not yet submitted: the agent will start it
                changed |= self.store.apply_attempt_status(job.id, attempt.number, state, message, now) is not None
        if changed:
            self.changes.bump()

    def _refuse_stale(self, site: str, r: AttemptReport) -> None:
        """An attempt the site runs that the federation no longer assigns to it (its lease expired
        and the job was re-placed, or it ended here): its epoch is stale. Its reports change
        nothing, and the agent stops it because the desired set no longer holds it."""
        if (r.job_id, r.number) in self._stale:
            return
        self._stale.add((r.job_id, r.number))
        log.warning("%s reports attempt %d of %s as %s: a stale epoch, refused", site, r.number, r.job_id,
                    r.state.value)
        self.record(site, "attempt.stale", r.job_id, attempt=r.number, site=site, state=r.state.value)

    def lease_expired(self, site: SiteRecord, now: float) -> bool:
        return now - max(site.last_heartbeat, self.started_at) > self.site_timeout_s

    def expire_leases(self, now: float) -> int:
        """Sites silent for longer than their lease lose their assignments: each live attempt becomes
        lost and its job is retried by its policy, wherever its rules allow. An autonomous site
        keeps its work. Returns how many attempts were lost."""
        lost = 0
        for site in self.store.list_sites():
            if site.autonomous or not self.lease_expired(site, now):
                continue
            silent = now - max(site.last_heartbeat, self.started_at)
            for attempt, job in self.store.live_attempts(site.name):
                message = f"site {site.name} lost: no heartbeat for {silent:.0f}s (lease {self.site_timeout_s:g}s)"
                if self.store.apply_attempt_status(job.id, attempt.number, AttemptState.LOST, message, now):
                    lost += 1
                    log.warning("%s attempt %d: %s", job.id, attempt.number, message)
                    self.record("federation", "attempt.lost", job.id, attempt=attempt.number, site=site.name,
                                silent_s=round(silent, 1))
        if lost:
            self.changes.bump()
        return lost

    def _ran_at(self, site: str, job_id: str, number: int) -> bool:
        """Logs may arrive after an attempt ended; accept them only from the site that ran it."""
        try:
            job = self.store.get_job(job_id)
        except NotFound:
            return False
        return any(a.number == number and a.site == site for a in job.attempts)

    def _output_blocked(self, job: Job) -> str:
        """Why the outputs of `job` may not leave its site, or '': none of its data's rules lets
        anything cross (may_cross_border: [nothing], or no rule)."""
        catalog = self.catalog(self.store.list_sites())
        for name in job.spec.spec.datasets:
            info = catalog.get(name)
            rule = self.rules.classifications.get(info.classification) if info else None
            if rule is None or not (rule.may_cross_border - {"nothing"}):
                return f"{name}: nothing of its data may leave the site"
        return ""

    def input_of(self, site: str, job_id: str, number: int, name: str) -> tuple[bytes, str]:
        """An input of an attempt `site` holds now; NotFound for anything else, so a site learns
        nothing of other sites' work."""
        if not any(a.number == number for a, _ in self.store.live_attempts(site, [job_id])):
            raise NotFound(f"{name} of {job_id}/{number} not found")
        return self.store.get_artifact(job_id, 0, name)

    def desired(self, site: str) -> list[tuple[Attempt, Job]]:
        """Attempts the site should be running: live ones whose job still wants them."""
        return sorted(((a, j) for a, j in self.store.live_attempts(site)
                       if not j.state.terminal and not a.stop_requested_at),
                      key=lambda x: (x[1].id, x[0].number))

    # ------------------------------------------------------------ scheduling

    def catalog(self, sites: list[SiteRecord]) -> dict[str, policies.DatasetInfo]:
        held: dict[str, tuple[str, set[str]]] = {}
        for site in sites:
            for d in site.datasets:
                held.setdefault(d.name, (d.classification, set()))[1].add(site.name)
        return {name: policies.DatasetInfo(name, cls, frozenset(sites)) for name, (cls, sites) in held.items()}

    def usage(self, live: list[tuple[Attempt, Job]] | None = None) -> dict[str, tuple[Capacity, int]]:
        """Per site: resources held by its live attempts, and how many there are."""
        usage: dict[str, tuple[Capacity, int]] = {}
        for attempt, job in self.store.live_attempts() if live is None else live:
            r = job.spec.spec.resources
            held, n = usage.get(attempt.site, (Capacity(), 0))
            usage[attempt.site] = (held + Capacity(r.cpus, r.memory, r.gpus), n + 1)
        return usage

    def snapshot(self, now: float, live: list[tuple[Attempt, Job]] | None = None) -> policies.Snapshot:
        live = self.store.live_attempts() if live is None else live
        usage = self.usage(live)
        records = self.store.list_sites()
        gpus = policies.GpuState([gpu_inventory(s) for s in records])
        index = {s.name: i for i, s in enumerate(records)}
        for attempt, _ in live:
            if attempt.binding and attempt.site in index:
                gpus.reserve(index[attempt.site], attempt.binding)
        sites = []
        for s in records:
            used, running = usage.get(s.name, (Capacity(), 0))
            sites.append(policies.SiteView(
                name=s.name, jurisdiction=s.jurisdiction, region=s.region, labels=s.labels,
                cpus=s.capacity.cpus, memory=float(s.capacity.memory), gpus=s.capacity.gpus,
                used_cpus=used.cpus, used_memory=float(used.memory), used_gpus=used.gpus, running=running,
                connected=s.connected(now, self.site_timeout_s),
                cordoned=s.state is SiteState.CORDONED, draining=s.state is SiteState.DRAINING))
        held = [(a, self.pending_view(job)) for a, job in live]
        return policies.Snapshot(sites=tuple(sites), catalog=self.catalog(records), rules=self.rules, gpus=gpus,
                                 queues=self.queue_usage(held, now), running=self.running_views(held, index),
                                 preemption=self.preemption_settings(now))

    @staticmethod
    def running_views(held: list[tuple[Attempt, policies.PendingJob]], index: dict[str, int]
                      ) -> tuple[preemption.Running, ...]:
        return tuple(preemption.Running(view, a.number, index[a.site], a.binding, a.gpu_model, a.started_at,
                                        bool(a.stop_requested_at))
                     for a, view in held if a.site in index)

    def preemption_settings(self, now: float) -> preemption.Settings | None:
        p = self.policy.spec.preemption
        if not p.enabled:
            return None
        budget = min(p.max_per_cycle, max(0, p.max_per_hour - self.store.stops_since(now - 3600)))
        return preemption.Settings(True, p.min_runtime, budget, p.reclaim)

    def queue_usage(self, held: list[tuple[Attempt, policies.PendingJob]], now: float) -> fairshare.Queues:
        """The policy's queues with what each holds now (`held`: live attempts and their jobs' views)
        and its decayed past use."""
        half_life = self.policy.spec.fair_share.half_life
        running: dict[str, dict[str, float]] = {}
        for attempt, view in held:
            into = running.setdefault(view.queue, {})
            for dim, v in fairshare.demand(view, attempt.gpu_model).items():
                into[dim] = into.get(dim, 0.0) + v
        # Past use older than ten half-lives weighs under 0.1%.
        records = self.store.usage_records(since=now - 10 * half_life)
        return fairshare.Queues(self.tree, queues.fair_share_usage(records, running, now, half_life),
                                self.policy.spec.fair_share.history_weight)

    @staticmethod
    def pending_view(job: Job, queue: str | None = None) -> policies.PendingJob:
        return ControlPlane.pending_view_of(job.spec, queue or job.queue, job.id, job.created_at, job.vetoed_by,
                                            job.gang_id)

    @staticmethod
    def pending_view_of(spec: JobSpec, queue: str, job_id: str = "", submitted_at: float = 0.0,
                        vetoed_by: frozenset[str] = frozenset(), gang: str = "") -> policies.PendingJob:
        body = spec.spec
        return policies.PendingJob(
            id=job_id, tenant=spec.metadata.tenant, datasets=tuple(body.datasets), cpus=body.resources.cpus,
            memory=float(body.resources.memory), gpus=body.resources.gpus,
            regions=tuple(body.placement.regions), sites=tuple(body.placement.sites),
            prefer=tuple(body.placement.prefer), priority=PRIORITY[body.priority],
            submitted_at=submitted_at, vetoed_by=vetoed_by, gpu=request_of(body), queue=queue,
            gang=gang, gang_size=len(body.gang.parts) if gang and body.gang else 0)

    def holds(self, pending: list[Job], live: list[tuple[Attempt, Job]]) -> dict[str, Hold]:
        """Per pending job held back by a dependency, a singleton or its array's limit, why."""
        waiting = [_waiting(j) for j in pending
                   if j.spec.spec.dependencies.all() or j.spec.spec.singleton or j.array_id]
        if not waiting:
            return {}
        refs = {ref for w in waiting for _, ref in w.after}
        states = self.store.dependency_states(refs) if refs else {}
        active_names = Counter((j.tenant, j.spec.metadata.name) for _, j in live)
        active_arrays = Counter(j.array_id for _, j in live if j.array_id)
        return policies.holds.holds(waiting, states, active_names, active_arrays)

    def _hold(self, pending: list[Job], live: list[tuple[Attempt, Job]], sites: list[str], now: float) -> set[str]:
        """Explain (or, if it can never start, cancel) each held job; their ids."""
        found = self.holds(pending, live)
        if not found:
            return set()
        by_id = {j.id: j for j in pending}
        for job_id, hold in found.items():
            if hold.never:
                self.store.cancel_job(job_id, now, message=f"cancelled: {hold.detail}")
                self.record("scheduler", "job.cancel", job_id, reason=hold.detail)
                self.changes.bump()
                continue
            summary = f"held: {hold.detail}"
            old = by_id[job_id].explanation
            if old is None or old.summary != summary:
                verdicts = tuple((s, False, hold.reason.slug, hold.detail) for s in sites)
                self.store.explain_job(job_id, Explanation(summary, now, verdicts))
        return set(found)

    def queue_view(self) -> tuple[list[QueuedJob], list[QueueState]]:
        """Pending jobs in the order the next cycle considers them if each were placed in turn,
        then those held back; and each queue's standing."""
        now = self.clock()
        pending = self.store.pending_jobs()
        live = self.store.live_attempts()
        held = self.holds(pending, live)
        snapshot = self.snapshot(now, live)
        known = self._queue.keys()
        views = [self.pending_view(j) for j in pending if j.id not in held and j.queue in known]
        ledger = fairshare.Ledger(snapshot.queues, policies.placement.totals(snapshot), views)
        counts = Counter(v.queue for v in views)
        # The standing before anything is charged; then the order, charging each job in turn.
        states = [QueueState(q, ledger.factors(q.name), ledger.nodes[q.name].running, ledger.nodes[q.name].history,
                             counts[q.name]) for q in self.tree]
        by_id = {j.id: j for j in pending}
        out = []
        for view in ledger:
            factors = ledger.factors(view.queue)
            blocked = ledger.admits(view.queue, fairshare.demand(view))
            out.append(QueuedJob(by_id[view.id], factors.tier, factors.ratio, blocked))
            if not blocked:
                ledger.charge(view.queue, fairshare.demand(view))
        out += [QueuedJob(by_id[i], -1, 0.0, h.detail) for i, h in held.items()]
        out += [QueuedJob(j, -1, 0.0, f"its queue '{j.queue}' is no longer in the policy")
                for j in pending if j.id not in held and j.queue not in known]
        return out, states

    def usage_report(self, by: tuple[str, ...], since: float, until: float,
                     tenants: frozenset[str] | None = None) -> list[dict]:
        """Resource-seconds grouped by `by`; only of `tenants` when given."""
        records = [r for r in self.store.usage_records(since) if tenants is None or r.tenant in tenants]
        return queues.report(records, by, since, until or self.clock())

    def _watch_gangs(self, live: list[tuple[Attempt, Job]], now: float) -> bool:
        """A gang runs whole or not at all: when one part failed, the rest are cancelled; when one
        is waiting again, or has not started within the gang's timeout, the live parts are
        stopped and the gang waits whole. Whether anything changed."""
        ids = {j.gang_id for _, j in live if j.gang_id}
        if not ids:
            return False
        changed = False
        for gang, parts in self.store.gang_jobs(ids).items():
            stopping = [(a, j) for j in parts if (a := j.current_attempt) is not None and a.state.live]
            spec = parts[0].spec.spec.gang
            go_on = spec is not None and spec.on_part_end == "continue"
            if go_on and all(j.current_attempt is not None and j.current_attempt.started_at
                             for j in parts if not j.state.terminal):
                continue   # every part left started once: each goes on alone
            ended = next((j for j in parts if j.state in (JobState.FAILED, JobState.CANCELLED)), None)
            if ended is not None and not go_on:
                for j in parts:
                    if not j.state.terminal:
                        why = f"part {ended.id} of gang {gang} {ended.state.value}"
                        self.store.cancel_job(j.id, now, f"cancelled: {why}")
                        self.record("scheduler", "job.cancel", j.id, reason=why)
                        changed = True
                continue
            waiting = next((j for j in parts if j.state is JobState.PENDING), None)
            timeout = parts[0].spec.spec.gang.timeout if parts[0].spec.spec.gang else 0.0
            late = next((j for a, j in stopping if a.state is AttemptState.ASSIGNED and now - a.created_at > timeout),
                        None)
            if waiting is not None:
                why = f"gang {gang}: part {waiting.id} is waiting again; the gang starts only whole"
            elif late is not None:
                why = f"gang {gang}: part {late.id} did not start within {timeout:g}s"
            else:
                continue
            for a, j in stopping:
                if self.store.request_stop(j.id, a.number, why, now):
                    self.record("scheduler", "job.preempt", j.id, attempt=a.number, site=a.site, reason=why)
                    changed = True
        if changed:
            self.changes.bump()
        return changed

    def _requeue(self, job: Job, now: float) -> str | None:
        """The queue of a job whose queue left the policy, or None (and the job says why) if it has none."""
        try:
            return queues.resolve(self.policy, job.tenant, job.spec.spec.queue)
        except InvalidSpec as e:
            summary = f"held: its queue '{job.queue}' is no longer in the policy ({e})"
            if job.explanation is None or job.explanation.summary != summary:
                self.store.explain_job(job.id, Explanation(summary, now))
            return None

    def schedule_once(self) -> policies.ScheduleResult:
        """One observe → decide → act cycle of the scheduling loop."""
        now = self.clock()
        self.expire_leases(now)
        live = self.store.live_attempts()
        if self._watch_gangs(live, now):
            live = self.store.live_attempts()
        pending = self.store.pending_jobs()
        if not pending:
            return policies.ScheduleResult((), ())
        by_id = {j.id: j for j in pending}
        snapshot = self.snapshot(now, live)
        held = self._hold(pending, live, [s.name for s in snapshot.sites], now)
        views = {}
        for j in pending:
            if j.id in held or j.not_before > now:
                continue   # held back, or backing off before a retry (its message says until when)
            queue = j.queue if j.queue in self._queue else self._requeue(j, now)
            if queue:
                views[j.id] = self.pending_view(j, queue)
        result = policies.schedule(snapshot, list(views.values()), now, self.max_placements)
        placed = False
        index = {s.name: i for i, s in enumerate(snapshot.sites)}
        for d in result.decisions:
            why = "; ".join(d.reasons)
            verdicts = [(d.site, True, "ok", why)]
            for site, code in zip(snapshot.sites, d.reasons_by_site):
                if site.name == d.site:
                    continue
                if code == policies.Reason.OK:
                    verdicts.append((site.name, True, "ok", "eligible; scored lower"))
                else:
                    v = policies.describe(views[d.job_id], site, policies.Reason(code), snapshot)
                    verdicts.append((site.name, False, v.reason.slug, v.detail))
            verdicts.sort(key=lambda v: index[v[0]])
            explanation = Explanation(summary=f"placed on {d.site}: {why}", evaluated_at=now, verdicts=tuple(verdicts))
            if self.store.place_job(d.job_id, d.site, explanation, now, d.binding, d.gpu_model) is not None:
                placed = True
                self.record("scheduler", "job.place", d.job_id, site=d.site, reasons=list(d.reasons),
                            policy=f"{self.policy.metadata.name}@{self.policy.metadata.version}",
                            gpus=[(s.node, list(s.gpus), s.milli) for s in d.binding])
        waiting_on: dict[str, list[str]] = {}
        for p in result.preemptions:
            reason = f"preempted for {p.for_job} ({p.reason})"
            if self.store.request_stop(p.job_id, p.attempt, reason, now):
                log.info("preempting %s attempt %d on %s: %s", p.job_id, p.attempt, p.site, reason)
                self.record("scheduler", "job.preempt", p.job_id, attempt=p.attempt, site=p.site, for_job=p.for_job,
                            reason=p.reason)
                waiting_on.setdefault(p.for_job, []).append(f"{p.job_id} on {p.site}")
                placed = True  # the site's desired set changed
        for u in result.unplaced:
            old = by_id[u.job_id].explanation
            summary = u.summary
            if u.job_id in result.making_room:
                if u.job_id in waiting_on:
                    summary = f"waiting: stopping {', '.join(waiting_on[u.job_id])} to make room"
                elif old is not None and old.summary.startswith("waiting: stopping"):
                    continue  # still waiting on the work named when it was stopped
                else:
                    summary = f"waiting: work stopping on {result.making_room[u.job_id]} makes room for it"
            elif old is not None and old.summary == u.summary and [v[2] for v in old.verdicts] == [
                    SLUGS[c] for c in u.reasons]:
                continue  # unchanged: no write
            verdicts = tuple((v.site, False, v.reason.slug, v.detail)
                             for v in policies.verdicts(u, views[u.job_id], snapshot))
            self.store.explain_job(u.job_id, Explanation(summary, now, verdicts))
        if placed:
            self.changes.bump()
        return result
