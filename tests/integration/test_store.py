"""One suite, every storage backend."""
from __future__ import annotations

import stat
import threading
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from itertools import pairwise

import pytest

from federation.audit import AuditRecord
from federation.errors import Conflict, Deposed, InvalidTransition, NotFound, ResourceExhausted
from federation.jobs import AttemptState, Explanation, Job, JobState
from federation.sites import Capacity, DatasetRecord, SiteRecord, SiteState
from federation.store import Leadership, NewSubmission, SQLiteStore, Store, SubmitRequest, open_store
from tests.conftest import make_spec


@pytest.fixture(params=["sqlite-file", "postgres"])
def replicas(request, tmp_path) -> Callable[[], Store]:
    """Opens another store on one shared database, as another replica of the federation would."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else str(tmp_path / "fed.db")
    opened: list[Store] = []

    def open_one() -> Store:
        opened.append(open_store(url))
        return opened[-1]

    yield open_one
    for s in opened:
        s.close()


def add(store: Store, job_id: str = "j-1", created_at: float = 1.0, **spec) -> Job:
    job = Job(id=job_id, spec=make_spec(**spec), created_at=created_at, updated_at=created_at)
    store.add_job(job)
    return job


EXPL = Explanation("placed on a", 2.0, (("a", True, "ok", "fits"),))


def test_add_get_list(store):
    add(store, "j-1", 1.0, tenant="a")
    add(store, "j-2", 2.0, tenant="b")
    assert store.get_job("j-1").spec.metadata.tenant == "a"
    assert [j.id for j in store.list_jobs()] == ["j-2", "j-1"]
    assert [j.id for j in store.list_jobs(tenants=["a"])] == ["j-1"]
    assert [j.id for j in store.list_jobs(states=[JobState.PENDING], limit=1)] == ["j-2"]
    with pytest.raises(NotFound):
        store.get_job("nope")
    with pytest.raises(Conflict):
        add(store, "j-1")


def test_a_batch_stores_each_submission_or_refuses_it_alone(store):
    def new(job_id: str) -> Job:
        return Job(id=job_id, spec=make_spec(), created_at=1.0, updated_at=1.0)
    add(store, "j-old")
    request = SubmitRequest("alice", "r-1", "sha", 1.0)
    results = store.add_many([NewSubmission([new("j-a")], request), NewSubmission([new("j-old")], None),
                              NewSubmission([new("j-b"), new("j-c")], None), NewSubmission([new("j-d")], request)])
    assert results[0] == ["j-a"] and isinstance(results[1], Conflict)
    assert results[2] == ["j-b", "j-c"] and results[3] == ["j-a"]   # the same request id: the first one's jobs
    assert sorted(j.id for j in store.list_jobs()) == ["j-a", "j-b", "j-c", "j-old"]
    assert store.add_many([]) == []


def test_concurrent_submissions_never_pass_a_tenants_waiting_limit_together(store):
    refused: list[ResourceExhausted] = []

    def submit(k: int) -> None:
        jobs = [Job(id=f"j-{k}-{i}", spec=make_spec(tenant="t"), created_at=1.0, updated_at=1.0) for i in range(10)]
        try:
            store.add_jobs(jobs, pending_limit=30)
        except ResourceExhausted as e:
            refused.append(e)

    run_together(*(partial(submit, k) for k in range(8)))
    assert len(store.list_jobs()) == 30 and len(refused) == 5
    assert "tenant t has 30 jobs waiting; 10 more would pass its limit of 30" in refused[0].message
    batch = [NewSubmission([Job(id=f"k-{i}", spec=make_spec(tenant=t), created_at=1.0, updated_at=1.0)], None,
                           pending_limit=31) for i, t in enumerate(("t", "t", "u"))]
    results = store.add_many(batch)
    assert results[0] == ["k-0"] and isinstance(results[1], ResourceExhausted) and results[2] == ["k-2"]


def test_jobs_of_one_spec_share_its_parsed_form(store):
    add(store, "j-a")
    add(store, "j-b")
    add(store, "j-c", tenant="other")
    a, b, c = (store.get_job(i).spec for i in ("j-a", "j-b", "j-c"))
    assert a is b and a == b and c is not a and c.metadata.tenant == "other"


def test_place_then_run_then_succeed(store):
    add(store)
    attempt = store.place_job("j-1", "a", EXPL, now=2.0)
    assert attempt.number == 1 and attempt.submission_id == "fed-j-1-1"
    assert store.place_job("j-1", "b", EXPL, now=2.5) is None, "a placed job is not placed twice"
    job = store.get_job("j-1")
    assert (job.state, job.site, job.explanation) == (JobState.PLACED, "a", EXPL)
    assert [(a.job_id, j.id) for a, j in store.live_attempts("a")] == [("j-1", "j-1")]
    assert store.apply_attempt_status("j-1", 1, AttemptState.RUNNING, "", 3.0).state is JobState.RUNNING
    assert store.apply_attempt_status("j-1", 1, AttemptState.RUNNING, "", 3.5) is None, "repeats are no-ops"
    job = store.apply_attempt_status("j-1", 1, AttemptState.SUCCEEDED, "done", 4.0)
    assert job.state is JobState.SUCCEEDED
    assert job.attempts[0].started_at == 3.0 and job.attempts[0].ended_at == 4.0
    assert store.live_attempts() == []
    assert store.apply_attempt_status("j-1", 1, AttemptState.FAILED, "late", 5.0) is None
    assert store.get_job("j-1").state is JobState.SUCCEEDED


def test_rejection_requeues_and_remembers_the_site(store):
    add(store)
    store.place_job("j-1", "a", EXPL, 2.0)
    job = store.apply_attempt_status("j-1", 1, AttemptState.REJECTED, "tenant not allowed", 3.0)
    assert job.state is JobState.PENDING and job.site == "" and job.vetoed_by == {"a"}
    assert "refused by a: tenant not allowed" in job.message
    assert [j.id for j in store.pending_jobs()] == ["j-1"]
    assert store.place_job("j-1", "b", EXPL, 4.0).number == 2


def test_cancel(store):
    add(store)
    store.place_job("j-1", "a", EXPL, 2.0)
    assert store.cancel_job("j-1", 3.0).state is JobState.CANCELLED
    assert store.cancel_job("j-1", 3.5).state is JobState.CANCELLED, "cancel is idempotent"
    # the attempt is still live until the site says it stopped; the job stays cancelled
    assert len(store.live_attempts("a")) == 1
    job = store.apply_attempt_status("j-1", 1, AttemptState.SUCCEEDED, "", 4.0)
    assert job.state is JobState.CANCELLED and job.attempts[0].state is AttemptState.SUCCEEDED
    add(store, "j-2")
    store.place_job("j-2", "a", EXPL, 2.0)
    store.apply_attempt_status("j-2", 1, AttemptState.SUCCEEDED, "", 3.0)
    with pytest.raises(InvalidTransition):
        store.cancel_job("j-2", 4.0)
    with pytest.raises(NotFound):
        store.cancel_job("nope", 1.0)


def test_invalid_attempt_transition_is_refused_and_nothing_changes(store):
    add(store)
    store.place_job("j-1", "a", EXPL, 2.0)
    store.apply_attempt_status("j-1", 1, AttemptState.RUNNING, "", 3.0)
    with pytest.raises(InvalidTransition):
        store.apply_attempt_status("j-1", 1, AttemptState.REJECTED, "", 4.0)
    assert store.get_job("j-1").state is JobState.RUNNING
    with pytest.raises(NotFound):
        store.apply_attempt_status("j-1", 9, AttemptState.RUNNING, "", 4.0)


def test_explain_only_touches_pending_jobs(store):
    add(store)
    e = Explanation("no site can take it", 5.0, (("a", False, "cordoned", "site is cordoned"),))
    store.explain_job("j-1", e)
    assert store.get_job("j-1").explanation == e
    store.place_job("j-1", "a", EXPL, 6.0)
    store.explain_job("j-1", e)
    assert store.get_job("j-1").explanation == EXPL


def test_logs_are_appended_once_and_capped(store):
    add(store)
    store.place_job("j-1", "a", EXPL, 2.0)
    assert store.append_log("j-1", 1, 0, b"hello ") == 6
    assert store.append_log("j-1", 1, 0, b"hello world\n") == 12, "a resend from 0 adds only the new bytes"
    assert store.append_log("j-1", 1, 6, b"world\n") == 12, "bytes already held are skipped"
    assert store.append_log("j-1", 1, 20, b"gap") == 12, "a chunk past the end is refused"
    assert store.read_log("j-1") == b"hello world\n"
    assert store.read_log("j-1", 6) == b"world\n"
    from federation.store.base import MAX_LOG_BYTES_PER_ATTEMPT
    big = b"x" * (MAX_LOG_BYTES_PER_ATTEMPT + 10)
    assert store.append_log("j-1", 1, 0, big) == MAX_LOG_BYTES_PER_ATTEMPT


def test_sites(store):
    site = SiteRecord("a", "DE", "eu-west", {"tier": "edge"}, (DatasetRecord("d", "public", "/x"),),
                      Capacity(4, 2**30, 0), registered_at=1.0, last_heartbeat=1.0)
    assert store.upsert_site(site) == site
    store.set_site_state("a", SiteState.CORDONED)
    again = store.upsert_site(SiteRecord("a", "DE", "eu-west", capacity=Capacity(8, 0, 0)))
    assert again.state is SiteState.CORDONED, "re-registering keeps the operator's cordon"
    assert again.capacity.cpus == 8
    hb = store.heartbeat("a", Capacity(2, 5, 1), 9.0)
    assert (hb.last_heartbeat, hb.capacity) == (9.0, Capacity(2, 5, 1))
    assert hb.connected(now=10.0, timeout_s=5) and not hb.connected(now=20.0, timeout_s=5)
    assert [s.name for s in store.list_sites()] == ["a"]
    for call in (lambda: store.get_site("b"), lambda: store.set_site_state("b", SiteState.READY),
                 lambda: store.heartbeat("b", None, 1.0)):
        with pytest.raises(NotFound):
            call()


def test_concurrent_placement_places_each_job_once(store):
    for i in range(50):
        add(store, f"j-{i}", float(i))
    won: list[str] = []

    def race(site: str) -> None:
        for i in range(50):
            if store.place_job(f"j-{i}", site, EXPL, 1.0) is not None:
                won.append(f"j-{i}")

    threads = [threading.Thread(target=race, args=(s,)) for s in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == sorted(f"j-{i}" for i in range(50))
    assert all(len(store.get_job(f"j-{i}").attempts) == 1 for i in range(50))


def test_reopening_the_file_keeps_everything(tmp_path):
    path = tmp_path / "fed.db"
    s = SQLiteStore(path)
    add(s)
    s.place_job("j-1", "a", EXPL, 2.0)
    s.close()
    s = SQLiteStore(path)
    job = s.get_job("j-1")
    assert job.state is JobState.PLACED and job.attempts[0].site == "a"
    assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()


def test_usage_records_are_attempts_that_ran_with_their_job_queue_and_resources(store):
    job = Job(id="j-1", spec=make_spec(resources={"cpus": 2, "memory": "1Gi", "gpus": 1}), created_at=1.0,
              updated_at=1.0, queue="oncology")
    store.add_job(job)
    store.place_job("j-1", "a", EXPL, 2.0, gpu_model="H100")
    assert store.usage_records() == [], "an attempt that never started used nothing"
    store.apply_attempt_status("j-1", 1, AttemptState.RUNNING, "", 10.0)
    (r,) = store.usage_records()
    assert (r.tenant, r.queue, r.site, r.gpu_model, r.cpus, r.memory, r.gpus, r.started_at, r.ended_at) == (
        "default", "oncology", "a", "H100", 2.0, float(2**30), 1.0, 10.0, 0.0)
    store.apply_attempt_status("j-1", 1, AttemptState.SUCCEEDED, "", 30.0)
    assert store.usage_records(since=30.0)[0].ended_at == 30.0
    assert store.usage_records(since=31.0) == [], "ended before the window"
    assert store.get_job("j-1").queue == "oncology" and store.get_job("j-1").attempts[0].gpu_model == "H100"


def test_live_use_is_what_live_attempts_hold_without_their_jobs(store):
    for i, (gpus, model) in enumerate(((1, "H100"), (0, ""), (2, "A100"))):
        store.add_job(Job(id=f"j-{i}", spec=make_spec(resources={"cpus": i + 1, "memory": "1Gi", "gpus": gpus}),
                          created_at=1.0, updated_at=1.0))
        store.place_job(f"j-{i}", "a" if i < 2 else "b", EXPL, 2.0, gpu_model=model)
    store.apply_attempt_status("j-0", 1, AttemptState.RUNNING, "", 3.0)
    store.apply_attempt_status("j-1", 1, AttemptState.SUCCEEDED, "", 3.0)   # no longer live
    use = sorted((site, model, r.cpus, r.memory, r.gpus) for site, model, r in store.live_use())
    assert use == [("a", "H100", 1.0, 2**30, 1.0), ("b", "A100", 3.0, 2**30, 2.0)]
    assert sorted((a.site, a.gpu_model, j.spec.spec.resources.cpus) for a, j in store.live_attempts()) == \
        [(site, model, cpus) for site, model, cpus, _, _ in use]


def test_a_store_written_before_queues_gains_the_columns(tmp_path):
    import sqlite3
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE jobs (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, spec TEXT NOT NULL, state TEXT NOT NULL,
            site TEXT NOT NULL DEFAULT '', message TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL,
            updated_at REAL NOT NULL, vetoed_by TEXT NOT NULL DEFAULT '[]', explanation TEXT);
        CREATE TABLE attempts (job_id TEXT NOT NULL, number INTEGER NOT NULL, site TEXT NOT NULL,
            state TEXT NOT NULL, message TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL,
            started_at REAL NOT NULL DEFAULT 0, ended_at REAL NOT NULL DEFAULT 0, PRIMARY KEY (job_id, number));
    """)
    db.execute("INSERT INTO jobs (id, tenant, spec, state, created_at, updated_at) VALUES (?,?,?,?,?,?)",
               ("j-old", "t", make_spec().model_dump_json(), "pending", 1.0, 1.0))
    db.commit()
    db.close()
    s = SQLiteStore(path)
    assert s.get_job("j-old").queue == "default"
    s.place_job("j-old", "a", EXPL, 2.0, gpu_model="L4")
    assert s.get_job("j-old").attempts[0].gpu_model == "L4"
    s.close()


