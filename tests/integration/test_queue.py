"""The queue, preemption and usage through a real federation."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from federation.v1 import federation_pb2 as pb
from tests.conftest import make_spec
from tests.integration.harness import CONFIGS, AgentStream, admin_client, register, run_on, site_stub, start
from tests.waiting import wait_for


def test_the_queue_lists_pending_work_in_fair_share_order(client):
    jobs = [client.submit(make_spec(f"onc-{i}", tenant="oncology")) for i in range(3)]
    jobs += [client.submit(make_spec(f"res-{i}", tenant="research")) for i in range(3)]
    held = client.submit(make_spec("later", tenant="research", dependencies={"after_ok": [jobs[0].id]}))
    entries, queues = client.queue()
    order = [e.job.queue for e in entries]
    # Both are owed their share: research goes second though all of oncology was submitted first.
    assert order[:2] == ["oncology", "research"] and order.count("research") == 4
    assert entries[-1].job.id == held.id and entries[-1].tier == -1 and entries[-1].held.startswith("after_ok")
    assert entries[0].tier == 0 and entries[0].share == 0
    standing = {q.name: q for q in queues}
    assert standing["oncology"].parent == "clinical" and standing["oncology"].pending == 3
    assert standing["research"].limit == {"gpu:H100": 2.0}
    only, _ = client.queue(queue="research")
    assert {e.job.queue for e in only} == {"research"}


def quick_preemption_policy(tmp_path: Path, **preemption) -> Path:
    """The shipped policy with preemption that protects no minimum runtime."""
    data = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    data["spec"]["preemption"] = {"min_runtime": 0, **preemption}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_high_priority_job_preempts_low_priority_work_which_is_requeued_with_its_history(tmp_path):
    federation = start(tmp_path, quick_preemption_policy(tmp_path))
    try:
        with admin_client(federation) as client:
            stub, channel = site_stub(federation)
            register(stub)
            agent = AgentStream(stub, "eu-west")
            low = client.submit(make_spec("low", priority="low", resources={"cpus": 4}))
            run_on(agent, low)
            high = client.submit(make_spec("high", priority="high", resources={"cpus": 4}))
            # The low job leaves the site's desired set: the federation asks the site to stop it.
            wait_for(lambda: agent.next_assignments() == [], 5, "the low job no longer desired")
            p = high.placement
            assert p.summary == f"waiting: stopping {low.id} on eu-west to make room"
            agent.report([pb.AttemptStatus(job_id=low.id, attempt=1, state=pb.ATTEMPT_STATE_STOPPED)])
            requeued = wait_for(lambda: (s := low.status()).state == "pending" and s, 5, "the low job requeued")
            assert requeued.attempts[0].state == "preempted"
            assert requeued.attempts[0].message == f"preempted for {high.id} (priority: {high.id} outranks it)"
            (a,) = wait_for(lambda: agent.next_assignments(), 5, "the high job's assignment")
            assert a.job_id == high.id
            agent.report([pb.AttemptStatus(job_id=high.id, attempt=1, state=pb.ATTEMPT_STATE_SUCCEEDED)])
            (again,) = wait_for(lambda: agent.next_assignments(), 5, "the low job again")
            assert (again.job_id, again.attempt) == (low.id, 2)
            agent.report([pb.AttemptStatus(job_id=low.id, attempt=2, state=pb.ATTEMPT_STATE_SUCCEEDED)])
            final = low.wait(timeout=5)
            assert final.state == "succeeded" and [x.state for x in final.attempts] == ["preempted", "succeeded"]
            agent.close()
            channel.close()
    finally:
        federation.stop(grace=0)


def test_queue_and_usage_from_the_cli(federation, client, capsys):
    from federation.cli.main import main
    pki = federation.pki
    flags = ["--address", federation.address, "--ca", str(pki["ca"].cert), "--cert", str(pki["admin"].cert),
             "--key", str(pki["admin"].key)]
    jobs = [client.submit(make_spec(f"q{i}", tenant="research")) for i in range(2)]
    assert main(["queue", "--format", "json", *flags]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [j["id"] for j in out["jobs"]] == [j.id for j in jobs] and out["jobs"][0]["queue"] == "research"
    assert main(["queue", *flags]) == 0
    table = capsys.readouterr().out
    assert "0% of deserved" in table and jobs[0].id in table
    assert main(["usage", "--by", "queue,site", "--since", "7d", "--csv", "-", *flags]) == 0
    assert capsys.readouterr().out.splitlines()[0] == \
        "queue,site,attempts,cpu_seconds,memory_gib_seconds,gpu_seconds,cost"
    assert main(["usage", "--by", "site", "--cost", *flags]) == 0
    assert "COST" in capsys.readouterr().out
    assert main(["usage", "--since", "yesterday", *flags]) != 0
    assert "--since/--until: 'yesterday' is not a duration" in capsys.readouterr().err
