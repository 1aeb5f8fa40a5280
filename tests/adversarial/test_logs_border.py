"""Logs and job messages cross a border only where the classification of the job's data lets logs
cross. Where it does not, the site keeps them and reports a fixed word for what the job wrote; the
federation drops log bytes a (modified) site sends anyway and says where to read them. The site's
side against an in-memory Ray; the federation's over real mutual TLS with a real SQLite file."""
from __future__ import annotations

import json

import pytest
import yaml
from pydantic import ValidationError

from federation.audit import read
from federation.cli.main import main
from federation.spec.policy import ClassificationRule as ClassificationSpec
from federation.v1 import federation_pb2 as pb
from policies import ClassificationRule, DatasetInfo, Rules, kept_by, may_cross
from site_agent.ray_driver import RayJob
from site_agent.reconciler import Reconciler
from tests.conftest import make_spec
from tests.integration.harness import AgentStream, admin_client, register, site_stub, start
from tests.unit.test_reconciler import MemoryRay, assignment, site_config
from tests.waiting import wait_for

SECRET = "patient 4711 Jane Doe, born 1970-01-01\n"
RAY_FAILED = "Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 chars):\n"
KEPT_WORD = "failed (exit 1); details kept at site eu-west"
GDPR = ("model-updates", "results")   # what gdpr-personal lets cross in the shipped policy: no logs
SID = "fed-j-1-1"


def site_file(tmp_path) -> str:
    """The site config `site_config` builds, as the YAML file an operator passes to `fedctl site logs`."""
    path = tmp_path / "eu-west.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "federation/v1", "kind": "Site", "metadata": {"name": "eu-west"},
                                    "spec": {"federation": {"insecure": True},
                                             "location": {"jurisdiction": "DE", "region": "eu-west"},
                                             "work_dir": str(tmp_path)}}))
    return str(path)


# ---------------------------------------------------------------- the rule


def test_logs_cross_only_where_every_dataset_of_the_job_lets_them():
    rules = Rules({"public": ClassificationRule(None, may_cross_border=frozenset({"results", "logs"})),
                   "gdpr-personal": ClassificationRule(None, may_cross_border=frozenset({"results", "model-updates"})),
                   "secret": ClassificationRule(None, may_cross_border=frozenset({"nothing"}))})
    catalog = {name: DatasetInfo(name, cls, frozenset({"eu-west"}))
               for name, cls in (("weather", "public"), ("patients", "gdpr-personal"), ("codes", "secret"),
                                 ("orphan", "unruled"))}
    assert may_cross([], catalog, rules) == {"results", "model-updates", "logs"}
    assert may_cross(["weather"], catalog, rules) == {"results", "logs"}
    assert may_cross(["weather", "patients"], catalog, rules) == {"results"}
    assert may_cross(["codes"], catalog, rules) == may_cross(["orphan"], catalog, rules) == \
        may_cross(["unknown"], catalog, rules) == frozenset()
    assert kept_by("logs", ["weather"], catalog, rules) == ""
    assert kept_by("logs", ["weather", "patients"], catalog, rules) == \
        "classification gdpr-personal does not let logs cross"
    assert kept_by("logs", ["orphan"], catalog, rules) == "classification unruled of orphan has no rule in policy v1"


def test_a_policy_says_nothing_alone():
    rule = {"allowed_jurisdictions": ["*"], "may_cross_border": ["results", "logs"]}
    assert ClassificationSpec.model_validate(rule).may_cross_border == ["results", "logs"]
    with pytest.raises(ValidationError, match="'nothing' stands alone"):
        ClassificationSpec.model_validate(dict(rule, may_cross_border=["nothing", "logs"]))
    with pytest.raises(ValidationError):
        ClassificationSpec.model_validate(dict(rule, may_cross_border=["log-files"]))


# ---------------------------------------------------------------- the site


