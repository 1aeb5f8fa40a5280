"""Run-time estimates from history, through a real control plane over a SQLite file: a running job
with no time limit is planned to end when its earlier runs did, so a large job behind it gets a
reservation; after a restart the history is read back; past its estimate it is taken to run on."""
from __future__ import annotations

from federation.control import ControlPlane
from federation.control.reports import AttemptReport
from federation.jobs import AttemptState, Job, new_job_id
from federation.local import CONFIGS
from federation.sites import Capacity, SiteRecord
from federation.spec import load_policy
from federation.store import NewSubmission, SQLiteStore
from tests.conftest import make_spec

SITE = "eu-west"


class World:
    def __init__(self, store: SQLiteStore) -> None:
        self.now = 1000.0
        self.store = store
        self.plane = self.restart()

    def restart(self) -> ControlPlane:
        self.plane = ControlPlane(self.store, load_policy(CONFIGS / "policy.yaml"), clock=lambda: self.now)
        return self.plane

    def at(self, now: float) -> None:
        self.now = now
        self.store.heartbeat(SITE, None, now)

    def submit(self, name: str, cpus: float, **body) -> str:
        job = Job(id=new_job_id(), spec=make_spec(name, tenant="load", resources={"cpus": cpus},
                                                  placement={"sites": [SITE]}, **body),
                  created_at=self.now, updated_at=self.now)
        self.store.add_many([NewSubmission([job], None)])
        return job.id

    def report(self, job_id: str, state: AttemptState) -> None:
        self.plane.reports.apply(SITE, [AttemptReport(job_id, 1, state)], [], False)

    def reservation(self, job_id: str):
        self.plane.cycle.run_once()
        return self.plane.core.reservations.get(job_id)


def test_a_running_job_is_planned_to_end_as_its_earlier_runs_did(tmp_path):
    store = SQLiteStore(tmp_path / "fed.db")
    store.upsert_site(SiteRecord(SITE, "DE", "eu-west-1", capacity=Capacity(cpus=2, memory=8 << 30),
                                 registered_at=1000.0, last_heartbeat=1000.0))
    world = World(store)
    for started, ran in ((1000.0, 500.0), (2000.0, 700.0)):   # two earlier runs: 600 s on average
        world.at(started)
        run = world.submit("prep", 2)
        assert world.plane.cycle.run_once().decisions[0].job_id == run
        world.report(run, AttemptState.RUNNING)
        world.at(started + ran)
        world.report(run, AttemptState.SUCCEEDED)

    world.at(5000.0)
    again = world.submit("prep", 2)
    world.plane.cycle.run_once()
    world.report(again, AttemptState.RUNNING)
    big = world.submit("big", 2, time_limit="1h")
    world.at(5100.0)
    reserved = world.reservation(big)
    assert reserved is not None and (reserved.site, reserved.start) == (SITE, 5600.0)

    world.restart()   # the history is read back from the store
    assert world.reservation(big).start == 5600.0

    world.at(5700.0)   # past its estimate: taken to run on, so no start can be promised
    assert world.reservation(big) is None
