"""End to end: real processes, real Ray clusters, real gRPC with mutual TLS, a real SQLite file."""
from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import pytest
import yaml

from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def job(name: str, tenant: str = "e2e", env: dict | None = None, **spec) -> dict:
    spec.setdefault("entrypoint", "python report.py")
    spec.setdefault("runtime_env", {"working_dir": "./jobs", "env_vars": env or {}})
    spec.setdefault("resources", {"cpus": 1})
    return {"apiVersion": "federation/v1", "kind": "Job", "metadata": {"name": name, "tenant": tenant}, "spec": spec}


def write(tmp_path: Path, spec: dict, name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def ray_status(federation, site: str, submission_id: str) -> str:
    return federation.ray_job(site, submission_id)["status"]


def test_gdpr_job_submitted_with_the_cli_runs_only_at_the_eu_site(federation, tmp_path):
    spec = job("tokenize", datasets=["patient-records-eu"], placement={"prefer": ["us-east"]})
    out = federation.cli_json("submit", write(tmp_path, spec), "--wait", "--timeout", "90")
    assert out["state"] == "succeeded", out
    assert out["site"] == "eu-west", "GDPR data never leaves the EU, whatever the job prefers"
    logs = federation.cli("logs", out["id"])
    assert (logs.returncode, logs.stdout) == (0, ""), "gdpr-personal lets no logs cross: the federation has none"
    assert f"logs of job {out['id']} stay at site eu-west (classification gdpr-personal does not let logs " \
           f"cross); read them there: fedctl site logs {out['id']} --config" in logs.stderr
    kept = federation.cli("site", "logs", out["id"], "--config", str(federation.work / "eu-west.yaml"))
    assert kept.returncode == 0, kept.stderr
    assert "line 0 from eu-west" in kept.stdout
    assert "FEDCTL_DATASET_PATIENT_RECORDS_EU: 41 lines" in kept.stdout
    explain = federation.cli_json("explain", out["id"])
    assert explain["site"] == "eu-west" and "holds patient-records-eu" in explain["summary"]
    status = federation.cli_json("status", out["id"])
    assert [a["submission_id"] for a in status["attempts"]] == [f"fed-{out['id']}-1"]
    assert ray_status(federation, "eu-west", f"fed-{out['id']}-1") == "SUCCEEDED"


def test_a_sites_ray_jobs_api_answers_only_with_that_sites_token(federation):
    import urllib.error
    import urllib.request
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{federation.dashboard('eu-west')}/api/jobs/", timeout=10)
    assert e.value.code in (401, 403)
    other = federation.ray_token("us-east").read_text().strip()
    wrong = urllib.request.Request(f"{federation.dashboard('eu-west')}/api/jobs/",
                                   headers={"Authorization": f"Bearer {other}"})
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(wrong, timeout=10)
    assert federation.ray_token("eu-west").stat().st_mode & 0o077 == 0


def test_hipaa_job_submitted_with_the_sdk_runs_at_the_baa_site(federation, client):
    j = client.submit(job("claims", datasets=["claims-us"]))
    status = j.wait(timeout=90)
    assert (status.state, status.site) == ("succeeded", "us-east")
    assert j.logs().startswith(f"logs of job {j.id} stay at site us-east (classification hipaa does not let logs")
    kept = federation.cli("site", "logs", j.id, "--config", str(federation.work / "us-east.yaml"))
    assert "FEDCTL_DATASET_CLAIMS_US: 61 lines" in kept.stdout, kept.stderr
    assert j.placement.site == "us-east"


def test_job_whose_rules_admit_no_site_stays_pending_with_reasons(federation, client, tmp_path):
    spec = job("export", datasets=["patient-records-eu"], placement={"regions": ["us"]})
    r = federation.cli("submit", write(tmp_path, spec))
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    explain = wait_for(lambda: (e := federation.cli_json("explain", job_id))["verdicts"] and e, 30, "verdicts")
    assert explain["state"] == "pending"
    assert explain["summary"].startswith("no site may ever take it")
    reasons = {v["site"]: v["reason_code"] for v in explain["verdicts"]}
    assert reasons == {"eu-west": "not-in-regions", "us-east": "jurisdiction"}
    table = federation.cli("explain", job_id)
    assert "gdpr-personal data (patient-records-eu) may not be processed in US" in table.stdout
    assert federation.cli_json("cancel", job_id)["state"] == "cancelled"


def test_cancel_stops_the_ray_job(federation, client):
    j = client.submit(job("long", env={"SLEEP": "300"}))
    running = wait_for(lambda: (s := j.status()).state == "running" and s, 60, "the job to run")
    sid = running.attempts[0].submission_id
    assert ray_status(federation, running.site, sid) == "RUNNING"
    r = federation.cli("cancel", j.id)
    assert r.returncode == 0 and r.stdout.split() == [j.id, "cancelled"]
    wait_for(lambda: ray_status(federation, running.site, sid) == "STOPPED", 30, "Ray to stop the job")
    final = wait_for(lambda: (s := j.status()).attempts[0].state == "stopped" and s, 30, "the attempt to stop")
    assert final.state == "cancelled"


def test_logs_stream_while_the_job_runs(federation, client):
    j = client.submit(job("chatty", env={"LINES": "8", "PAUSE": "0.4"}))
    r = federation.cli("logs", j.id, "-f", timeout=90)
    assert r.returncode == 0
    assert [ln for ln in r.stdout.splitlines() if ln.startswith("line ")] == \
        [f"line {i} from {j.status().site}" for i in range(8)]
    assert j.status().state == "succeeded"


def test_failed_job_reports_failure_and_cli_wait_exits_non_zero(federation, tmp_path):
    r = federation.cli("submit", write(tmp_path, job("fails", env={"EXIT": "3"})), "--wait", "--timeout", "90")
    assert r.returncode == 1
    job_id, outcome = r.stdout.splitlines()[:2]
    assert outcome.startswith("failed on ")
    assert federation.cli_json("status", job_id)["state"] == "failed"
    # Not a terminal: the live status goes to stderr as one plain line per change.
    progress = [line for line in r.stderr.splitlines() if line.startswith(f"{job_id}: ")]
    assert any(": running at " in line for line in progress), r.stderr
    assert progress[-1].startswith(f"{job_id}: failed at ") and "\r" not in r.stderr, r.stderr


def test_cordoned_site_gets_no_new_work(federation, client):
    assert federation.cli_json("site", "cordon", "eu-west")["state"] == "cordoned"
    try:
        anywhere = client.submit(job("anywhere"))
        assert anywhere.wait(timeout=90).site == "us-east"
        gdpr = client.submit(job("gdpr", datasets=["patient-records-eu"]))
        p = wait_for(lambda: (p := gdpr.placement).verdicts and p, 30, "verdicts")
        assert p.state == "pending"
        assert {v.site: v.reason_code for v in p.verdicts} == {"eu-west": "cordoned", "us-east": "jurisdiction"}
        sites = {s["name"]: s for s in federation.cli_json("site", "list")["sites"]}
        assert sites["eu-west"]["state"] == "cordoned" and sites["eu-west"]["connected"]
    finally:
        assert federation.cli_json("site", "uncordon", "eu-west")["state"] == "ready"
    assert gdpr.wait(timeout=90).site == "eu-west"


def test_site_vetoes_what_its_own_config_forbids(client):
    # eu-west's own config allows at most 2 cpus per job; the federation does not know that.
    j = client.submit(job("wide", resources={"cpus": 3}, placement={"sites": ["eu-west"]}))
    p = wait_for(lambda: (p := j.placement).verdicts and p.verdicts[0].reason_code == "vetoed" and p, 60, "a veto")
    assert p.state == "pending"
    status = j.status()
    assert status.attempts[0].state == "rejected"
    assert "asks 3 cpus; this site allows 2 per job" in status.attempts[0].message
    j.cancel()


@pytest.mark.parametrize("content, message", [
    ("apiVersion: federation/v1\nkind: Job\nmetadata: {name: x\n", "malformed YAML"),
    ("apiVersion: federation/v1\nkind: Job\nmetadata: {name: x}\nspec: {entrypoint: e, resourcez: {}}\n",
     "job.yaml:4: spec.resourcez: unknown field 'resourcez' (did you mean 'resources'?)"),
    ("apiVersion: federation/v1\nkind: Job\nmetadata: {name: x}\nspec: {entrypoint: e, datasets: [claims-eu]}\n",
     "error[UNKNOWN_DATASET]: spec.datasets[0]: unknown dataset 'claims-eu' (did you mean 'claims-us'?)"),
    ("apiVersion: federation/v1\nkind: Job\nmetadata: {name: x}\nspec: {entrypoint: e, resources: {cpus: 999}}\n",
     "error[UNSATISFIABLE]: spec.resources: no site could ever hold 999 cpus"),
])
def test_bad_specs_fail_with_one_line_and_store_nothing(federation, client, tmp_path, content, message):
    before = len(client.jobs(limit=10_000))
    path = tmp_path / "job.yaml"
    path.write_text(content)
    r = federation.cli("submit", str(path))
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr
    assert len(client.jobs(limit=10_000)) == before
    rj = federation.cli("submit", str(path), "--format", "json")
    assert rj.returncode == 2 and json.loads(rj.stdout)["error"]["code"] in ("INVALID_SPEC", "UNKNOWN_DATASET",
                                                                           "UNSATISFIABLE")


def test_unknown_job_and_unreachable_federation_are_clear_errors(federation):
    r = federation.cli("status", "j-doesnotexist")
    assert r.returncode == 3 and r.stderr.strip() == "error[NOT_FOUND]: job j-doesnotexist not found"
    r = federation.cli("jobs", "--address", "127.0.0.1:1")
    assert r.returncode == 6 and r.stderr.startswith("error[UNAVAILABLE]: federation unreachable")


def test_restarting_the_federation_loses_no_job(federation, client):
    running = client.submit(job("survivor", env={"SLEEP": "6"}))
    wait_for(lambda: running.status().state == "running", 60, "the job to run")
    waiting = client.submit(job("waiting", datasets=["claims-us"], placement={"regions": ["eu"]}))
    wait_for(lambda: waiting.placement.verdicts, 30, "verdicts")
    before = {j.id: j.state for j in client.jobs(limit=10_000)}
    waited: list = []
    waiter = threading.Thread(target=lambda: waited.append(running.wait(timeout=120)))
    waiter.start()  # an SDK wait that is in flight while the federation dies

    federation.stop_server(signal.SIGKILL)
    federation.start_server()

    after = {j.id: j.state for j in client.jobs(limit=10_000)}
    assert after.keys() == before.keys(), "every job is still there"
    assert after[waiting.id] == "pending"
    waiter.join(timeout=130)
    (final,) = waited
    assert final.state == "succeeded", final
    assert len(final.attempts) == 1, "the running job was adopted, not started again"
    assert "line 0 from" in running.logs()
    federation.wait_connected(timeout=30)
    fresh = client.submit(job("after-restart"))
    assert fresh.wait(timeout=90).state == "succeeded"
    waiting.cancel()


def test_a_site_can_drive_a_ray_cluster_it_shares(federation, client):
    """`fedctl site start` without --local-ray, on eu-west's running cluster: each agent
    manages only its own site's jobs. Last in this file: it adds a site the others do not expect."""
    from federation.identity import scopes
    from federation.local import site_config, start_agent, stop_processes
    from federation.pki import issue, site_binding

    spec = {"location": {"jurisdiction": "DE", "region": "eu-central"}, "work_dir": str(Path(__file__).parent),
            "ray": {"address": federation.dashboard("eu-west"),
                    "auth_token_path": str(federation.ray_token("eu-west"))}}
    federation.pki["eu-central"] = issue(federation.pki["ca"], federation.work / "pki", "eu-central",
                                         units=(*scopes("site", sites=("eu-central",)), *site_binding(spec)))
    agent = start_agent(site_config("eu-central", address=federation.address, pki=federation.pki,
                                    work=federation.work, spec=spec), federation.work)
    federation.agents["eu-central"] = agent
    try:
        federation.wait_connected(timeout=60)
        j = client.submit(job("shared", env={"SLEEP": "2"}, placement={"sites": ["eu-central"]}))
        final = j.wait(timeout=90)
        assert (final.state, final.site) == ("succeeded", "eu-central"), "eu-west's agent left it alone"
        info = federation.ray_job("eu-west", final.attempts[0].submission_id)
        assert info["metadata"]["federation_site"] == "eu-central"
    finally:
        # Later tests (other files) must not be placed on a site whose agent is gone.
        client.cordon("eu-central")
        stop_processes([agent])
        del federation.agents["eu-central"]
