"""A hostile site against a real federation over mutual TLS: it may register only as what its
certificate or the policy's catalog binds, hold only the datasets the catalog lists for it, and
never classify data itself."""
from __future__ import annotations

import grpc
import pytest

from federation.audit import read
from federation.cli.main import main
from federation.identity import of_certificate, scopes
from federation.pki import issue, site_binding
from federation.v1 import federation_pb2 as pb
from tests.integration.harness import CONFIGS, admin_client, register, site_stub, start
from tests.waiting import wait_for


@pytest.fixture
def federation(tmp_path):
    server = start(tmp_path)
    server.db = tmp_path / "fed.db"
    yield server
    server.stop(grace=0)


def refused(call) -> str:
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED, e.value.details()
    return e.value.details()


def denied_records(federation, actor: str) -> list:
    return [r for r in read(federation.db, action="call.denied") if r.actor == actor]


def test_ca_init_binds_a_sites_location_and_labels_into_its_certificate(tmp_path, capsys):
    assert main(["ca", "init", "--dir", str(tmp_path), "--site", str(CONFIGS / "sites" / "us-east.yaml")]) == 0
    who = of_certificate((tmp_path / "us-east.pem").read_bytes())
    assert (who.role, who.sites) == ("site", frozenset({"us-east"}))
    assert sorted(who.bound) == ["jurisdiction:US", "label:baa=true", "label:tier=cloud", "region:us-east"]
    assert of_certificate((tmp_path / "admin.pem").read_bytes()).admin
    capsys.readouterr()
    assert main(["ca", "init", "--dir", str(tmp_path), "--site", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_a_site_with_a_bound_certificate_cannot_move_to_another_jurisdiction(federation, tmp_path):
    pki = federation.pki
    spec = {"location": {"jurisdiction": "US", "region": "us-west"}, "labels": {"baa": "true"}}
    pki["us-west"] = issue(pki["ca"], tmp_path / "pki", "us-west",
                           units=(*scopes("site", sites=("us-west",)), *site_binding(spec)))
    stub, channel = site_stub(federation, "us-west")
    details = refused(lambda: register(stub, "us-west", "DE", "us-west", datasets=()))
    assert "was enrolled as jurisdiction:US" in details
    refused(lambda: register(stub, "us-west", "US", "us-west", datasets=(), labels={}))
    register(stub, "us-west", "US", "us-west", datasets=(), labels={"baa": "true"})
    channel.close()
    with admin_client(federation) as admin:
        assert [(s.name, s.jurisdiction) for s in admin.sites()] == [("us-west", "US")]
    assert len(denied_records(federation, "us-west")) >= 1


def test_a_catalogued_site_registers_only_as_the_catalog_says_and_an_unbound_one_not_at_all(federation, tmp_path):
    stub, channel = site_stub(federation, "us-east")     # its certificate binds nothing; the catalog does
    details = refused(lambda: register(stub, "us-east", "DE", "us-east", datasets=()))
    assert "spec.sites.us-east" in details and "jurisdiction:US" in details
    refused(lambda: register(stub, "us-east", "US", "us-east", datasets=(), labels={"baa": "true", "tier": "x"}))
    pki = federation.pki
    pki["rogue"] = issue(pki["ca"], tmp_path / "pki", "rogue", units=tuple(scopes("site", sites=("rogue",))))
    rogue, rogue_channel = site_stub(federation, "rogue")
    assert "nothing binds its location" in refused(lambda: register(rogue, "rogue", "DE", "eu-west", datasets=()))
    with admin_client(federation) as admin:
        assert admin.sites() == []                        # nothing half-registered
    channel.close()
    rogue_channel.close()


def test_a_site_cannot_claim_a_dataset_it_does_not_hold_or_classify_one(federation):
    us, us_channel = site_stub(federation, "us-east")
    details = refused(lambda: register(us, "us-east", "US", "us-east", datasets=(("patient-records-eu", ""),)))
    assert "datasets[0] (patient-records-eu): the policy lists it at eu-west, eu-north only" in details
    assert "not in the policy's dataset catalog" in refused(
        lambda: register(us, "us-east", "US", "us-east", datasets=(("made-up", "public"),)))
    eu, eu_channel = site_stub(federation)
    # Registering a GDPR dataset's name as public first no longer fixes its class: the claim is refused...
    assert "the policy classifies it gdpr-personal" in refused(
        lambda: register(eu, datasets=(("patient-records-eu", "public"),)))
    # ...and the honest holder, saying nothing or the truth, gets the policy's classification.
    register(eu, datasets=(("patient-records-eu", ""),))
    with admin_client(federation) as admin:
        (site,) = admin.sites()
        assert site.datasets == ({"name": "patient-records-eu", "classification": "gdpr-personal"},)
    us_channel.close()
    eu_channel.close()


def test_the_agent_learns_each_datasets_class_from_the_federation(federation):
    eu, channel = site_stub(federation)
    response = eu.RegisterSite(pb.RegisterSiteRequest(
        name="eu-west", location=pb.Location(jurisdiction="DE", region="eu-west"),
        datasets=[pb.Dataset(name="patient-records-eu", path="/srv/data/patients.csv")],
        capacity=pb.Resources(cpus=4, memory_bytes=2**33)), timeout=5)
    assert [(d.name, d.classification, d.path) for d in response.datasets] == [
        ("patient-records-eu", "gdpr-personal", "")]
    channel.close()


def test_site_local_paths_are_never_shown_to_users(federation):
    eu, channel = site_stub(federation)
    eu.RegisterSite(pb.RegisterSiteRequest(
        name="eu-west", location=pb.Location(jurisdiction="DE", region="eu-west"),
        datasets=[pb.Dataset(name="patient-records-eu", path="/srv/secret/patients.csv")],
        capacity=pb.Resources(cpus=4, memory_bytes=2**33)), timeout=5)
    with admin_client(federation) as admin:
        wait_for(lambda: admin.sites(), 5, "the site")
        raw = [admin._stub.ListSites(pb.ListSitesRequest(), timeout=5),
               admin._stub.GetSite(pb.GetSiteRequest(name="eu-west"), timeout=5)]
    for response in raw:
        assert b"/srv/secret" not in response.SerializeToString()
    kept = b"".join(p.read_bytes() for p in federation.db.parent.glob("fed.db*"))
    assert b"/srv/secret" not in kept, "the federation does not even keep it"
    channel.close()


def test_a_registration_cannot_grow_the_record_without_bound(federation):
    eu, channel = site_stub(federation)
    with pytest.raises(grpc.RpcError) as e:
        register(eu, labels={f"k{i}": "v" for i in range(65)})
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "at most 64 labels" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        register(eu, labels={"bad key!": "v"})
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "labels: label key 'bad key!'" in e.value.details()
    with admin_client(federation) as admin:
        assert admin.sites() == []
    channel.close()
