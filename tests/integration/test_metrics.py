"""The federation's /metrics, scraped as Prometheus would over mutual TLS from a real server: who may
read it, and values that move as the federation works (submissions, refusals, placements, a site
lost, the audit chain)."""
from __future__ import annotations

import sqlite3
import threading
import time
import urllib.error
from dataclasses import replace

import pytest

from federation.audit import AuditRecord
from federation.client import Client
from federation.errors import PermissionDenied, Unsatisfiable
from federation.identity import scopes
from federation.pki import issue
from federation.v1 import federation_pb2 as pb
from tests.conftest import make_spec
from tests.integration.harness import AgentStream, admin_client, register, run_on, site_stub, start
from tests.scrape import scrape, total, value
from tests.waiting import wait_for


@pytest.fixture
def federation(tmp_path):
    # A 1 s site lease; the leadership lease longer than its default quarter of that, which lapses
    # whenever a loaded machine stalls this process (each new term counts sites' leases again).
    server = start(tmp_path, metrics={"listen": "127.0.0.1:0"}, site_timeout_s=1.0, replication={"lease_s": 4.0})
    pki, directory = server.pki, tmp_path / "pki"
    for name, units in (("prom", scopes("monitor")), ("alice", scopes("submitter", ("default",))),
                        ("ops", scopes("site-operator", sites=("eu-west",)))):
        pki[name] = issue(pki["ca"], directory, name, units=tuple(units))
    yield server
    server.stop(grace=0)


def read(federation, who: str = "prom"):
    pki = federation.pki
    return scrape(federation.metrics.port, pki["ca"].cert, pki[who].cert, pki[who].key)


def test_only_a_monitor_or_an_admin_reads_the_federations_metrics(federation):
    assert value(read(federation), "fedctl_audit_chain_verified") == 1.0
    assert value(read(federation, "admin"), "fedctl_audit_chain_verified") == 1.0
    for who in ("alice", "ops", "eu-west"):   # a submitter, a site's operator, a site agent's certificate
        with pytest.raises(urllib.error.HTTPError) as refused:
            read(federation, who)
        assert refused.value.code == 403 and who in refused.value.read().decode()
    with pytest.raises(OSError):   # no client certificate: the handshake fails (TLS 1.3 says so after it)
        scrape(federation.metrics.port, federation.pki["ca"].cert)
    with admin_client(federation) as c:
        c.revoke("prom")
    with pytest.raises(urllib.error.HTTPError) as revoked:
        read(federation)
    assert revoked.value.code == 403


def test_a_monitor_may_not_use_the_federation_service(federation):
    pki = federation.pki
    with Client(federation.address, ca=pki["ca"].cert, cert=pki["prom"].cert, key=pki["prom"].key, timeout=5) as c:
        with pytest.raises(PermissionDenied):
            c.sites()


def test_values_move_with_submissions_placements_and_a_lost_site(federation):
    stub, channel = site_stub(federation)
    register(stub, cpus=4.0)
    with admin_client(federation) as c:
        job = c.submit(make_spec("counted", retry={"limit": 0}))
        with pytest.raises(Unsatisfiable):
            c.submit(make_spec("too-big", resources={"cpus": 64}))
        agent = AgentStream(stub, "eu-west")
        run_on(agent, job)
        samples = wait_for(lambda: (s := read(federation)) and value(s, "fedctl_jobs", state="running",
                                                                     tenant="default", queue="default") == 1 and s,
                           5, "the running job in the metrics")
        assert value(samples, "fedctl_submissions_total", tenant="default") == 1
        assert value(samples, "fedctl_submissions_refused_total", code="UNSATISFIABLE") == 1
        assert total(samples, "fedctl_placements_total") == 1
        assert value(samples, "fedctl_site_connected", site="eu-west") == 1
        assert value(samples, "fedctl_site_capacity", site="eu-west", resource="cpus") == 4
        assert value(samples, "fedctl_site_free", site="eu-west", resource="cpus") == 3
        assert value(samples, "fedctl_site_running_attempts", site="eu-west") == 1
        assert value(samples, "fedctl_grpc_server_handling_seconds_count", method="SubmitJob", code="OK") == 1
        assert value(samples, "fedctl_grpc_server_handling_seconds_count", method="SubmitJob",
                     code="FAILED_PRECONDITION") == 1
        assert value(samples, "fedctl_scheduling_last_cycle_timestamp_seconds") > 0
        assert value(samples, "fedctl_scheduling_cycle_seconds_count") >= 1
        # eu-west falls silent past its lease while us-east is heard: the site is lost, and so is its attempt.
        us, us_channel = site_stub(federation, "us-east")
        register(us, "us-east", "US", "us-east", datasets=())
        beating = threading.Event()
        threading.Thread(target=lambda: [us.Heartbeat(pb.HeartbeatRequest(name="us-east"), timeout=5)
                                         for _ in iter(lambda: beating.wait(0.2), True)], daemon=True).start()
        lost = wait_for(lambda: (s := read(federation)) and value(
            s, "fedctl_attempts_ended_total", site="eu-west", state="lost") == 1 and s, 10, "the lost attempt counted")
        assert value(lost, "fedctl_site_lost", site="eu-west") == 1
        assert value(lost, "fedctl_site_connected", site="eu-west") == 0
        assert value(lost, "fedctl_site_heartbeat_age_seconds", site="eu-west") >= 1.0
        beating.set()
        agent.close()
    channel.close()
    us_channel.close()


