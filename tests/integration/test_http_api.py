"""The HTTP/JSON API of a real federation over mutual TLS: what the SDK does, with the same refusals
as gRPC for bad input, for missing or wrong credentials and for another tenant's job."""
from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from federation.client import Client
from federation.errors import FederationError
from federation.http.openapi import document
from federation.identity import scopes
from federation.pki import init_pki, issue
from federation.v1 import federation_pb2 as pb
from tests.conftest import make_spec
from tests.integration.harness import admin_client, start

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def federation(tmp_path):
    server = start(tmp_path, http={"listen": "127.0.0.1:0"})
    pki, directory = server.pki, tmp_path / "pki"
    for name, units in (("alice", scopes("submitter", ("default",))), ("bob", scopes("submitter", ("research",))),
                        ("carol", scopes("submitter", ("default",))), ("prom", scopes("monitor"))):
        pki[name] = issue(pki["ca"], directory, name, units=tuple(units))
    pki["stranger"] = init_pki(tmp_path / "other-ca", clients=("admin",))["admin"]   # another CA's admin
    yield server
    server.stop(grace=0)


def call(fed, method: str, path: str, who: str | None = "alice", body: bytes | None = None,
         content_type: str = "application/json") -> tuple[int, object]:
    pki = fed.pki
    context = ssl.create_default_context(cafile=str(pki["ca"].cert))
    if who is not None:
        context.load_cert_chain(str(pki[who].cert), str(pki[who].key))
    request = urllib.request.Request(f"https://127.0.0.1:{fed.http.port}{path}", data=body, method=method,
                                     headers={"Content-Type": content_type} if method == "POST" else {})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as r:
            raw, status, kind = r.read(), r.status, r.headers.get_content_type()
    except urllib.error.HTTPError as e:
        raw, status, kind = e.read(), e.code, e.headers.get_content_type()
    return status, json.loads(raw) if kind == "application/json" else raw.decode()


def grpc_client(fed, who: str) -> Client:
    pki = fed.pki
    return Client(fed.address, ca=pki["ca"].cert, cert=pki[who].cert, key=pki[who].key, timeout=5)


def spec_json(**kw) -> bytes:
    return make_spec(**kw).model_dump_json().encode()


def test_submit_get_list_explain_logs_and_cancel_over_https(federation):
    status, submitted = call(federation, "POST", "/v1/jobs?request_id=r-1", body=spec_json(name="over-http"))
    assert status == 201, submitted
    job = submitted["job"]
    assert (job["name"], job["tenant"], job["state"]) == ("over-http", "default", "pending")
    again = call(federation, "POST", "/v1/jobs?request_id=r-1", body=spec_json(name="over-http"))[1]
    assert again["job"]["id"] == job["id"], "the same request id returns the job stored the first time"
    assert call(federation, "GET", f"/v1/jobs/{job['id']}")[1]["id"] == job["id"]
    listed = call(federation, "GET", "/v1/jobs?state=pending&limit=10")[1]
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    with grpc_client(federation, "alice") as c:
        assert c.get(job["id"]).name == "over-http", "the gRPC API sees the same job"
        explained = c.explain(job["id"])
    status, placement = call(federation, "GET", f"/v1/jobs/{job['id']}/explain")
    assert status == 200 and placement["summary"] == explained.summary
    assert call(federation, "GET", f"/v1/jobs/{job['id']}/logs") == (200, "")
    status, cancelled = call(federation, "POST", f"/v1/jobs/{job['id']}/cancel")
    assert status == 200 and cancelled["state"] == "cancelled"
    assert call(federation, "GET", "/v1/usage?group_by=tenant,site")[0] == 200
    status, queue = call(federation, "GET", "/v1/queue")
    assert status == 200 and queue["entries"] == [] and [q["name"] for q in queue["queues"]]
    assert call(federation, "GET", "/v1/sites")[1] == {"sites": []}


def test_jobs_record_who_submitted_them_and_list_by_submitter_within_the_callers_tenants(federation):
    mine = call(federation, "POST", "/v1/jobs", body=spec_json(name="alices"))[1]["job"]
    with grpc_client(federation, "carol") as carol:
        theirs = carol.submit(make_spec("carols"))
        assert carol.get(theirs.id).submitter == "carol" and mine["submitter"] == "alice"
        assert [j.id for j in carol.jobs(submitter="alice")] == [mine["id"]]
    listed = call(federation, "GET", "/v1/jobs?submitter=carol")[1]
    assert [(j["id"], j["submitter"]) for j in listed["jobs"]] == [(theirs.id, "carol")]
    # Another tenant's submitter learns nothing of alice's jobs by naming her.
    assert call(federation, "GET", "/v1/jobs?submitter=alice", who="bob")[1]["jobs"] == []
    with grpc_client(federation, "bob") as bob:
        assert bob.jobs(submitter="alice") == []


@pytest.mark.parametrize("spec", [
    {"metadata": {"name": "x", "tenant": "default"}, "spec": {"entrypoint": "true", "resourcez": {}}},
    {"metadata": {"name": "x", "tenant": "default"}, "spec": {"entrypoint": "true", "resources": {"cpus": -1}}},
    {"metadata": {"name": "x", "tenant": "default"}, "spec": {"entrypoint": "true", "datasets": ["nope"]}},
    {"metadata": {"name": "x", "tenant": "default"}, "spec": {"entrypoint": "true", "priority": "nope"}},
    {"metadata": {"name": "x", "tenant": "research"}, "spec": {"entrypoint": "true"}},   # not alice's tenant
    {"metadata": {"name": "x"}},
])
def test_bad_submissions_are_refused_as_grpc_refuses_them(federation, spec):
    with grpc_client(federation, "alice") as c:
        with pytest.raises(FederationError) as refused:
            c._call("SubmitJob", _pb_request(spec))
    status, body = call(federation, "POST", "/v1/jobs", body=json.dumps(spec).encode())
    assert (body["code"], body["message"]) == (refused.value.code.value, refused.value.message)
    assert 400 <= status < 500
    assert call(federation, "GET", "/v1/jobs")[1] == {"jobs": [], "next_page_token": ""}, "nothing was stored"


