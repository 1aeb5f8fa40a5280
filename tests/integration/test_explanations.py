"""Explanations at scale, through a real control plane over a SQLite file: each names a bounded
number of sites while its summary counts them all, and an unchanged one is not written again."""
from __future__ import annotations

import itertools

from federation.control import ControlPlane
from federation.control.cycle import MAX_VERDICTS
from federation.jobs import Job, new_job_id
from federation.local import CONFIGS
from federation.sites import Capacity, SiteRecord
from federation.spec import load_policy
from federation.store import NewSubmission, SQLiteStore
from tests.conftest import make_spec


def test_many_sites_many_waiting_jobs_bounded_explanations_written_once(tmp_path):
    clock = itertools.count(1000.0, 0.5)
    store = SQLiteStore(tmp_path / "fed.db")
    plane = ControlPlane(store, load_policy(CONFIGS / "policy.yaml"), clock=lambda: next(clock))
    for i in range(40):
        store.upsert_site(SiteRecord(f"s{i:02}", "DE", f"r{i}", capacity=Capacity(cpus=1, memory=8 << 30),
                                     registered_at=1000.0, last_heartbeat=1000.0))
    spec = make_spec("load", tenant="load", resources={"cpus": 1})
    store.add_many([NewSubmission([Job(id=new_job_id(), spec=spec, created_at=1.0, updated_at=1.0)], None)
                    for _ in range(100)])
    result = plane.cycle.run_once()
    assert len(result.decisions) == 40 and len(result.unplaced) == 60
    placed = store.get_job(result.decisions[0].job_id).explanation
    assert placed.verdicts[0][:2] == (result.decisions[0].site, True) and len(placed.verdicts) <= MAX_VERDICTS
    waiting = store.get_job(result.unplaced[0].job_id).explanation
    assert waiting.summary == "waiting: no site can take it now (40 no-free-capacity)"
    assert len(waiting.verdicts) == MAX_VERDICTS
    plane.cycle.run_once()   # nothing changed for the waiting jobs: their explanations stay as written
    assert store.get_job(result.unplaced[0].job_id).explanation.evaluated_at == waiting.evaluated_at
