"""Attacks on plain text: a config that asks for TLS and plain text at once, a site config that
says nothing and so would fall back to plain text, an anonymous caller on a real plain-text
federation reaching for admin calls, and a plain-text caller at a TLS federation. Plain text is
served only when chosen alone, and without a certificate there is no admin."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from federation.audit import read
from federation.client import Client
from federation.errors import InvalidSpec, PermissionDenied, Unavailable
from federation.server import start_server
from federation.spec import load_federation, load_site
from federation.spec.server import FederationBody, FederationConfig, ServerTLS
from federation.transport import open_channel
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc
from tests.conftest import make_spec
from tests.integration.harness import CONFIGS, register, start, with_sites

ROOT = Path(__file__).resolve().parents[2]
ADMIN_ACTIONS = ("cert.revoke", "site.token", "site.state", "federation.drain", "federation.resume")


def fedctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "federation.cli.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def federation_yaml(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "federation.yaml"
    path.write_text(f"""\
apiVersion: federation/v1
kind: Federation
spec:
  listen: 127.0.0.1:0
  store: {tmp_path / "fed.db"}
  policy: {CONFIGS / "policy.yaml"}
{extra}""")
    return path


BOTH = """\
  tls: {cert: server.pem, key: server.key, client_ca: ca.pem}
  insecure: true
