"""Sites join with one-time tokens over real TLS; the attributes the operator bound are the only ones they may claim."""
from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from federation.audit import read
from federation.cli.main import main
from federation.client import Client
from federation.errors import PermissionDenied
from federation.identity import of_certificate
from federation.transport import open_channel
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc
from tests.integration.harness import admin_client, start

GiB = 2**30


@pytest.fixture
def federation(tmp_path):
    server = start(tmp_path, enrolment=True)
    with admin_client(server) as c:
        server.admin = c
        yield server
    server.stop(grace=0)


def join(federation, token: str, directory: Path, capsys) -> tuple[int, str]:
    code = main(["site", "join", "--token", token, "--enrol-address", f"127.0.0.1:{federation.enrolment_port}",
                 "--ca", str(federation.pki["ca"].cert), "--dir", str(directory)])
    return code, capsys.readouterr().err


def registered(federation, directory: Path, name="us-east", jurisdiction="US", region="us-east", labels=None):
    channel = open_channel(federation.address, ca=federation.pki["ca"].cert, cert=directory / "site.pem",
                           key=directory / "site.key")
    try:
        pb_grpc.SiteServiceStub(channel).RegisterSite(pb.RegisterSiteRequest(
            name=name, location=pb.Location(jurisdiction=jurisdiction, region=region),
            labels={"baa": "true"} if labels is None else labels,
            capacity=pb.Resources(cpus=4, memory_bytes=8 * GiB)), timeout=5)
    finally:
        channel.close()


def test_a_site_joins_once_and_may_claim_only_what_its_token_bound(federation, tmp_path, capsys):
    token, expires = federation.admin.create_join_token("us-east", "US", "us-east", {"baa": "true"}, ttl_s=600)
    assert expires > time.time() + 500
    site = tmp_path / "us-east"
    assert join(federation, token, site, capsys) == (0, "")
    who = of_certificate((site / "site.pem").read_bytes())
    assert (who.name, who.role, who.sites) == ("us-east", "site", frozenset({"us-east"}))
    assert sorted(who.bound) == ["jurisdiction:US", "label:baa=true", "region:us-east"]
    assert (site / "site.key").stat().st_mode & 0o077 == 0, "the key is the site's alone"
    registered(federation, site)
    for claim in ({"jurisdiction": "DE"}, {"labels": {"baa": "false"}}, {"labels": {}},
                  {"labels": {"baa": "true", "tier": "gold"}}, {"name": "eu-west"}):
        with pytest.raises(grpc.RpcError) as e:
            registered(federation, site, **claim)
        assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED, claim
    federation.control.refusals.flush()   # refusals of one kind are counted, not written one by one
    assert sum(r.detail["count"] for r in read(tmp_path / "fed.db", action="call.denied") if r.actor == "us-east") == 5
    assert [r.subject for r in read(tmp_path / "fed.db", action="site.enrol")] == ["us-east"]
    # The token was used: a second join is refused, and so is a token nobody issued.
    code, err = join(federation, token, tmp_path / "again", capsys)
    assert code == 5 and "join token for us-east: already used" in err
    code, err = join(federation, "0123456789abcdef.forged", tmp_path / "forged", capsys)
    assert code == 5 and "not one this federation issued" in err
    assert not (tmp_path / "again" / "site.key").exists(), "a refused join leaves no key behind"


def test_an_expired_token_is_refused_and_only_admins_make_tokens(federation, tmp_path, capsys):
    token, _ = federation.admin.create_join_token("eu-west", "DE", "eu-west", ttl_s=60)
    federation.control.clock = lambda: time.time() + 120
    code, err = join(federation, token, tmp_path / "late", capsys)
    assert code == 5 and "join token for eu-west: expired" in err
    federation.control.clock = time.time
    with pytest.raises(Exception, match="jurisdiction"):
        federation.admin.create_join_token("eu-west", "Germany", "eu-west")
    pki = federation.pki
    from federation.identity import scopes
    from federation.pki import issue
    user = issue(pki["ca"], tmp_path, "alice", units=tuple(scopes("submitter", tenants=("oncology",))))
    with Client(federation.address, ca=pki["ca"].cert, cert=user.cert, key=user.key, timeout=5) as alice:
        with pytest.raises(PermissionDenied, match="may not create join tokens"):
            alice.create_join_token("evil", "US", "us-east")


def test_an_enrolled_site_renews_its_certificate_before_it_expires_keeping_name_and_bindings(
        federation, tmp_path, capsys):
    import datetime as dt

    from site_agent.renewal import due, renew
    token, _ = federation.admin.create_join_token("us-east", "US", "us-east", {"baa": "true"})
    site = tmp_path / "us-east"
    assert join(federation, token, site, capsys)[0] == 0
    cert, key = site / "site.pem", site / "site.key"
    before = of_certificate(cert.read_bytes())
    now = dt.datetime.now(dt.UTC)
    assert not due(cert, now) and due(cert, now + dt.timedelta(days=21))
    channel = open_channel(federation.address, ca=federation.pki["ca"].cert, cert=cert, key=key)
    renew(pb_grpc.SiteServiceStub(channel), cert, key)
    channel.close()
    after = of_certificate(cert.read_bytes())
    assert (after.name, after.role, after.sites, sorted(after.bound)) == (
        before.name, before.role, before.sites, sorted(before.bound)) and after.serial != before.serial
    registered(federation, site)   # the renewed pair works
    assert [r.subject for r in read(tmp_path / "fed.db", action="cert.renew")] == ["us-east"]
    assert not (site / ".renewal").exists()
    # A user certificate cannot renew as a site.
    with pytest.raises(grpc.RpcError) as e:
        admin = open_channel(federation.address, ca=federation.pki["ca"].cert, cert=federation.pki["admin"].cert,
                             key=federation.pki["admin"].key)
        renew(pb_grpc.SiteServiceStub(admin), tmp_path / "x.pem", tmp_path / "x.key")
    assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED
    admin.close()
