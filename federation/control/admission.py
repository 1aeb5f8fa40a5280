"""What the federation accepts: submissions and their checks, cancellation, and draining."""
from __future__ import annotations

import difflib
import hashlib
from collections.abc import Sequence

import policies
from federation import queues
from federation.control.catalog import check_access
from federation.control.core import Core
from federation.control.rates import SubmissionRates
from federation.control.snapshot import catalog, gpu_inventory, pending_view_of
from federation.errors import (
    FederationError,
    InvalidSpec,
    NotFound,
    ResourceExhausted,
    Unavailable,
    UnknownDataset,
    Unsatisfiable,
)
from federation.gpus import request_of
from federation.jobs import Job, new_job_id
from federation.sites import SiteRecord
from federation.spec import JobSpec, PolicyConfig, gang_parts
from federation.spec.array import parse_array
from federation.store import NewSubmission, SubmitRequest
from federation.store.base import over_pending
from policies import fairshare
from policies.feasible import cheapest_of
from policies.pricing import fits_node


def with_env(spec: JobSpec, extra: dict[str, str]) -> JobSpec:
    env = dict(spec.spec.runtime_env)
    env["env_vars"] = {**env.get("env_vars", {}), **extra}
    return spec.model_copy(update={"spec": spec.spec.model_copy(update={"runtime_env": env})})


def element(spec: JobSpec, array_id: str, index: int, count: int) -> JobSpec:
    """An array element's spec: the array's, with its index in the environment."""
    return with_env(spec, {"FEDCTL_ARRAY_ID": array_id, "FEDCTL_ARRAY_INDEX": str(index),
                           "FEDCTL_ARRAY_COUNT": str(count)})


def parts_of(spec: JobSpec) -> list[tuple[str, JobSpec]]:
    """A gang's parts by name; a job that is not a gang is its one unnamed part."""
    return gang_parts(spec) if spec.spec.gang is not None else [("", spec)]


def new_jobs(spec: JobSpec, queue: str, now: float, parts: list[tuple[str, JobSpec]] | None = None,
             submitter: str = "") -> list[Job]:
    """The job, or every element of its array or part of its gang (`parts`, if already made), under one
    new id, each recording who submitted it."""
    job_id = new_job_id()
    if spec.spec.gang is not None:
        parts = parts or gang_parts(spec)
        return [Job(id=f"{job_id}-{name}", spec=with_env(part, {
                    "FEDCTL_GANG_ID": job_id, "FEDCTL_GANG_PART": name, "FEDCTL_GANG_SIZE": str(len(parts))}),
                    created_at=now, updated_at=now, message="waiting for placement", queue=queue, gang_id=job_id,
                    submitter=submitter)
                for name, part in parts]
    if spec.spec.array is None:
        return [Job(id=job_id, spec=spec, created_at=now, updated_at=now, message="waiting for placement",
                    queue=queue, submitter=submitter)]
    indices = parse_array(spec.spec.array).indices
    return [Job(id=f"{job_id}-{i}", spec=element(spec, job_id, i, len(indices)), created_at=now,
                updated_at=now, message="waiting for placement", queue=queue, array_id=job_id, array_index=i,
                submitter=submitter)
            for i in indices]


MAX_SUBMISSION_BYTES = 16 << 20   # a spec times its array elements or gang parts
MAX_CALL_BYTES = 64 << 20         # what one SubmitJobs call stores, in one transaction