"""


# ------------------------------------------------------------------ configs


def test_a_federation_config_with_tls_and_insecure_is_refused(tmp_path):
    path = federation_yaml(tmp_path, BOTH)
    with pytest.raises(InvalidSpec) as e:
        load_federation(path)
    assert str(e.value) == (f"{path}:8: spec.insecure: plain text is never served beside tls: remove insecure "
                            "(or, for development only, tls)")
    with pytest.raises(ValidationError) as v:  # built in code, not read from a file
        FederationBody(policy=Path("p.yaml"), tls=ServerTLS(cert=Path("c"), key=Path("k")), insecure=True)
    assert [err["loc"] for err in v.value.errors()] == [("insecure",)]


def test_fedctl_server_start_with_tls_and_insecure_exits_with_one_line_naming_the_field(tmp_path):
    done = fedctl("server", "start", "--config", str(federation_yaml(tmp_path, BOTH)))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error[INVALID_SPEC]: ") and "spec.insecure:" in lines[0], lines
    assert not (tmp_path / "fed.db").exists(), "nothing was started"


def test_an_enrolment_listener_without_tls_is_refused_at_load(tmp_path):
    path = federation_yaml(tmp_path, "  insecure: true\n  enrolment: {ca_cert: ca.pem, ca_key: ca.key}\n")
    with pytest.raises(InvalidSpec, match=r":8: spec.enrolment: needs tls"):
        load_federation(path)


def site_yaml(tmp_path: Path, federation: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(f"""\
apiVersion: federation/v1
kind: Site
metadata: {{name: s1}}
spec:
{federation}  location: {{jurisdiction: DE, region: eu-west}}
""")
    return path


@pytest.mark.parametrize("block", ["", "  federation:\n"], ids=["absent", "null"])
def test_a_site_config_without_a_federation_block_is_refused(tmp_path, block):
    path = site_yaml(tmp_path, block)
    with pytest.raises(InvalidSpec) as e:
        load_site(path)
    assert str(e.value).endswith(
        "spec.federation: required: give address and tls, or insecure: true for development"), e.value
    done = fedctl("site", "start", "--config", str(path))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "spec.federation: required" in done.stderr


def test_a_site_config_with_tls_and_insecure_is_refused(tmp_path):
    path = site_yaml(tmp_path, "  federation: {address: '127.0.0.1:1', insecure: true,\n"
                               "               tls: {ca: ca.pem, cert: s1.pem, key: s1.key}}\n")
    with pytest.raises(InvalidSpec, match=r"spec.federation.insecure: plain text is never used beside tls"):
        load_site(path)


def test_insecure_alone_still_loads_for_development(tmp_path):
    assert load_site(site_yaml(tmp_path, "  federation: {insecure: true}\n")).spec.federation.insecure
    assert load_federation(federation_yaml(tmp_path, "  insecure: true\n")).spec.insecure


# ------------------------------------------------------------------ a real plain-text federation


@pytest.fixture
def plain(tmp_path):
    server = start_server(FederationConfig(spec=FederationBody(
        listen="127.0.0.1:0", store=tmp_path / "fed.db", policy=with_sites(CONFIGS / "policy.yaml", tmp_path),
        insecure=True, scheduler={"interval_s": 0.1})))
    server.address = f"127.0.0.1:{server.port}"
    channel = open_channel(server.address, insecure=True)
    register(pb_grpc.SiteServiceStub(channel))  # a site agent over plain text still works
    yield server, channel
    channel.close()
    server.stop(grace=0)


def refused(call) -> str:
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED, e.value
    return e.value.details()


def test_the_anonymous_caller_is_refused_every_admin_call_and_nothing_changes(plain, tmp_path):
    server, channel = plain
    stub = pb_grpc.FederationServiceStub(channel)
    calls = {
        "revoke": lambda: stub.RevokeCertificates(pb.RevokeCertificatesRequest(name="eu-west"), timeout=5),
        "cordon": lambda: stub.SetSiteState(pb.SetSiteStateRequest(name="eu-west", state=pb.SITE_STATE_CORDONED),
                                            timeout=5),
        "drain site": lambda: stub.SetSiteState(pb.SetSiteStateRequest(
            name="eu-west", state=pb.SITE_STATE_DRAINING, handover=True), timeout=5),
        "join token": lambda: stub.CreateJoinToken(pb.CreateJoinTokenRequest(
            name="edge-1", location=pb.Location(jurisdiction="US", region="us-east")), timeout=5),
        "drain federation": lambda: stub.DrainFederation(pb.DrainFederationRequest(drain=True), timeout=5),
    }
    for what, call in calls.items():
        assert "anonymous (submitter) may not" in refused(call), what
    store = server.control.store
    assert store.revoked_serials() == set() and store.revoked_names() == {}
    (site,) = stub.ListSites(pb.ListSitesRequest(), timeout=5).sites
    assert (site.name, site.state) == ("eu-west", pb.SITE_STATE_READY)
    assert not server.control.admission.draining
    assert [r for r in read(tmp_path / "fed.db") if r.action in ADMIN_ACTIONS] == []
    assert {r.subject for r in read(tmp_path / "fed.db", action="call.denied")} >= {"RevokeCertificates"}


def test_the_anonymous_caller_is_a_submitter_for_any_tenant_and_nothing_more(plain):
    server, _ = plain
    with Client(server.address, insecure=True, timeout=5) as anonymous:
        a = anonymous.submit(make_spec("a", tenant="oncology"))
        b = anonymous.submit(make_spec("b", tenant="radiology"))
        assert {j.id for j in anonymous.jobs()} == {a.id, b.id}
        assert [j.id for j in anonymous.jobs(tenant="radiology")] == [b.id]
        assert anonymous.cancel(b.id).state == "cancelled"
        assert anonymous.get(a.id).tenant == "oncology"
        assert {r["tenant"] for r in anonymous.usage()} <= {"oncology", "radiology"}
        with pytest.raises(PermissionDenied):
            anonymous.revoke("anonymous")
        with pytest.raises(PermissionDenied):
            anonymous.cordon("eu-west")


# ------------------------------------------------------------------ plain text at a TLS federation


@pytest.fixture
def federation(tmp_path):
    server = start(tmp_path)
    yield server
    server.stop(grace=0)


def test_a_plain_text_caller_at_a_tls_federation_gets_nothing(federation):
    with Client(federation.address, insecure=True, timeout=2) as plain:
        with pytest.raises(Unavailable):
            plain.jobs()
    channel = open_channel(federation.address, insecure=True)
    try:
        with pytest.raises(grpc.RpcError) as e:
            register(pb_grpc.SiteServiceStub(channel))
        assert e.value.code() is grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError):
            pb_grpc.FederationServiceStub(channel).RevokeCertificates(
                pb.RevokeCertificatesRequest(name="eu-west"), timeout=2)
    finally:
        channel.close()
    assert federation.control.views.site_statuses() == []
    assert federation.control.store.revoked_names() == {}