def _pb_request(spec: dict) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(spec=pb.JobSpec(json=json.dumps(spec)))


@pytest.mark.parametrize("body, content_type", [(b"{not json", "application/json"), (b"[]", "application/json"),
                                                 (b"metadata: {}", "application/yaml")])
def test_a_body_that_is_no_json_object_is_refused_with_a_reason(federation, body, content_type):
    status, answer = call(federation, "POST", "/v1/jobs", body=body, content_type=content_type)
    assert status == 400 and answer["code"] == "INVALID_SPEC" and answer["message"]


def test_another_tenants_job_is_not_found_for_reading_cancelling_or_its_logs(federation):
    job = call(federation, "POST", "/v1/jobs", body=spec_json(name="alices"))[1]["job"]
    with grpc_client(federation, "bob") as c:
        with pytest.raises(FederationError) as hidden:
            c.get(job["id"])
    for method, path in (("GET", f"/v1/jobs/{job['id']}"), ("POST", f"/v1/jobs/{job['id']}/cancel"),
                         ("GET", f"/v1/jobs/{job['id']}/explain"), ("GET", f"/v1/jobs/{job['id']}/logs")):
        status, body = call(federation, method, path, who="bob")
        assert (status, body["code"], body["message"]) == (404, "NOT_FOUND", hidden.value.message), path
    assert call(federation, "GET", "/v1/jobs", who="bob")[1]["jobs"] == []
    status, body = call(federation, "GET", "/v1/jobs?tenant=default", who="bob")
    assert status == 403 and body["code"] == "PERMISSION_DENIED"
    assert call(federation, "GET", f"/v1/jobs/{job['id']}")[1]["state"] == "pending", "still there, untouched"


def test_no_certificate_is_refused_and_another_cas_gets_no_connection(federation):
    with grpc_client(federation, "admin") as c:
        c.submit(make_spec("hidden"))
    for method, path in (("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/sites"),
                         ("POST", "/v1/console/sessions")):
        status, body = call(federation, method, path, who=None, body=spec_json() if method == "POST" else None)
        assert (status, body["code"]) == (403, "PERMISSION_DENIED"), path
        assert "no client certificate" in body["message"]
    with pytest.raises(OSError):
        call(federation, "GET", "/v1/jobs", who="stranger")


@pytest.mark.parametrize("who", ["eu-west", "prom"])
def test_a_site_or_a_monitor_may_not_use_the_api(federation, who):
    status, body = call(federation, "GET", "/v1/sites", who=who)
    assert status == 403 and body["code"] == "PERMISSION_DENIED"


def test_a_revoked_user_is_refused(federation):
    assert call(federation, "GET", "/v1/jobs")[0] == 200
    with admin_client(federation) as c:
        c.revoke("alice")
    status, body = call(federation, "GET", "/v1/jobs")
    assert status == 403 and body["code"] == "PERMISSION_DENIED"


def test_a_query_that_cannot_be_read_names_itself(federation):
    status, body = call(federation, "GET", "/v1/jobs?state=bogus")
    assert status == 400 and body["message"].startswith("query state: unknown state 'bogus'")
    status, body = call(federation, "GET", "/v1/jobs?limit=lots")
    assert status == 400 and body["message"].startswith("query limit:")


def test_the_openapi_document_is_the_generated_one_and_is_shipped(federation):
    served = call(federation, "GET", "/v1/openapi.json")[1]
    assert served == document()
    assert json.loads((ROOT / "configs" / "schemas" / "openapi.json").read_text()) == served, \
        "configs/schemas/openapi.json is stale: run fedctl schema export --dir configs/schemas"
    routes = {(m.upper(), p) for p, ops in served["paths"].items() for m in ops}
    assert {("POST", "/v1/jobs"), ("GET", "/v1/jobs/{id}/logs"), ("GET", "/v1/usage")} <= routes


def test_a_post_that_is_not_json_is_refused_before_it_acts(federation):
    """A browser's cross-site form can send only form types: none of them cancels a job."""
    job = call(federation, "POST", "/v1/jobs", body=spec_json(name="kept"))[1]["job"]
    for kind in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data"):
        status, body = call(federation, "POST", f"/v1/jobs/{job['id']}/cancel", body=b"", content_type=kind)
        assert (status, body["code"]) == (400, "INVALID_SPEC"), kind
    assert call(federation, "GET", f"/v1/jobs/{job['id']}")[1]["state"] == "pending"


@pytest.mark.parametrize("query", ["limit=-1", "limit=inf", "limit=nan", "since=-5"])
def test_numbers_out_of_range_are_refused(federation, query):
    status, body = call(federation, "GET", f"/v1/{'usage' if 'since' in query else 'jobs'}?{query}")
    assert status == 400 and body["message"].startswith(f"query {query.split('=')[0]}:")


def test_a_replica_that_does_not_lead_serves_no_call_and_no_page(tmp_path):
    witness = start(tmp_path, http={"listen": "127.0.0.1:0"}, replication={"role": "witness"})
    try:
        for path in ("/v1/jobs", "/console/sites"):
            status, body = call(witness, "GET", path, who="admin")
            assert status == 503 and body["code"] == "UNAVAILABLE" and "no replica leads" in body["message"], path
    finally:
        witness.stop(grace=0)