class Admission:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.reload()
        # Callers' submissions a second; the servicers take one for each request, before reading it.
        self.rates = SubmissionRates.of(core.policy.spec.limits)

    def reload(self) -> None:
        """Whether the federation drains, as the store says (another replica may have drained it)."""
        self._draining = self.core.store.get_meta("draining") == "1"

    @property
    def draining(self) -> bool:
        return self._draining

    def drain(self, drain: bool, actor: str) -> None:
        """A draining federation takes no submissions; what is queued or running goes on. It stays
        draining across restarts until resumed."""
        if drain != self.draining:
            self.core.store.set_meta("draining", "1" if drain else "0")
            self._draining = drain
            self.core.record(actor, "federation.drain" if drain else "federation.resume", "federation")

    def submit(self, spec: JobSpec, actor: str = "", request_id: str = "",
               inputs: dict[str, dict[str, bytes]] | None = None) -> list[Job]:
        """The job, or every element of a job array or part of a gang, stored together or not at all.
        With a request id, a repeated submission returns the jobs the first one stored. `inputs`:
        per part name ('' for a plain job), files its attempts fetch; stored before the jobs, so no
        attempt can start without them."""
        try:
            prepared = self._prepare(spec, actor, request_id)
            if isinstance(prepared, list):
                return prepared
            return self._store(prepared[0], inputs)
        except FederationError as e:
            self.core.metrics.refused.labels(e.code.value).inc()
            raise

    def _store(self, ready: NewSubmission, inputs: dict[str, dict[str, bytes]] | None) -> list[Job]:
        now = self.core.clock()
        for job in ready.jobs:
            part = job.id[len(job.gang_id) + 1:] if job.gang_id else ""
            for name, data in (inputs or {}).get(part, {}).items():
                self.core.store.put_artifact(job.id, 0, name, data, now)
        signer = self.core.signer
        stored = self.core.store.add_jobs(ready.jobs, ready.request, ready.audit, signer.seal if signer else None,
                                          ready.pending_limit)
        self.core.changes.bump(assignments=False)
        return self._stored(ready, stored)

    def submit_many(self, items: Sequence[tuple[JobSpec, str]], actor: str = "") -> list[list[Job] | FederationError]:
        """Several (spec, request id) submissions, each stored or refused on its own, in one
        transaction where the store allows: per item, its jobs or the error that refused it."""
        out: list[list[Job] | FederationError] = []
        ready: list[tuple[int, NewSubmission]] = []
        queued: dict[str, int] = {}   # jobs of this call waiting per tenant, not yet in the store's count
        size = 0                      # what this call stores
        for spec, request_id in items:
            tenant = spec.metadata.tenant
            r: tuple[NewSubmission, int] | list[Job] | FederationError
            try:
                r = self._prepare(spec, actor, request_id, queued.get(tenant, 0))
            except FederationError as e:
                r = e
            if isinstance(r, tuple) and size + r[1] > MAX_CALL_BYTES:
                r = ResourceExhausted(f"the submissions before it store {size / 2**20:.0f} MiB; at most "
                                      f"{MAX_CALL_BYTES >> 20} MiB a call (send the rest in another)")
            if isinstance(r, tuple):
                queued[tenant] = queued.get(tenant, 0) + len(r[0].jobs)
                size += r[1]
                ready.append((len(out), r[0]))
            out.append(r if not isinstance(r, tuple) else [])
        signer = self.core.signer
        stored = self.core.store.add_many([new for _, new in ready], signer.seal if signer else None)
        metrics = self.core.metrics
        for (i, new), ids in zip(ready, stored, strict=True):
            out[i] = ids if isinstance(ids, FederationError) else self._stored(new, ids)
        for r in out:
            if isinstance(r, FederationError):
                metrics.refused.labels(r.code.value).inc()
        if ready:
            self.core.changes.bump(assignments=False)
        return out

    def _prepare(self, spec: JobSpec, actor: str, request_id: str,
                 queued: int = 0) -> tuple[NewSubmission, int] | list[Job]:
        """The submission's new jobs and audit records, checked, and the bytes they store; or the jobs
        an earlier submission with the same request id stored. `queued`: the tenant's jobs waiting
        beside it, not yet stored."""
        store = self.core.store
        document = spec.model_dump_json().encode()
        digest = hashlib.sha256(document).hexdigest()
        request = SubmitRequest(actor, request_id, digest, self.core.clock()) if request_id else None
        if request is not None:
            earlier = store.submission(request)
            if earlier is not None:
                return store.jobs_by_id(earlier)
        if self.draining:
            raise Unavailable("the federation is draining: it takes no submissions now (retry later)")
        queue = queues.resolve(self.core.policy, spec.metadata.tenant, spec.spec.queue)
        parts = parts_of(spec)
        self._check(spec, queue, parts)
        jobs = new_jobs(spec, queue, self.core.clock(), parts, actor)
        self._check_bounds(spec.metadata.tenant, len(document), len(jobs), queued)
        audit = [self.core.audit_record(actor, "job.submit", j.id, tenant=j.tenant, queue=j.queue,
                                        name=j.spec.metadata.name, spec_sha256=digest)
                 for j in jobs] if self.core.signer is not None else []
        limit = self.core.policy.spec.limits.pending_per_tenant
        return NewSubmission(jobs, request, audit, limit), len(document) * len(jobs)

    def _stored(self, ready: NewSubmission, ids: list[str]) -> list[Job]:
        if ready.request is not None and ids != [j.id for j in ready.jobs]:
            return self.core.store.jobs_by_id(ids)  # a concurrent retry of the same request stored first
        self.core.metrics.submissions.labels(ready.jobs[0].tenant).inc(len(ready.jobs))
        return list(ready.jobs)

    def cancel(self, job_id: str, actor: str = "") -> Job:
        job = self.core.store.cancel_job(job_id, self.core.clock())
        self.core.record(actor, "job.cancel", job_id, reason=job.message)
        self.core.changes.bump()
        return job

    def _check(self, spec: JobSpec, queue: str, parts: list[tuple[str, JobSpec]]) -> None:
        """Refuse what could never run; a gang's errors name the part."""
        self._check_dependencies(spec)
        sites = self.core.store.list_sites()
        for k, (name, part) in enumerate(parts):
            try:
                self._check_queue_limits(part, queue)
                check_datasets(part, sites, self.core.policy)
                check_access(part.metadata.tenant, {f"spec.datasets[{i}]": d for i, d in enumerate(part.spec.datasets)},
                             self.core.policy)
                check_satisfiable(part, sites)
            except FederationError as e:
                if not name:
                    raise
                raise type(e)(f"spec.gang.parts[{k}] ({name}): {e.message}") from None

    def _check_bounds(self, tenant: str, size: int, count: int, queued: int = 0) -> None:
        """What one submission may store: its spec (`size` bytes) times its elements, and the
        tenant's waiting jobs (`queued` more beside it, not yet stored)."""
        if size * count > MAX_SUBMISSION_BYTES:
            raise InvalidSpec(f"spec.array: {count} elements of a {size / 1024:.1f} KiB spec would store "
                              f"{size * count / 2**20:.0f} MiB; at most {MAX_SUBMISSION_BYTES >> 20} MiB "
                              "(fewer elements or a smaller spec)")
        # A first look, off the write path; the store counts again in the transaction that adds them.
        refused = over_pending(tenant, self.core.store.pending_count(tenant) + queued, count,
                               self.core.policy.spec.limits.pending_per_tenant)
        if refused:
            raise refused

    def _check_dependencies(self, spec: JobSpec) -> None:
        after = spec.spec.dependencies.all()
        if not after:
            return
        states = self.core.store.dependency_states(ref for _, ref in after)
        deps = spec.spec.dependencies
        for kind in ("after_ok", "after_any", "after_not_ok"):
            for i, ref in enumerate(getattr(deps, kind)):
                if not states[ref]:
                    raise NotFound(f"spec.dependencies.{kind}[{i}]: no job or array '{ref}'")

    def _check_queue_limits(self, spec: JobSpec, queue: str) -> None:
        """A job bigger than a hard limit of its queue or a parent could never start."""
        asks = fairshare.demand(pending_view_of(spec, queue))
        q = self.core.queue_by_name.get(queue)
        while q is not None:
            for dim, cap in q.limit.items():
                if asks.get(dim, 0.0) > cap:
                    raise Unsatisfiable(f"spec.resources: asks {fairshare.describe_dim(dim, asks[dim])}; queue "
                                        f"{q.name}'s limit is {fairshare.describe_dim(dim, cap)}")
            q = self.core.queue_by_name.get(q.parent) if q.parent else None


