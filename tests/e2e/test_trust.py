"""Trust with real processes: a `fedctl server start` with a join-token listener, sites that
enrol with `fedctl site token create` / `fedctl site join`, agents (`fedctl site start`) that
claim attributes, renew their certificate while a job runs, and stop when revoked.

The agents drive the session federation's us-east Ray head (under other site names, so its own
agent leaves their jobs alone): no extra Ray cluster is started here."""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from federation.audit import read
from federation.client import Client
from federation.errors import Unavailable
from federation.identity import binding, scopes
from federation.local import (
    LocalFederation,
    fedctl,
    site_config,
    start_agent,
    stop_processes,
)
from federation.pki import Issued, create_ca, issue
from tests.e2e.test_federation import job
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def trusted(federation):
    """A second federation, with enrolment, and no sites of its own yet."""
    work = Path(tempfile.mkdtemp(prefix="ftrust-", dir="/tmp"))
    fed = LocalFederation(work=work, sites={}, port_bases={}, enrolment=True)
    fed.ray = {"address": federation.dashboard("us-east"), "auth_token_path": str(federation.ray_token("us-east"))}
    try:
        fed.start_server()
        yield fed
    finally:
        fed.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def run(fed: LocalFederation, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(fedctl(*args), env=fed.env, capture_output=True, text=True, timeout=60)


def agent(fed: LocalFederation, name: str, tls: Issued, jurisdiction: str, region: str,
          labels: dict[str, str]) -> subprocess.Popen:
    spec = {"location": {"jurisdiction": jurisdiction, "region": region}, "labels": labels,
            "work_dir": str(HERE), "ray": fed.ray}
    config = site_config(name, address=fed.address, pki={"ca": fed.pki["ca"], name: tls}, work=fed.work, spec=spec)
    return start_agent(config, fed.work)


def serial(cert: Path) -> int:
    return x509.load_pem_x509_certificate(cert.read_bytes()).serial_number


def test_an_enrolled_site_claims_only_its_binding_and_stops_when_revoked(trusted):
    created = run(trusted, "site", "token", "create", "edge-1", "--jurisdiction", "US", "--region", "us-east",
                  "--label", "baa=true")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    site = trusted.work / "edge-1"
    joined = run(trusted, "site", "join", "--token", token, "--enrol-address", trusted.enrol_address,
                 "--ca", str(trusted.pki["ca"].cert), "--dir", str(site))
    assert joined.returncode == 0, joined.stderr
    again = run(trusted, "site", "join", "--token", token, "--enrol-address", trusted.enrol_address,
                "--ca", str(trusted.pki["ca"].cert), "--dir", str(trusted.work / "edge-1-again"))
    assert again.returncode != 0 and len(again.stderr.strip().splitlines()) == 1
    assert "already used" in again.stderr, again.stderr
    tls = Issued(site / "site.pem", site / "site.key")

    # Claiming another jurisdiction than the token bound: refused, audited, and the agent stops.
    liar = agent(trusted, "edge-1", tls, "DE", "eu-west", {"baa": "true"})
    assert liar.wait(timeout=60) != 0
    log = (trusted.work / "edge-1.log").read_text()
    assert "error[PERMISSION_DENIED]" in log and "eu-west" in log, log[-2000:]
    denied = [r for r in read(trusted.work / "federation.db", action="call.denied") if r.actor == "edge-1"]
    assert denied and "RegisterSite" in {r.subject for r in denied}
    with trusted.client() as c:
        assert [s.name for s in c.sites()] == []

    honest = agent(trusted, "edge-1", tls, "US", "us-east", {"baa": "true"})
    trusted.agents["edge-1"] = honest
    try:
        trusted.wait_connected(timeout=60)
        with trusted.client() as c:
            (s,) = c.sites()
            assert (s.name, s.jurisdiction, s.region, s.labels) == ("edge-1", "US", "us-east", {"baa": "true"})
            done = c.submit(job("enrolled", tenant="trust")).wait(timeout=90)
            assert (done.state, done.site) == ("succeeded", "edge-1")

            revoked = run(trusted, "site", "revoke", "edge-1")
            assert revoked.returncode == 0, revoked.stderr
            assert "edge-1: every certificate issued until now refused (1 seen)" in revoked.stdout
            assert honest.wait(timeout=60) != 0   # its stream is cut and it may not come back
            wait_for(lambda: not c.sites()[0].connected, timeout=30, what="the revoked site to be disconnected")
        revoked = "error[PERMISSION_DENIED]: the certificate of edge-1 was revoked"
        assert revoked in (trusted.work / "edge-1.log").read_text()
        assert [r.subject for r in read(trusted.work / "federation.db", action="cert.revoke")] == ["edge-1"]
    finally:
        stop_processes([honest])
        del trusted.agents["edge-1"]


def test_a_site_renews_its_certificate_while_its_job_runs(trusted):
    """A certificate with a third of its life left is renewed at the next heartbeat; the agent
    reconnects with the new one and the running job is neither stopped nor started again."""
    bound = (*scopes("site", sites=("edge-2",)), *binding("US", "us-east", {}))
    (trusted.work / "edge-2").mkdir()
    short = issue(trusted.pki["ca"], trusted.work / "edge-2", "edge-2", units=bound, days=0.02)   # ~29 minutes left
    first = serial(short.cert)
    trusted.agents["edge-2"] = agent(trusted, "edge-2", short, "US", "us-east", {})
    try:
        trusted.wait_connected(timeout=60)
        with trusted.client() as c:
            j = c.submit(job("long", tenant="trust", env={"SLEEP": "8"}, placement={"sites": ["edge-2"]}))
            wait_for(lambda: j.status().state == "running", timeout=60, what="the job to run")
            wait_for(lambda: serial(short.cert) != first, timeout=30, what="the certificate to be renewed")
            renewed = x509.load_pem_x509_certificate(short.cert.read_bytes())
            assert renewed.not_valid_after_utc - renewed.not_valid_before_utc > dt.timedelta(days=29)
            done = j.wait(timeout=90)
        assert (done.state, done.site, len(done.attempts)) == ("succeeded", "edge-2", 1)
        log = (trusted.work / "edge-2.log").read_text()
        assert "certificate renewed" in log and log.count("started fed-") == 1
        assert [r.subject for r in read(trusted.work / "federation.db", action="cert.renew")] == ["edge-2"]
    finally:
        stop_processes([trusted.agents.pop("edge-2")])


def test_users_see_only_their_tenant_and_bad_certificates_are_refused(trusted, tmp_path):
    pki = trusted.work / "pki"
    for name, tenant in (("alice", "oncology"), ("bob", "billing")):
        added = run(trusted, "user", "add", name, "--role", "submitter", "--tenant", tenant, "--dir", str(pki))
        assert added.returncode == 0, added.stderr

    def as_user(name: str, *args: str) -> subprocess.CompletedProcess:
        return run(trusted, *args, "--cert", str(pki / f"{name}.pem"), "--key", str(pki / f"{name}.key"))

    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(job("mine", tenant="oncology")))
    submitted = as_user("alice", "submit", str(spec))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    for verb in ("status", "cancel", "logs"):
        r = as_user("bob", verb, job_id)
        assert r.returncode != 0 and r.stderr.strip() == f"error[NOT_FOUND]: job {job_id} not found", (verb, r.stderr)
    assert job_id not in as_user("bob", "jobs").stdout and job_id in as_user("alice", "jobs").stdout
    assert as_user("alice", "status", job_id).returncode == 0

    assert run(trusted, "user", "revoke", "bob").returncode == 0
    refused = as_user("bob", "jobs")
    assert refused.returncode != 0 and "error[PERMISSION_DENIED]" in refused.stderr and "revoked" in refused.stderr

    other = create_ca(tmp_path / "other")
    stranger = issue(other, tmp_path / "other", "admin", units=tuple(scopes("federation-admin")))
    expired = issue(trusted.pki["ca"], tmp_path, "old-admin", days=-1, units=tuple(scopes("federation-admin")))
    for cert, key in ((stranger.cert, stranger.key), (expired.cert, expired.key), (None, None)):
        with Client(trusted.address, ca=trusted.pki["ca"].cert, cert=cert, key=key, timeout=3) as c:
            with pytest.raises(Unavailable):
                c.jobs()
    with trusted.client() as admin:
        assert [j.id for j in admin.jobs(tenant="oncology")] == [job_id]   # nothing the refused calls did
