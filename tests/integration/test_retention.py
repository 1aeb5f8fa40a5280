"""Retention through a real federation: the scheduling loop removes jobs past the policy's
`spec.retention.jobs`, and what users see afterwards (ListJobs, GetJob, GetUsage, a dependant) is right."""
from __future__ import annotations

import pytest
import yaml

from federation.audit import read
from federation.errors import NotFound
from federation.v1 import federation_pb2 as pb
from tests.conftest import make_spec
from tests.integration.harness import CONFIGS, AgentStream, admin_client, register, site_stub, start
from tests.waiting import wait_for


def policy_keeping_jobs(tmp_path, keep: str):
    data = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    data["spec"]["retention"] = {"jobs": keep}
    path = tmp_path / "retention-policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def status(job_id: str, state) -> pb.AttemptStatus:
    return pb.AttemptStatus(job_id=job_id, attempt=1, state=state)


def test_jobs_past_the_retention_leave_the_list_and_keep_their_usage_and_their_dependants(tmp_path):
    federation = start(tmp_path, policy_keeping_jobs(tmp_path, "1s"))
    try:
        with admin_client(federation) as client:
            stub, channel = site_stub(federation)
            register(stub)
            stub.Heartbeat(pb.HeartbeatRequest(name="eu-west"), timeout=5)
            agent = AgentStream(stub, "eu-west")
            first = client.submit(make_spec("first", resources={"cpus": 0.5}))
            longer = client.submit(make_spec("longer", resources={"cpus": 0.5}))
            wait_for(lambda: {a.job_id for a in agent.next_assignments()} == {first.id, longer.id}, 5, "both placed")
            agent.report([status(first.id, pb.ATTEMPT_STATE_RUNNING), status(longer.id, pb.ATTEMPT_STATE_RUNNING)])
            wait_for(lambda: longer.status().state == "running", 5, "both running")
            then = client.submit(make_spec("then", resources={"cpus": 0.5},
                                           dependencies={"after_ok": [first.id, longer.id]}))
            agent.report([status(first.id, pb.ATTEMPT_STATE_SUCCEEDED), status(longer.id, pb.ATTEMPT_STATE_RUNNING)])

            wait_for(lambda: first.id not in {j.id for j in client.jobs()}, 20, "the first job removed")
            with pytest.raises(NotFound, match="succeeded and was removed after the retention"):
                first.status()
            assert {j.id for j in client.jobs()} == {longer.id, then.id}, "what runs or waits stays"
            (row,) = client.usage(group_by=["site"])
            assert row["site"] == "eu-west" and row["attempts"] == 2, "the removed job's attempt is still counted"
            wanted = f"held: after_ok {longer.id}: not succeeded yet (running)"   # the removed one is met
            wait_for(lambda: then.placement.summary == wanted, 5, "the dependant held by the running job only")

            agent.report([status(longer.id, pb.ATTEMPT_STATE_SUCCEEDED)])
            wait_for(lambda: then.status().state == "placed", 5, "the dependant placed: both succeeded")
            (compacted, *_) = read(tmp_path / "fed.db", action="jobs.compacted")
            assert compacted.actor == "federation" and compacted.detail["removed"] >= 1
            assert compacted.detail["retention_s"] == 1.0
            agent.close()
            channel.close()
    finally:
        federation.stop(grace=0)