def check_price(spec: JobSpec, sites: list[SiteRecord]) -> None:
    """A max_price below what every site asks for the job could never be met: refused at once."""
    cap = spec.spec.placement.max_price
    if cap is None:
        return
    view = pending_view_of(spec, "")
    req = policies.gpu_request(view)
    quotes = [(cheapest_of(view, req, s.pricing, bool(s.elastic and any(t.spot for t in s.elastic.node_types)),
                           frozenset(n.model for n in s.inventory.nodes)
                           | {t.gpu_model for t in (s.elastic.node_types if s.elastic else ()) if t.gpu_model}),
               s.name) for s in sites]
    price, name = min(quotes)
    if price > cap + 1e-9:
        raise Unsatisfiable(f"spec.placement.max_price: {cap:g} an hour is below every site's price for this job "
                            f"(cheapest: {name} at {price:.4g} an hour)")


def check_datasets(spec: JobSpec, sites: list[SiteRecord], policy: PolicyConfig) -> None:
    known = catalog(sites, policy)
    for i, name in enumerate(spec.spec.datasets):
        if name not in known:
            hint = difflib.get_close_matches(name, list(known), n=1)
            suffix = f" (did you mean '{hint[0]}'?)" if hint else (
                f"; known: {', '.join(sorted(known))}" if known else "; no site has registered any dataset")
            raise UnknownDataset(f"spec.datasets[{i}]: unknown dataset '{name}'{suffix}")


def check_satisfiable(spec: JobSpec, sites: list[SiteRecord]) -> None:
    r = spec.spec.resources
    if not sites:
        return
    check_price(spec, sites)
    req = request_of(spec.spec)
    if any(s.elastic and any(fits_node(t, r.cpus, r.memory, req) for t in s.elastic.node_types) for s in sites):
        return   # a node an elastic site may add holds it
    roomy = [s for s in sites if r.cpus <= s.capacity.cpus and r.memory <= s.capacity.memory]
    if roomy:
        if req is None:
            return
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