def test_site_list_follows_every_kind_of_site_write(store):
    store.upsert_site(SiteRecord("a", "DE", "eu-west", capacity=Capacity(4, 0, 0)))
    assert [s.capacity.cpus for s in store.list_sites()] == [4]
    store.heartbeat("a", Capacity(2, 0, 0), 5.0)
    assert [(s.capacity.cpus, s.last_heartbeat) for s in store.list_sites()] == [(2, 5.0)]
    store.set_site_state("a", SiteState.CORDONED)
    assert [s.state for s in store.list_sites()] == [SiteState.CORDONED]
    store.upsert_site(SiteRecord("b", "FR", "eu-west"))
    assert [s.name for s in store.list_sites()] == ["a", "b"]
    store.list_sites().clear()
    assert len(store.list_sites()) == 2, "callers get their own list"


def test_submission_audit_is_written_with_the_jobs_or_not_at_all(tmp_path):
    from federation import audit
    path = tmp_path / "fed.db"
    store, signer = SQLiteStore(path), audit.Signer.beside(path)
    record = audit.AuditRecord(0, 1.0, "alice", "job.submit", "j-1", {"tenant": "a"})
    store.add_jobs([Job(id="j-1", spec=make_spec(), created_at=1.0, updated_at=1.0)], None, [record], signer.seal)
    with pytest.raises(Conflict):
        store.add_jobs([Job(id="j-2", spec=make_spec(), created_at=1.0, updated_at=1.0),
                        Job(id="j-1", spec=make_spec(), created_at=1.0, updated_at=1.0)], None,
                       [audit.AuditRecord(0, 2.0, "alice", "job.submit", "j-2", {})], signer.seal)
    store.close()
    records = audit.read(path)
    assert [(r.action, r.subject) for r in records] == [("job.submit", "j-1")]
    assert audit.verify(records, audit.load_public(audit.public_path(path)))[0] == 1
    with pytest.raises(NotFound):
        SQLiteStore(path).get_job("j-2")


