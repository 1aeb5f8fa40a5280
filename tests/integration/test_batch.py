"""`SubmitJobs` through a real federation: many submissions in one call, each stored or refused on
its own, named by its place in the call; a retried call stores nothing twice."""
from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
import pytest
import yaml

from federation.cli.main import main
from federation.client import Client, Job, JobArray
from federation.errors import InvalidSpec, ResourceExhausted, UnknownDataset, Unsatisfiable
from federation.local import CONFIGS
from federation.v1 import federation_pb2 as pb
from tests.conftest import make_spec
from tests.integration.harness import admin_client, start


def test_each_submission_of_a_batch_is_stored_or_refused_on_its_own(client, eu_site):
    results = client.submit_many([make_spec("one"), make_spec("lost", datasets=["patient-records"]),
                                  make_spec("sweep", array="0-2"), make_spec("huge", resources={"cpus": 64})])
    one, lost, sweep, huge = results
    assert isinstance(one, Job) and one.status().state in ("pending", "placed")
    assert isinstance(lost, UnknownDataset) and lost.message.startswith(
        "specs[1]: spec.datasets[0]: unknown dataset 'patient-records'")
    assert isinstance(sweep, JobArray) and len(sweep) == 3
    assert isinstance(huge, Unsatisfiable) and huge.message.startswith("specs[3]: spec.resources: no site")
    assert sorted(j.name for j in client.jobs()) == ["one", "sweep", "sweep", "sweep"]


def test_a_spec_the_client_cannot_read_sends_nothing(client):
    with pytest.raises(InvalidSpec, match="spec.resources.gpus"):
        client.submit_many([make_spec("fine"), {"metadata": {"name": "x"}, "spec": {"entrypoint": "e",
                                                                                    "resources": {"gpus": -2}}}])
    with pytest.raises(InvalidSpec, match=r"specs\[0\]: expected a path, dict or JobSpec, got int"):
        client.submit_many([3])
    assert client.jobs() == []


def test_items_the_federation_cannot_read_are_refused_by_name_and_the_rest_stored(client):
    good = pb.SubmitJobRequest(spec=pb.JobSpec(json=make_spec("good").model_dump_json()), request_id="r-1")
    bad_name = pb.SubmitJobRequest(spec=pb.JobSpec(json=json.dumps(
        {"metadata": {"name": "Bad Name"}, "spec": {"entrypoint": "x"}})))
    bad_id = pb.SubmitJobRequest(spec=good.spec, request_id="no spaces allowed")
    r = client._stub.SubmitJobs(pb.SubmitJobsRequest(items=[good, bad_name, bad_id]), timeout=5)
    assert r.results[0].submitted.job.id and not r.results[0].error_code
    assert [x.error_code for x in r.results[1:]] == ["INVALID_SPEC", "INVALID_SPEC"]
    assert r.results[1].error_message.startswith("items[1]: metadata.name")
    assert r.results[2].error_message.startswith("items[2]: request_id")
    assert [j.name for j in client.jobs()] == ["good"]
    with pytest.raises(grpc.RpcError) as e:
        client._stub.SubmitJobs(pb.SubmitJobsRequest(items=[good] * 1001), timeout=5)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "items: at most 1000" in e.value.details()
    assert [j.name for j in client.jobs()] == ["good"]


def test_a_retried_batch_and_a_request_id_given_twice_store_each_job_once(client):
    item = pb.SubmitJobRequest(spec=pb.JobSpec(json=make_spec("once").model_dump_json()), request_id="same")
    other = pb.SubmitJobRequest(spec=pb.JobSpec(json=make_spec("other").model_dump_json()), request_id="other")
    first = client._stub.SubmitJobs(pb.SubmitJobsRequest(items=[item, item, other]), timeout=5)
    again = client._stub.SubmitJobs(pb.SubmitJobsRequest(items=[other, item]), timeout=5)
    ids = [r.submitted.job.id for r in first.results]
    assert ids[0] == ids[1] and [r.submitted.job.id for r in again.results] == [ids[2], ids[0]]
    assert sorted(j.name for j in client.jobs()) == ["once", "other"]