def test_the_site_keeps_the_logs_and_the_failure_output_of_a_job_whose_data_lets_no_logs_cross(tmp_path, capsys):
    ray = MemoryRay()
    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([assignment(crosses=GDPR, datasets=["patients"])])
    r.reconcile()
    ray.jobs_[SID] = RayJob(SID, "RUNNING")
    ray.logs_[SID] = SECRET.encode()
    sent = [r.reconcile()]
    ray.logs_[SID] = (SECRET * 2).encode()
    ray.jobs_[SID] = RayJob(SID, "FAILED", RAY_FAILED + SECRET)   # Ray quotes the tail of the job's output
    sent.append(r.reconcile())
    assert all(list(report.logs) == [] for report in sent), "no log chunk leaves the site"
    assert not any(SECRET.encode() in report.SerializeToString() for report in sent)
    (status,) = sent[-1].statuses
    assert (status.state, status.message) == (pb.ATTEMPT_STATE_FAILED, KEPT_WORD)
    r.new_stream()   # a new stream reads the logs again from the start: the kept copy is rewritten, not grown
    assert list(r.reconcile().logs) == []

    config = site_file(tmp_path)
    assert main(["site", "logs", "j-1", "--config", config]) == 0
    assert capsys.readouterr().out == SECRET * 2, "the site has every byte, once"
    assert main(["site", "logs", "j-1", "--config", config, "--format", "json"]) == 0
    (attempt,) = json.loads(capsys.readouterr().out)["attempts"]
    assert (attempt["attempt"], attempt["logs"]) == (1, SECRET * 2)
    assert (tmp_path / ".fedctl-io" / "eu-west.logs" / f"{SID}.log").stat().st_mode & 0o077 == 0
    assert main(["site", "logs", "j-2", "--config", config]) == 3
    assert "site eu-west keeps no logs of job j-2" in capsys.readouterr().err


def test_without_the_federations_word_that_logs_may_cross_the_site_keeps_them(tmp_path):
    """An assignment that does not say (an older federation), and a job Ray holds that no assignment of
    this process named: both fail closed."""
    ray = MemoryRay()
    ray.jobs_["fed-j-9-1"] = RayJob("fed-j-9-1", "FAILED", RAY_FAILED + SECRET)
    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([assignment(crosses=())])
    r.reconcile()
    ray.jobs_[SID] = RayJob(SID, "RUNNING")
    ray.logs_[SID] = SECRET.encode()
    report = r.reconcile()
    assert list(report.logs) == [] and SECRET.encode() not in report.SerializeToString()
    assert {s.job_id: s.message for s in report.statuses} == {"j-1": "", "j-9": KEPT_WORD}


def test_the_sites_own_words_on_a_kept_job_go_up_as_they_are(tmp_path):
    ray = MemoryRay()
    r = Reconciler(site_config(tmp_path, tenants=["oncology"]), ray)
    r.set_desired([assignment("j-2", crosses=GDPR, datasets=["patients"], tenant="research")])
    (vetoed,) = r.reconcile().statuses
    assert (vetoed.state, vetoed.message) == (pb.ATTEMPT_STATE_REJECTED, "tenant research may not run here")

    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([assignment(crosses=GDPR, datasets=["patients"])])
    r.reconcile()
    ray.jobs_[SID] = RayJob(SID, "RUNNING")
    assert r.fence("lease expired") == 1
    statuses = {s.job_id: s for s in r.reconcile().statuses}
    assert (statuses["j-1"].state, statuses["j-1"].message) == (pb.ATTEMPT_STATE_LOST,
                                                               "stopped by the site: lease expired")


# ---------------------------------------------------------------- the federation


@pytest.fixture
def federation(tmp_path):
    server = start(tmp_path)
    yield server
    server.stop(grace=0)