def test_the_store_and_its_wal_are_readable_by_their_owner_only(tmp_path):
    path = tmp_path / "federation.db"
    path.write_bytes(b"")
    path.chmod(0o644)   # an existing file made world-readable is tightened too
    store = SQLiteStore(path)
    store.set_meta("k", "v")
    try:
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        assert set(modes) == {"federation.db", "federation.db-wal", "federation.db-shm"}
        assert set(modes.values()) == {0o600}
    finally:
        store.close()


def test_the_newest_heartbeat_is_of_a_site_that_can_be_lost(store):
    assert store.newest_heartbeat() == 0.0
    store.upsert_site(SiteRecord("a", "DE", "eu-west", last_heartbeat=5.0))
    store.upsert_site(SiteRecord("edge", "DE", "eu-west", autonomous=True, last_heartbeat=9.0))
    assert store.newest_heartbeat() == 5.0
    store.heartbeat("a", None, 7.0)
    store.heartbeat("edge", None, 12.0)
    assert store.newest_heartbeat() == 7.0, "an autonomous site is never lost, so it says nothing here"


def test_leadership_is_held_renewed_and_taken_after_it_lapses(store):
    assert store.leadership() is None
    a = store.acquire_leadership("a", "10.0.0.1:50051", now=100.0, ttl_s=10.0)
    assert (a.holder, a.term, a.since, a.expires_at) == ("a", 1, 100.0, 110.0)
    assert store.acquire_leadership("b", "10.0.0.2:50051", now=105.0, ttl_s=10.0) == a, "held: b does not take it"
    renewed = store.acquire_leadership("a", "10.0.0.1:50051", now=108.0, ttl_s=10.0)
    assert (renewed.term, renewed.since, renewed.expires_at) == (1, 100.0, 118.0), "a renewal keeps the term"
    b = store.acquire_leadership("b", "10.0.0.2:50051", now=118.5, ttl_s=10.0)
    assert (b.holder, b.address, b.term, b.since) == ("b", "10.0.0.2:50051", 2, 118.5)
    assert store.leadership() == b
    lapsed = store.acquire_leadership("b", "10.0.0.2:50051", now=200.0, ttl_s=10.0)
    assert (lapsed.term, lapsed.since) == (3, 200.0), "taking a lapsed lease again begins a new term"


