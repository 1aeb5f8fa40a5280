"""Attacks on the audit log of a real federation over mutual TLS: whoever can write the store drops its
tail, empties it, or rewrites it and re-signs every record with a key of their own; whoever can reach a
listener floods it with refusals. A head a site kept and a public key kept apart catch the first three;
the fourth adds a handful of records that carry the count."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from federation.audit import GENESIS, Signer, public_path, read
from federation.cli.main import main
from federation.client import Client
from federation.errors import ConfigError, NotFound
from federation.pki import init_pki
from federation.server import start_server
from federation.spec.server import AuditSettings, FederationBody, FederationConfig, ServerTLS
from federation.transport import open_channel
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc
from site_agent.anchor import anchor_path, held, keep
from tests.conftest import make_spec
from tests.integration.harness import CONFIGS, admin_client, register, site_stub, start
from tests.waiting import wait_for

EXIT_CHECK_FAILED = 1


@pytest.fixture(scope="module")
def anchored(tmp_path_factory):
    """A site registers and heartbeats; its agent's writer keeps the head each acknowledgement carries;
    more is recorded after that. The store (server stopped), the site's anchor file, and a copy of the
    public key kept apart."""
    tmp = tmp_path_factory.mktemp("anchored")
    federation = start(tmp)
    try:
        with admin_client(federation) as client:
            stub, channel = site_stub(federation)
            register(stub, datasets=())
            client.submit(make_spec("first"))
            client.submit(make_spec("second"))
            response = stub.Heartbeat(pb.HeartbeatRequest(name="eu-west"), timeout=5)
            assert response.HasField("audit_head")
            head = response.audit_head
            # A record of the log (the scheduler may have added more since the acknowledgement).
            assert head.seq >= 3 and head.hash == read(tmp / "fed.db")[head.seq - 1].hash
            anchor = anchor_path(tmp / "site" / ".fedctl-io", "eu-west")
            assert keep(anchor, head.seq, head.hash, federation.address) == ""
            client.submit(make_spec("after-the-anchor"))
            channel.close()
    finally:
        federation.stop(grace=0)
    apart = tmp / "kept-apart" / "audit-pub.pem"
    apart.parent.mkdir()
    apart.write_bytes(public_path(tmp / "fed.db").read_bytes())
    return tmp / "fed.db", anchor, apart


def copy_of(db: Path, tmp_path: Path, *sql: str) -> Path:
    copy = tmp_path / "copy.db"
    copy.write_bytes(db.read_bytes())
    public_path(copy).write_bytes(public_path(db).read_bytes())
    con = sqlite3.connect(copy)
    for statement in sql:
        con.execute(statement)
    con.commit()
    con.close()
    return copy


def verify(capsys, store: Path, *flags: str) -> tuple[int, str]:
    code = main(["audit", "verify", "--store", str(store), *flags])
    out = capsys.readouterr()
    return code, (out.err or out.out).strip()


def test_the_heartbeat_carries_the_head_and_the_site_keeps_it_apart(anchored, capsys):
    db, anchor, apart = anchored
    kept = held(anchor)
    assert kept is not None and anchor.stat().st_mode & 0o777 == 0o600
    assert json.loads(anchor.read_text())["source"].startswith("127.0.0.1:")
    assert [p.name for p in anchor.parent.iterdir()] == [anchor.name], "no temporary file left behind"
    code, text = verify(capsys, db, "--anchor", str(anchor), "--public", str(apart))
    assert code == 0 and "chain and signatures intact" in text and "agrees with 1 anchor" in text
    assert main(["audit", "verify", "--store", str(db), "--anchor", str(anchor), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["anchors"] == [{"path": str(anchor), "seq": kept.seq, "hash": kept.hash}]


def test_dropping_the_tail_passes_alone_and_fails_against_the_anchor(anchored, tmp_path, capsys):
    db, anchor, _ = anchored
    kept = held(anchor)
    assert kept is not None
    truncated = copy_of(db, tmp_path, f"DELETE FROM audit WHERE seq >= {kept.seq}")
    assert verify(capsys, truncated)[0] == 0, "a shorter chain is still a valid chain"
    code, text = verify(capsys, truncated, "--anchor", str(anchor))
    assert code == EXIT_CHECK_FAILED and "\n" not in text
    assert f"the log ends at record {kept.seq - 1}, but anchor {anchor} holds record {kept.seq}" in text
    assert "dropped from its end" in text


def test_an_emptied_log_fails_against_the_anchor(anchored, tmp_path, capsys):
    db, anchor, _ = anchored
    empty = copy_of(db, tmp_path, "DELETE FROM audit")
    assert verify(capsys, empty)[0] == 0
    code, text = verify(capsys, empty, "--anchor", str(anchor))
    assert code == EXIT_CHECK_FAILED and "the log is empty" in text and "emptied" in text and "\n" not in text


def re_signed(db: Path, tmp_path: Path) -> Path:
    """A copy whose first job.submit names another actor, every record then re-chained and re-signed
    with a fresh key, whose public half replaces the one beside the store."""
    copy = copy_of(db, tmp_path)
    signer = Signer(ec.generate_private_key(ec.SECP256R1()))
    prev, rewritten, edited = GENESIS, [], False
    for r in read(copy):
        actor = r.actor
        if r.action == "job.submit" and not edited:
            actor, edited = "nobody", True
        sealed = signer.seal(replace(r, actor=actor, prev=prev))
        rewritten.append(sealed)
        prev = sealed.hash
    assert any(r.actor == "nobody" for r in rewritten)
    con = sqlite3.connect(copy)
    con.execute("DELETE FROM audit")
    con.executemany("INSERT INTO audit (seq, at, actor, action, subject, detail, prev, hash, signature)"
                    " VALUES (?,?,?,?,?,?,?,?,?)",
                    [(r.seq, r.at, r.actor, r.action, r.subject, json.dumps(r.detail, sort_keys=True), r.prev,
                      r.hash, r.signature) for r in rewritten])
    con.commit()
    con.close()
    public_path(copy).write_bytes(signer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return copy


def test_a_rewritten_and_re_signed_chain_fails_against_the_anchor_and_the_key_kept_apart(anchored, tmp_path, capsys):
    db, anchor, apart = anchored
    kept = held(anchor)
    assert kept is not None
    forged = re_signed(db, tmp_path)
    assert verify(capsys, forged)[0] == 0, "with the key beside the store, a re-signed log looks intact"
    code, text = verify(capsys, forged, "--anchor", str(anchor))
    assert code == EXIT_CHECK_FAILED and "\n" not in text
    assert f"record {kept.seq} has hash" in text and "rewritten (and re-signed)" in text
    code, text = verify(capsys, forged, "--public", str(apart))
    assert code == EXIT_CHECK_FAILED and "record 1 (" in text and "the signature is not the federation's" in text


def test_a_malformed_anchor_is_a_config_error(anchored, tmp_path, capsys):
    db, *_ = anchored
    bad = tmp_path / "anchor.json"
    bad.write_text('{"seq": 0, "hash": "zz"}')
    code, text = verify(capsys, db, "--anchor", str(bad))
    assert code == 2 and "not an audit anchor" in text


# ------------------------------------------------------------------ the agent's anchor writer

HASH = "ab" * 32


def test_the_agents_writer_keeps_the_latest_head_atomically_and_never_goes_back(tmp_path):
    path = anchor_path(tmp_path / "work" / ".fedctl-io", "eu-west")
    assert keep(path, 5, HASH, "fed:50051") == ""
    assert path.stat().st_mode & 0o777 == 0o600
    assert (held(path).seq, held(path).hash, held(path).source) == (5, HASH, "fed:50051")
    assert keep(path, 9, "cd" * 32) == "" and held(path).seq == 9
    warning = keep(path, 4, HASH)
    assert "went from record 9" in warning and "to 4" in warning and held(path).seq == 9, "truncation is evidence"
    assert "went from record 9" in keep(path, 9, HASH) and held(path).hash == "cd" * 32, "so is a rewrite"
    assert "not one" in keep(path, 10, "not-a-hash") and held(path).seq == 9
    path.write_text("garbage")
    assert keep(path, 2, HASH) == "" and held(path).seq == 2, "an unreadable file is replaced"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_the_agents_heartbeats_keep_the_head_the_federation_sends(tmp_path):
    import threading

    from federation.spec import SiteConfig
    from site_agent.agent import SiteAgent
    from tests.unit.test_reconciler import MemoryRay
    federation = start(tmp_path)
    try:
        stub, channel = site_stub(federation)
        register(stub, datasets=())
        config = SiteConfig.model_validate({
            "metadata": {"name": "eu-west"},
            "spec": {"federation": {"insecure": True}, "location": {"jurisdiction": "DE", "region": "eu-west"},
                     "work_dir": str(tmp_path / "site")}})
        agent = SiteAgent(config, MemoryRay(), lambda _address: channel)
        agent.heartbeat_interval_s = 0.05
        over = threading.Event()
        beating = threading.Thread(target=agent._heartbeats, args=(stub, over), daemon=True)
        beating.start()
        try:
            kept = wait_for(lambda: held(agent.anchor), 5, "the agent to keep the head")
        finally:
            over.set()
            beating.join(5)
            channel.close()
        assert agent.anchor == tmp_path / "site" / ".fedctl-io" / "eu-west.audit-head.json"
        # A record in the log as it is (more may have been added since the heartbeat that carried it).
        assert {(r.seq, r.hash) for r in read(tmp_path / "fed.db")} >= {(kept.seq, kept.hash)}
    finally:
        federation.stop(grace=0)


# ------------------------------------------------------------------ floods of refusals


@pytest.fixture
def federation(tmp_path, capsys):
    server = start(tmp_path, enrolment=True)
    for name, tenant in (("alice", "oncology"), ("bob", "billing")):
        assert main(["user", "add", name, "--role", "submitter", "--tenant", tenant, "--dir", str(tmp_path / "pki")]) \
            == 0
    capsys.readouterr()
    yield server
    server.stop(grace=0)


def as_user(federation, name: str) -> Client:
    directory = federation.pki["ca"].cert.parent
    return Client(federation.address, ca=federation.pki["ca"].cert, cert=directory / f"{name}.pem",
                  key=directory / f"{name}.key", timeout=5)


def test_a_thousand_refusals_add_a_handful_of_records_that_carry_the_count(federation, tmp_path):
    db = tmp_path / "fed.db"
    with as_user(federation, "alice") as alice, as_user(federation, "bob") as bob:
        job = alice.submit(make_spec("mine", tenant="oncology"))
        before = len(read(db))
        for _ in range(1000):
            with pytest.raises(NotFound):
                bob.get(job.id)
    channel = open_channel(f"127.0.0.1:{federation.enrolment_port}", ca=federation.pki["ca"].cert)
    try:
        enrol = pb_grpc.EnrollmentServiceStub(channel)
        for i in range(1000):
            with pytest.raises(grpc.RpcError) as e:
                enrol.EnrollSite(pb.EnrollSiteRequest(token=f"{i:016x}.forged", csr_pem=b""), timeout=5)
            assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED
    finally:
        channel.close()
    assert len(read(db, action="call.denied")) <= 2, "the first of each kind at once, the rest counted"
    federation.stop(grace=0)   # writes what was counted
    denied = read(db, action="call.denied")
    by_bob = [r for r in denied if r.actor == "bob"]
    assert 1 <= len(by_bob) <= 3 and sum(r.detail["count"] for r in by_bob) == 1000
    assert {r.subject for r in by_bob} == {"GetJob"} and by_bob[0].detail["job"] == job.id
    enrolments = [r for r in denied if r.subject == "EnrollSite"]
    assert 1 <= len(enrolments) <= 3 and sum(r.detail["count"] for r in enrolments) == 1000
    assert "not one this federation issued" in enrolments[0].detail["reason"]
    assert len(read(db)) - before <= 10, "a handful of records, not two thousand"
    assert main(["audit", "verify", "--store", str(db)]) == 0


# ------------------------------------------------------------------ the key apart from the store


def test_the_signing_key_can_live_apart_from_the_store(tmp_path):
    pki = init_pki(tmp_path / "pki", clients=("admin",))
    keys = tmp_path / "keys"
    keys.mkdir()

    def config(key: Path) -> FederationConfig:
        return FederationConfig(spec=FederationBody(
            listen="127.0.0.1:0", store=tmp_path / "fed.db", policy=CONFIGS / "policy.yaml",
            tls=ServerTLS(cert=pki["server"].cert, key=pki["server"].key, client_ca=pki["ca"].cert),
            audit=AuditSettings(key=key)))

    server = start_server(config(keys / "audit.pem"))
    try:
        with Client(f"127.0.0.1:{server.port}", ca=pki["ca"].cert, cert=pki["admin"].cert, key=pki["admin"].key,
                    timeout=5) as client:
            client.submit(make_spec("signed-apart"))
    finally:
        server.stop(grace=0)
    assert (keys / "audit.pem").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "fed.db.audit-key.pem").exists(), "no key beside the store"
    assert (keys / "audit.pub.pem").read_bytes() == public_path(tmp_path / "fed.db").read_bytes()
    assert main(["audit", "verify", "--store", str(tmp_path / "fed.db"), "--public", str(keys / "audit.pub.pem")]) == 0
    for key, why in ((tmp_path / "missing" / "audit.pem", "No such file or directory"),
                     (pki["server"].cert, "not an EC private key in PEM")):
        with pytest.raises(ConfigError) as e:
            start_server(config(key))
        assert str(e.value).startswith(f"spec.audit.key: {key}: ") and why in str(e.value) and "\n" not in str(e.value)