@pytest.fixture
def agent(federation):
    """eu-west, holding gdpr-personal and public data, played by hand: it may send whatever it likes."""
    stub, channel = site_stub(federation)
    register(stub, datasets=(("patient-records-eu", "gdpr-personal"), ("open-weather", "public")))
    stub.Heartbeat(pb.HeartbeatRequest(name="eu-west"), timeout=5)
    agent = AgentStream(stub, "eu-west")
    yield agent
    agent.close()
    channel.close()


def assigned(agent: AgentStream, job_id: str) -> pb.Assignment:
    return wait_for(lambda: next((a for a in agent.next_assignments() if a.job_id == job_id), None), 10,
                    f"the assignment of {job_id}")


def status(job_id: str, state: int, message: str = "") -> pb.AttemptStatus:
    return pb.AttemptStatus(job_id=job_id, attempt=1, state=state, message=message)


def test_log_bytes_a_site_sends_for_a_job_whose_data_keeps_them_are_dropped(federation, agent, tmp_path, capsys):
    with admin_client(federation) as client:
        job = client.submit(make_spec("tok", datasets=["patient-records-eu"], retry={"limit": 0}))
        a = assigned(agent, job.id)
        assert list(a.may_cross_border) == list(GDPR), "the site is told: no logs"
        leak = SECRET.encode()
        agent.report([status(job.id, pb.ATTEMPT_STATE_RUNNING)],
                     [pb.LogChunk(job_id=job.id, attempt=1, offset=0, data=leak)])
        wait_for(lambda: job.status().state == "running", 5, "running")
        agent.report([status(job.id, pb.ATTEMPT_STATE_FAILED, KEPT_WORD)],
                     [pb.LogChunk(job_id=job.id, attempt=1, offset=len(leak), data=leak)])
        final = job.wait(timeout=5)
        assert (final.state, final.attempts[0].message) == ("failed", KEPT_WORD), "the site's word, as it sent it"

        notice = (f"logs of job {job.id} stay at site eu-west (classification gdpr-personal does not let logs "
                  f"cross); read them there: fedctl site logs {job.id} --config <site config of eu-west>")
        assert job.logs() == notice + "\n"
        assert client.logs(job.id) == notice + "\n"
        assert federation.control.store.read_log(job.id) == b"", "not one byte was stored"
        (refused,) = read(tmp_path / "fed.db", action="logs.refused")
        assert (refused.actor, refused.subject) == ("eu-west", job.id)
        assert refused.detail["reason"] == "classification gdpr-personal does not let logs cross"

    pki = federation.pki
    flags = ["--address", federation.address, "--ca", str(pki["ca"].cert), "--cert", str(pki["admin"].cert),
             "--key", str(pki["admin"].key)]
    capsys.readouterr()
    assert main(["logs", job.id, *flags]) == 0
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", notice + "\n")
    assert main(["logs", job.id, "-f", *flags]) == 0, "following ends at once: nothing will ever come"
    assert capsys.readouterr().err == notice + "\n"
    assert main(["logs", job.id, "--format", "json", *flags]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": job.id, "logs": "", "kept_at_site": notice}


@pytest.mark.parametrize("datasets", [[], ["open-weather"]], ids=["no-data", "public"])
def test_logs_of_a_job_whose_data_lets_them_cross_still_arrive(federation, agent, datasets):
    with admin_client(federation) as client:
        job = client.submit(make_spec("open", datasets=datasets))
        a = assigned(agent, job.id)
        assert "logs" in a.may_cross_border
        agent.report([status(job.id, pb.ATTEMPT_STATE_RUNNING)],
                     [pb.LogChunk(job_id=job.id, attempt=1, offset=0, data=b"42 rows\n")])
        wait_for(lambda: job.status().state == "running", 5, "running")
        agent.report([status(job.id, pb.ATTEMPT_STATE_SUCCEEDED)],
                     [pb.LogChunk(job_id=job.id, attempt=1, offset=8, data=b"done\n")])
        assert job.wait(timeout=5).state == "succeeded"
        assert job.logs() == "42 rows\ndone\n"
