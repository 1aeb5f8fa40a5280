"""Time limits and reservations through a real federation (gRPC, SQLite, a scripted site): a job
past its time_limit is stopped at its site and fails as timed out, never requeued; a large job
that cannot start says where and when it is reserved, and long work does not start in its way."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from federation.v1 import federation_pb2 as pb
from tests.conftest import make_spec
from tests.integration.harness import CONFIGS, AgentStream, admin_client, register, run_on, site_stub, start
from tests.waiting import wait_for


@contextlib.contextmanager
def federation_with_site(tmp_path: Path, policy: Path) -> Iterator[tuple]:
    """A real federation with this policy, its admin client and one scripted site, eu-west."""
    federation = start(tmp_path, policy)
    try:
        with admin_client(federation) as client:
            stub, channel = site_stub(federation)
            register(stub)
            agent = AgentStream(stub, "eu-west")
            try:
                yield client, agent
            finally:
                agent.close()
                channel.close()
    finally:
        federation.stop(grace=0)


def test_a_job_past_its_time_limit_is_stopped_and_fails_as_timed_out(tmp_path):
    with federation_with_site(tmp_path, CONFIGS / "policy.yaml") as (client, agent):
        short = client.submit(make_spec("short", time_limit="1s"))
        run_on(agent, short)
        # Past its limit, it leaves the site's desired set: the site stops it.
        wait_for(lambda: agent.next_assignments() == [], 10, "the job past its limit no longer desired")
        agent.report([pb.AttemptStatus(job_id=short.id, attempt=1, state=pb.ATTEMPT_STATE_STOPPED)])
        final = short.wait(timeout=5)
        assert final.state == "failed" and final.message.startswith("failed on eu-west: timed out: ran")
        assert [a.state for a in final.attempts] == ["failed"], "a timed-out job is not requeued"


def test_a_queue_gives_its_time_limit_to_the_jobs_that_declare_none(tmp_path):
    policy = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    clinical = next(q for q in policy["spec"]["queues"] if q["name"] == "clinical")
    clinical["time_limit"] = "1s"   # inherited by oncology, its child
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    with federation_with_site(tmp_path, tmp_path / "policy.yaml") as (client, agent):
        own = client.submit(make_spec("own", tenant="oncology", time_limit="1h"))
        run_on(agent, own)
        undeclared = client.submit(make_spec("undeclared", tenant="oncology"))
        wait_for(lambda: undeclared.id in [a.job_id for a in agent.next_assignments()], 5, "its assignment")
        agent.report([pb.AttemptStatus(job_id=j.id, attempt=1, state=pb.ATTEMPT_STATE_RUNNING)
                      for j in (own, undeclared)])
        wait_for(lambda: [a.job_id for a in agent.next_assignments()] == [own.id], 10,
                 "only the job without a time limit of its own stopped")
        agent.report([pb.AttemptStatus(job_id=undeclared.id, attempt=1, state=pb.ATTEMPT_STATE_STOPPED),
                      pb.AttemptStatus(job_id=own.id, attempt=1, state=pb.ATTEMPT_STATE_RUNNING)])
        assert "past its time_limit of 1s" in undeclared.wait(timeout=5).message
        assert own.status().state == "running"


def test_a_large_job_reserves_the_site_and_long_work_waits_behind_it(tmp_path):
    with federation_with_site(tmp_path, CONFIGS / "policy.yaml") as (client, agent):
        sizes = {s.name: s.capacity["cpus"] for s in client.sites()}
        cpus = sizes["eu-west"]
        running = client.submit(make_spec("running", time_limit="1h", resources={"cpus": cpus / 2},
                                          placement={"sites": ["eu-west"]}))
        run_on(agent, running)
        big = client.submit(make_spec("big", time_limit="1h", resources={"cpus": cpus},
                                      placement={"sites": ["eu-west"]}))
        reserved = wait_for(lambda: "reserved eu-west from" in (m := big.status().message) and m, 10,
                            "the large job's reservation")
        assert "when the work running there is due to end" in reserved
        entries, _ = client.queue()
        (entry,) = [e for e in entries if e.job.id == big.id]
        assert entry.reserved_site == "eu-west" and 3500 < entry.reserved_at - time.time() <= 3600
        assert entry.to_dict()["reserved"]["site"] == "eu-west"
        long = client.submit(make_spec("long", time_limit="2h", resources={"cpus": 1},
                                       placement={"sites": ["eu-west"]}))
        (verdict,) = wait_for(lambda: (v := long.placement.verdicts) and v[0].reason_code == "reserved" and v,
                              10, "the long job held back by the reservation")
        assert long.status().state == "pending" and "reserved this site" in verdict.reason
        short = client.submit(make_spec("short", time_limit="10m", resources={"cpus": 1},
                                        placement={"sites": ["eu-west"]}))
        wait_for(lambda: short.status().state == "placed", 10, "the short job, which ends before it, placed")
