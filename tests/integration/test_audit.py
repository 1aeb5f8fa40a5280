"""The audit log of a real federation run: complete, and any edit, drop or swap is caught by name."""
from __future__ import annotations

import json
import sqlite3

import grpc
import pytest

from federation.audit import load_public, public_path, read, verify
from federation.cli.main import main
from federation.v1 import federation_pb2 as pb
from tests.conftest import make_spec
from tests.integration.harness import (
    AgentStream,
    admin_client,
    register,
    run_on,
    site_stub,
    start,
)
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def run_log(tmp_path_factory):
    """A short real run: a site registers, jobs are submitted, placed, run, cancelled; a site
    certificate tries to speak for another site. Returns the store's path once the server stopped."""
    tmp = tmp_path_factory.mktemp("audit")
    federation = start(tmp)
    try:
        with admin_client(federation) as client:
            stub, channel = site_stub(federation)
            register(stub)
            agent = AgentStream(stub, "eu-west")
            job = client.submit(make_spec("audited", resources={"cpus": 1}))
            run_on(agent, job)
            other = client.submit(make_spec("cancelled"))
            other.cancel()
            client.cordon("eu-west")
            us, us_channel = site_stub(federation, "us-east")
            with pytest.raises(grpc.RpcError):
                us.Heartbeat(pb.HeartbeatRequest(name="eu-west"), timeout=5)
            wait_for(lambda: read(tmp / "fed.db", action="call.denied"), 5, "the denied call recorded")
            agent.close()
            channel.close()
            us_channel.close()
    finally:
        federation.stop(grace=0)
    return tmp / "fed.db", job.id, other.id


def test_every_decision_that_matters_is_in_the_log(run_log):
    db, job_id, cancelled = run_log
    records = read(db)
    actions = [(r.action, r.subject, r.actor) for r in records]
    assert ("site.register", "eu-west", "eu-west") in actions
    assert ("job.submit", job_id, "admin") in actions and ("job.cancel", cancelled, "admin") in actions
    assert ("site.state", "eu-west", "admin") in actions
    place = next(r for r in records if r.action == "job.place" and r.subject == job_id)
    assert place.subject == job_id and place.detail["site"] == "eu-west" and place.detail["policy"] == "default@1"
    denied = next(r for r in records if r.action == "call.denied")
    assert (denied.actor, denied.subject) == ("us-east", "Heartbeat") and "cannot act as site 'eu-west'" in \
        denied.detail["reason"]
    assert [r.seq for r in records] == list(range(1, len(records) + 1))


def test_verify_passes_on_the_real_log(run_log, capsys):
    db, *_ = run_log
    assert main(["audit", "verify", "--store", str(db)]) == 0
    assert "chain and signatures intact" in capsys.readouterr().out
    assert main(["audit", "show", "--store", str(db), "--action", "job.submit", "--format", "json"]) == 0
    assert {r["action"] for r in json.loads(capsys.readouterr().out)["records"]} == {"job.submit"}


def tampered(db, tmp_path, sql: str, args=()) -> str:
    """Verify a copy of the log with one change made; the problem found."""
    copy = tmp_path / "copy.db"
    copy.write_bytes(db.read_bytes())
    con = sqlite3.connect(copy)
    con.execute(sql, args)
    con.commit()
    con.close()
    return verify(read(copy), load_public(public_path(db)))[2]


def flip(text: str, at: int) -> str:
    c = text[at]
    return text[:at] + ("1" if c != "1" else "2") + text[at + 1:]


def test_any_single_changed_byte_is_found_and_named(run_log, tmp_path):
    db, *_ = run_log
    records = read(db)
    for r in records:
        for column in ("actor", "action", "subject", "detail", "prev", "hash", "signature"):
            value = getattr(r, column) if column != "detail" else json.dumps(r.detail, sort_keys=True)
            for at in (0, len(value) // 2, len(value) - 1):
                problem = tampered(db, tmp_path, f"UPDATE audit SET {column}=? WHERE seq=?", (flip(value, at), r.seq))
                assert problem.startswith(f"record {r.seq} "), (column, at, problem)
        problem = tampered(db, tmp_path, "UPDATE audit SET at=at+0.001 WHERE seq=?", (r.seq,))
        assert problem.startswith(f"record {r.seq} ") and "edited" in problem


def test_a_removed_or_swapped_record_is_found(run_log, tmp_path, capsys):
    db, *_ = run_log
    n = len(read(db))
    problem = tampered(db, tmp_path, "DELETE FROM audit WHERE seq=3")
    assert problem.startswith("record 4 ") and "expected record 3 here" in problem
    # Swap the contents of records 2 and 3 (each keeps its place in the order).
    swap = ("UPDATE audit SET actor=(SELECT actor FROM audit a WHERE a.seq=5-audit.seq),"
            " action=(SELECT action FROM audit a WHERE a.seq=5-audit.seq),"
            " subject=(SELECT subject FROM audit a WHERE a.seq=5-audit.seq),"
            " detail=(SELECT detail FROM audit a WHERE a.seq=5-audit.seq),"
            " prev=(SELECT prev FROM audit a WHERE a.seq=5-audit.seq),"
            " hash=(SELECT hash FROM audit a WHERE a.seq=5-audit.seq),"
            " signature=(SELECT signature FROM audit a WHERE a.seq=5-audit.seq),"
            " at=(SELECT at FROM audit a WHERE a.seq=5-audit.seq) WHERE seq IN (2, 3)")
    problem = tampered(db, tmp_path, swap)
    assert problem.startswith("record 2 "), problem
    # Renumbered after a removal, the chain still breaks where the record was taken out.
    copy = tmp_path / "renumbered.db"
    copy.write_bytes(db.read_bytes())
    con = sqlite3.connect(copy)
    con.execute("DELETE FROM audit WHERE seq=2")
    for seq in range(3, n + 1):
        con.execute("UPDATE audit SET seq=? WHERE seq=?", (seq - 1, seq))
    con.commit()
    con.close()
    public = public_path(db)
    assert main(["audit", "verify", "--store", str(copy), "--public", str(public)]) == 1
    assert "record 2 (" in capsys.readouterr().err and "does not follow record 1" in verify(
        read(copy), load_public(public))[2]