def test_a_deposed_leader_cannot_write(store):
    now = [100.0]
    a = store.acquire_leadership("a", "x:1", now=100.0, ttl_s=10.0)
    store.fence(a.term, lambda: now[0])
    add(store, "j-1")
    now[0] = 110.5
    with pytest.raises(Deposed, match="ran out"):
        add(store, "j-2")
    with pytest.raises(Deposed, match="ran out"):   # the whole call, not each submission
        store.add_many([NewSubmission([Job(id=i, spec=make_spec(), created_at=1.0, updated_at=1.0)], None)
                        for i in ("j-3", "j-4")])
    store.acquire_leadership("b", "y:1", now=111.0, ttl_s=10.0)
    now[0] = 112.0
    with pytest.raises(Deposed, match="another term"):
        store.place_job("j-1", "s", EXPL, now=112.0)
    store.fence(None)
    assert [j.id for j in store.list_jobs()] == ["j-1"], "nothing half-written by the deposed leader"
    assert store.get_job("j-1").state is JobState.PENDING


def run_together(*calls: Callable[[], None]) -> None:
    """Each call in a thread of its own, started together; re-raises the first failure."""
    start, errors = threading.Barrier(len(calls)), []

    def run(call: Callable[[], None]) -> None:
        start.wait()
        try:
            call()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_two_replicas_keep_one_audit_chain_and_one_copy_of_each_submission(replicas):
    a, b = replicas(), replicas()
    sealed: list[AuditRecord] = []
    submitted: dict[str, list[list[str]]] = {}

    def work(store: Store, name: str) -> None:
        for i in range(40):
            record = AuditRecord(0, float(i), name, "job.submit", f"{name}-{i}")
            sealed.append(store.append_audit(record, lambda r: replace(r, hash=r.digest())))
            request = SubmitRequest("alice", f"r-{i}", "sha", float(i))
            job = Job(id=f"{name}-j-{i}", spec=make_spec(), created_at=float(i), updated_at=float(i))
            submitted.setdefault(f"r-{i}", []).append(store.add_jobs([job], request))

    run_together(lambda: work(a, "a"), lambda: work(a, "a2"), lambda: work(b, "b"), lambda: work(b, "b2"))
    chain = sorted(sealed, key=lambda r: r.seq)
    assert [r.seq for r in chain] == list(range(1, 161))
    assert all(r.prev == before.hash for before, r in pairwise(chain)), "no record links to a stale head"
    assert a.audit_head() == b.audit_head() == (160, chain[-1].hash)
    assert all(len({tuple(ids) for ids in answers}) == 1 for answers in submitted.values()), "one answer a request"
    assert len(b.list_jobs()) == 40, "each request stored its job once"