@contextmanager
def limited(tmp_path, **limits) -> Iterator[Client]:
    """An admin's client of a federation whose policy has these `spec.limits`."""
    policy = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    policy["spec"].setdefault("limits", {}).update(limits)
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    federation = start(tmp_path, tmp_path / "policy.yaml")
    try:
        with admin_client(federation) as client:
            yield client
    finally:
        federation.stop(grace=0)


def test_a_batch_counts_its_own_jobs_against_the_tenants_waiting_limit_and_the_callers_rate(tmp_path):
    with limited(tmp_path, pending_per_tenant=3, submission_burst=5) as client:
        results = client.submit_many([make_spec(f"j{i}", tenant="research") for i in range(4)])
        assert [type(r).__name__ for r in results] == ["Job", "Job", "Job", "ResourceExhausted"]
        assert "specs[3]: tenant research has 3 jobs waiting" in results[3].message
        refused = client.submit_many([make_spec(f"k{i}", tenant="other") for i in range(6)])
        assert [r.message for r in refused] == [f"specs[{i}]: 6 submissions in one call pass admin's burst of 5"
                                                " (policy spec.limits.submissions_per_second); send fewer at a time"
                                                for i in range(6)]
        assert len(client.jobs()) == 3


def test_a_call_refused_midway_keeps_what_went_before_and_names_the_rest(tmp_path):
    with limited(tmp_path, submission_burst=600, submissions_per_second=0.01) as client:
        results = client.submit_many([make_spec(f"j{i}") for i in range(700)])   # two calls: 500, then 200
        assert all(isinstance(r, Job) for r in results[:500])
        assert all(isinstance(r, ResourceExhausted) for r in results[500:])
        assert results[500].message.startswith("specs[500]: admin submits faster than its limit")
        assert len(client.jobs(limit=None)) == 500


def test_the_cli_submits_several_files_and_names_the_one_refused(federation, client, eu_site, tmp_path, capsys):
    pki = federation.pki
    flags = ["--address", federation.address, "--ca", str(pki["ca"].cert), "--cert", str(pki["admin"].cert),
             "--key", str(pki["admin"].key)]
    files = []
    for name, extra in (("a", ""), ("b", "  datasets: [patient-records]\n"), ("c", "  array: 0-1\n")):
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(f"kind: Job\nmetadata: {{name: {name}}}\nspec:\n  entrypoint: echo\n{extra}")
    assert main(["submit", *map(str, files), *flags]) == 2
    out = capsys.readouterr()
    assert len(out.out.split()) == 3 and all(i.startswith("j-") for i in out.out.split())
    assert out.err.startswith(f"error[UNKNOWN_DATASET]: {files[1]}: spec.datasets[0]: unknown dataset")
    (tmp_path / "bad.yaml").write_text("kind: Job\nmetadata: {name: bad}\nspec:\n  entrypoint: echo\n  nope: 1\n")
    assert main(["submit", str(files[0]), str(tmp_path / "bad.yaml"), *flags]) == 2
    assert "bad.yaml" in capsys.readouterr().err
    assert sorted(j.name for j in client.jobs()) == ["a", "c", "c"]   # the bad file sent nothing


def test_concurrent_calls_never_pass_a_tenants_waiting_limit_together(tmp_path):
    with limited(tmp_path, pending_per_tenant=50) as client:
        with ThreadPoolExecutor(6) as pool:
            calls = list(pool.map(lambda k: client.submit_many([make_spec(f"c{k}-{i}") for i in range(20)]), range(6)))
        stored = [r for results in calls for r in results if isinstance(r, Job)]
        assert len(stored) == 50 == len(client.jobs(limit=None))
        assert all(isinstance(r, (Job, ResourceExhausted)) for results in calls for r in results)
