"""A spec submitted through the SDK arrives as written, types included, over the real gRPC server:
at the federation, in what it answers, and in the site's assignment."""
from __future__ import annotations

import json

import grpc
import pytest

from federation.service.spec_wire import spec_document
from federation.v1 import federation_pb2 as pb
from tests.unit.test_spec_wire import RUNTIME_ENV, typed
from tests.waiting import wait_for

LABELS = {"team": "nlp", "cost-centre": "42"}


def test_a_job_arrives_as_written(client, eu_agent):
    job = client.submit({"metadata": {"name": "typed", "labels": LABELS},
                         "spec": {"entrypoint": "python x.py", "runtime_env": RUNTIME_ENV, "resources": {"cpus": 1}}})
    raw = client._stub
    stored = spec_document(raw.GetJob(pb.GetJobRequest(id=job.id), timeout=5).job.spec)
    (a,) = wait_for(lambda: eu_agent.next_assignments(), 5, "an assignment")
    for doc in (stored, spec_document(a.spec)):
        assert typed(doc["spec"]["runtime_env"]) == typed(RUNTIME_ENV)
        assert doc["metadata"]["labels"] == LABELS


def test_a_training_step_config_arrives_as_written(client, eu_agent):
    config = {"epochs": 2, "batch_size": 32, "lr": 0.1, "shuffle": True, "layers": [64, 32]}
    run = client.submit_training({
        "apiVersion": "federation/v1", "kind": "FederatedTraining", "metadata": {"name": "t", "labels": LABELS},
        "spec": {"dataset": "patient-records-eu", "sites": {"min": 1}, "rounds": 1,
                 "local_step": {"entrypoint": "training.examples.digits:local_step", "config": config}}})
    raw = client._stub
    stored = spec_document(raw.GetTraining(pb.GetTrainingRequest(id=run.id), timeout=5).training.spec)
    assert typed(stored["spec"]["local_step"]["config"]) == typed(config)
    assert stored["metadata"]["labels"] == LABELS
    (step,) = wait_for(lambda: eu_agent.next_assignments(), 5, "the local step")
    sent = json.loads(spec_document(step.spec)["spec"]["runtime_env"]["env_vars"]["FEDCTL_TRAINING_CONFIG"])
    assert typed({k: sent[k] for k in config}) == typed(config)


@pytest.mark.parametrize("value, error", [
    ('{"a": ' * 220 + "1" + "}" * 220, "nested more than 32 levels deep"),
    ("NaN", "NaN is not a number a spec may hold"),
    ("1" + "0" * 30, "does not fit in 64 bits"),
])
def test_what_the_store_could_not_read_back_is_refused_and_the_federation_goes_on(client, eu_agent, value, error):
    """A raw client (no SDK) sends what JSON can say but a stored spec cannot hold: refused as bad
    input, nothing stored, and the scheduler and job listing carry on for everyone."""
    raw = client._stub
    doc = ('{"apiVersion": "federation/v1", "kind": "Job", "metadata": {"name": "bad"}, '
           '"spec": {"entrypoint": "e", "runtime_env": {"config": {"v": ' + value + "}}}}")
    with pytest.raises(grpc.RpcError) as e:
        raw.SubmitJob(pb.SubmitJobRequest(spec=pb.JobSpec(json=doc)), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error in e.value.details()
    assert client.jobs() == []
    client.submit({"metadata": {"name": "after"}, "spec": {"entrypoint": "python x.py", "resources": {"cpus": 1}}})
    (a,) = wait_for(lambda: eu_agent.next_assignments(), 5, "an assignment")
    assert spec_document(a.spec)["metadata"]["name"] == "after"