def test_two_replicas_racing_for_the_lease_leave_one_holder_a_term(replicas):
    stores = [replicas(), replicas()]
    contenders = [(s, f"{i}-{h}") for i, s in enumerate(stores) for h in "xy"]
    for term in range(1, 6):
        now = term * 100.0   # every earlier lease (ttl 10) has lapsed
        got: list[Leadership] = []

        def contend(store: Store, holder: str, now: float = now, got: list[Leadership] = got) -> None:
            got.append(store.acquire_leadership(holder, f"{holder}:1", now, 10.0))

        run_together(*(partial(contend, s, h) for s, h in contenders))
        assert len(set(got)) == 1, f"every contender sees the one winner: {got}"
        assert (got[0].term, got[0].since) == (term, now)
        assert stores[0].leadership() == stores[1].leadership() == got[0]


def test_a_replica_deposed_by_another_cannot_write(replicas):
    old, new = replicas(), replicas()
    now = [105.0]
    old.fence(old.acquire_leadership("old", "x:1", now=100.0, ttl_s=10.0).term, lambda: now[0])
    add(old, "j-1")
    took = new.acquire_leadership("new", "y:1", now=111.0, ttl_s=10.0)
    new.fence(took.term, lambda: now[0])
    now[0] = 112.0
    seal = lambda r: replace(r, hash=r.digest())
    for write in (lambda: add(old, "j-2"), lambda: old.place_job("j-1", "s", EXPL, now=112.0),
                  lambda: old.append_audit(AuditRecord(0, 112.0, "old", "x", "y"), seal),
                  lambda: old.set_meta("k", "old")):
        with pytest.raises(Deposed, match="another term"):
            write()
    assert new.place_job("j-1", "s", EXPL, now=113.0).number == 1
    assert new.append_audit(AuditRecord(0, 113.0, "new", "x", "y"), seal).seq == 1
    assert old.get_meta("k") == "" and [j.id for j in old.list_jobs()] == ["j-1"], "the deposed wrote nothing"