def test_waiting_jobs_are_counted_by_what_holds_them(federation):
    with admin_client(federation) as c:
        c.submit(make_spec("nowhere"))   # no site has registered
        samples = wait_for(lambda: (s := read(federation)) and total(s, "fedctl_pending_jobs") == 1 and s, 5,
                           "the waiting job counted")
    assert value(samples, "fedctl_pending_jobs", reason="no-sites") == 1
    assert value(samples, "fedctl_queue_pending_jobs", queue="default") == 1


def test_an_audit_record_edited_in_the_store_turns_the_chain_metric_to_zero(federation, tmp_path):
    with admin_client(federation) as c:
        c.submit(make_spec("audited"))
        first = read(federation)
        assert value(first, "fedctl_audit_chain_verified") == 1
        assert value(first, "fedctl_audit_records_verified") == 1
        c.submit(make_spec("second"))
        assert value(read(federation), "fedctl_audit_records_verified") == 2
        db = sqlite3.connect(tmp_path / "fed.db")
        with db:   # an insider rewrites history below the federation, where nothing else would notice
            db.execute("UPDATE audit SET actor='nobody' WHERE seq=2")
        db.close()
        c.submit(make_spec("after"))
    broken = read(federation)
    assert value(broken, "fedctl_audit_chain_verified") == 0
    assert value(broken, "fedctl_audit_records_verified") == 2, "nothing after the edit is taken as verified"
    assert value(read(federation), "fedctl_audit_chain_verified") == 0, "once broken, it stays broken"


def test_a_signature_of_the_federation_moved_onto_another_record_turns_the_chain_metric_to_zero(federation,
                                                                                              tmp_path):
    """The watch takes the signatures this process made as verified; one moved onto another record
    in the store is not one it made, and is checked and refused."""
    with admin_client(federation) as c:
        c.submit(make_spec("first"))
        assert value(read(federation), "fedctl_audit_chain_verified") == 1   # the watch remembers from here
        c.submit(make_spec("second"))
        c.submit(make_spec("third"))
        db = sqlite3.connect(tmp_path / "fed.db")
        with db:
            db.execute("UPDATE audit SET signature=(SELECT signature FROM audit WHERE seq=2) WHERE seq=3")
        db.close()
    samples = read(federation)
    assert value(samples, "fedctl_audit_chain_verified") == 0
    assert value(samples, "fedctl_audit_records_verified") == 1


def _append(db: sqlite3.Connection, **record) -> None:
    """An audit row written below the federation, its hash chained onto the newest record's."""
    seq, prev = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    forged = AuditRecord(seq + 1, time.time(), "insider", "job.cancel", "j-x", {}, prev, "", "00")
    forged = replace(forged, hash=forged.digest())
    row = {"seq": forged.seq, "at": forged.at, "actor": forged.actor, "action": forged.action,
           "subject": forged.subject, "detail": "{}", "prev": forged.prev, "hash": forged.hash,
           "signature": forged.signature, **record}
    db.execute(f"INSERT INTO audit ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))


@pytest.mark.parametrize("forgery", ["unsigned", "unreadable"])
def test_a_record_slipped_in_below_the_federation_turns_the_chain_metric_to_zero(federation, tmp_path, forgery):
    """The federation chains its next record onto whatever is newest in the store and signs it: the
    forged record before it is caught by its own signature, or by not being readable at all."""
    with admin_client(federation) as c:
        c.submit(make_spec("before"))
        assert value(read(federation), "fedctl_audit_chain_verified") == 1
        db = sqlite3.connect(tmp_path / "fed.db")
        with db:
            _append(db, **({"actor": b"\x00\xff"} if forgery == "unreadable" else {}))
        db.close()
        c.submit(make_spec("after"))   # signed by the federation, chained onto the forgery
    samples = read(federation)   # still served: the other metrics stay readable
    assert value(samples, "fedctl_audit_chain_verified") == 0
    assert value(samples, "fedctl_audit_records") == 3 and value(samples, "fedctl_audit_records_verified") == 1
    assert value(samples, "fedctl_jobs", state="pending", tenant="default", queue="default") == 2
