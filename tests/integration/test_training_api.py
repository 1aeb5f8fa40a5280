"""Federated training over the real API: what is refused at submission, who may see a training,
and what a site may send up (a real gRPC server with mTLS and a SQLite file; agents by hand)."""
from __future__ import annotations

import grpc
import pytest

from federation.client import Client, Training
from federation.errors import InvalidSpec, NotFound
from federation.identity import scopes
from federation.pki import issue
from federation.v1 import federation_pb2 as pb
from tests.conftest import make_spec
from tests.integration.harness import (
    CONFIGS,
    AgentStream,
    admin_client,
    register,
    site_stub,
    start,
)
from tests.waiting import wait_for


def spec(**body) -> dict:
    return {"apiVersion": "federation/v1", "kind": "FederatedTraining", "metadata": {"name": "t", "tenant": "research"},
            "spec": {"dataset": "patient-records-eu", "sites": {"min": 1}, "rounds": 2,
                     "local_step": {"entrypoint": "training.examples.digits:local_step"}, **body}}


def test_a_training_is_refused_at_submission_when_it_could_never_run(federation, client, eu_site):
    with pytest.raises(InvalidSpec, match="spec.dataset: no site holds a dataset named 'nowhere'"):
        client.submit_training(spec(dataset="nowhere"))
    with pytest.raises(InvalidSpec, match=r"spec.sites.min: 2 sites wanted, but only 1 hold patient-records-eu"):
        client.submit_training(spec(sites={"min": 2}))
    with pytest.raises(InvalidSpec, match="spec.rounds"):
        client.submit_training(spec(rounds=0))
    assert client.trainings() == [], "nothing stored"


def test_only_its_tenants_see_a_training(federation, client, eu_site, tmp_path):
    run = client.submit_training(spec())
    assert [t.id for t in client.trainings()] == [run.id]
    pki = federation.pki
    bob = issue(pki["ca"], tmp_path, "bob", units=tuple(scopes("submitter", ("billing",))))
    with Client(federation.address, ca=pki["ca"].cert, cert=bob.cert, key=bob.key, timeout=5) as other:
        assert other.trainings() == []
        for call in (lambda: Training(other, run.id).status(), lambda: Training(other, run.id).cancel(),
                     lambda: Training(other, run.id).model()):
            with pytest.raises(NotFound):
                call()
    with pytest.raises(NotFound, match="no model yet"):
        run.model()
    assert run.cancel().state == "cancelled"


def test_outputs_of_data_that_may_not_leave_are_refused_and_audited(tmp_path):
    from federation.audit import read
    from federation.client import Job
    policy = tmp_path / "policy.yaml"
    text = (CONFIGS / "policy.yaml").read_text()
    policy.write_text(text.replace("allow_staging: false\n      may_cross_border: [results]\n",
                                   "allow_staging: false\n      may_cross_border: [nothing]\n"))
    assert policy.read_text() != text
    server = start(tmp_path, policy)
    admin = admin_client(server)
    us_site, channel = site_stub(server, "us-east")
    register(us_site, "us-east", "US", "us-east", datasets=(("claims-us", "hipaa"),), labels={"baa": "true"})
    (stored,) = server.control.admission.submit(make_spec("claims", tenant="billing", datasets=["claims-us"]),
                                                "admin")
    job = Job(admin, stored.id)
    agent = AgentStream(us_site, "us-east")
    (_,) = wait_for(lambda: agent.next_assignments(), 5, "an assignment")
    agent.outbox.put(pb.ConnectRequest(site="us-east", outputs=[
        pb.Output(job_id=job.id, attempt=1, name="rows.csv", data=b"patient,42")], statuses=[
        pb.AttemptStatus(job_id=job.id, attempt=1, state=pb.ATTEMPT_STATE_SUCCEEDED)], complete=False))
    wait_for(lambda: job.status().state == "succeeded", 5, "success")
    with pytest.raises(NotFound):
        server.control.store.get_artifact(job.id, 1, "rows.csv")
    assert wait_for(lambda: read(tmp_path / "fed.db", action="output.refused"), 5, "the refusal audited")
    agent.close()
    admin.close()
    channel.close()
    server.stop(grace=0)


def test_a_site_may_not_flood_an_attempt_with_outputs(federation, client, eu_site, eu_agent):
    (stored,) = federation.control.admission.submit(
        make_spec("many", tenant="research", datasets=["patient-records-eu"]), "admin")
    wait_for(lambda: eu_agent.next_assignments(), 5, "an assignment")
    eu_agent.outbox.put(pb.ConnectRequest(site="eu-west", outputs=[
        pb.Output(job_id=stored.id, attempt=1, name=f"f{i}", data=b"x") for i in range(17)], complete=False))
    with pytest.raises(grpc.RpcError) as e:
        for _ in range(5):
            eu_agent.next_assignments()
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 16 files" in e.value.details()
