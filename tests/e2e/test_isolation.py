"""Hostile jobs at a real site: the agent runs as root, its Ray head as an OS user of its own, and
each tenant's jobs on a Ray head of the tenant's own, as the tenant's OS user. A job tries what an
attacker's would (the site's keys, another tenant's folders, Ray token and jobs, a dataset it did
not name) and writes what it reached to a drop folder; the test asserts it reached nothing."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from federation.errors import Timeout
from federation.local import CONFIGS, LocalFederation
from site_agent.isolation import _ACL, _USER, _entries
from tests.e2e.conftest import os_users, running
from tests.e2e.test_federation import job
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
BASE = 25000                     # the site's head; tenant heads take the next 300-port spans
USERS = ("fedjob", "fedjob-alpha", "fedjob-beta")


@pytest.fixture(scope="module")
def fed():
    opened = os_users(USERS, HERE)
    work = Path(tempfile.mkdtemp(prefix="fiso-", dir="/tmp"))
    work.chmod(0o711)                                  # the heads' users pass through to their own folders
    shutil.copytree(HERE / "jobs", work / "jobs")
    (work / "data").mkdir(mode=0o711)
    dataset = work / "data" / "patients.csv"
    shutil.copy(CONFIGS / "data" / "patient-records-eu.csv", dataset)
    dataset.chmod(0o600)                               # the site's data: root's alone until a job names it
    drop = work / "drop"
    drop.mkdir()
    drop.chmod(0o1733)                                 # jobs leave their findings here, and cannot list them
    policy = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    policy["spec"]["datasets"]["patient-records-eu"]["sites"] = ["iso"]
    policy["spec"]["classifications"]["gdpr-personal"]["tenants"] = ["alpha"]
    (work / "policy.yaml").write_text(yaml.safe_dump(policy))
    site = {"location": {"jurisdiction": "DE", "region": "iso"}, "work_dir": str(work),
            "datasets": [{"name": "patient-records-eu", "path": str(dataset)}],
            "ray": {"local": {"num_cpus": 4, "run_as": "fedjob",
                              "tenant_heads": {"user": "fedjob-{tenant}", "max": 2}}}}
    federation = LocalFederation(work=work, sites={"iso": site}, port_bases={"iso": BASE},
                                 policy=work / "policy.yaml", scheduler_interval_s=0.1)
    federation.dataset, federation.drop = dataset, drop
    try:
        yield from running(federation)
    finally:
        for folder, mode in opened:
            folder.chmod(mode)


def probe(fed, name: str, tenant: str, probes: dict[str, tuple[str, str]], hold: float = 0, **spec) -> dict:
    return job(name, tenant=tenant, entrypoint="python probe.py",
               env={"PROBES": json.dumps(probes), "RESULTS": str(fed.drop), "NAME": name, "HOLD": str(hold)}, **spec)


def found(fed, name: str) -> dict:
    return json.loads((fed.drop / f"{name}.json").read_text())


def site_warnings(fed) -> list[str]:
    return [ln for ln in (fed.work / "iso.log").read_text().splitlines() if "WARNING" in ln or "ERROR" in ln][-5:]


def running_with_findings(fed, job, name: str) -> bool:
    status = job.status()
    assert status.state == "running" and (fed.drop / f"{name}.json").exists(), (
        f"{status.state}: {status.message}; the site said: {site_warnings(fed)}")
    return True


def ended(fed, job) -> str:
    """The job's end state; on a timeout, what the site warned of (a head starts in seconds, but
    three on a loaded machine may take minutes)."""
    try:
        return job.wait(timeout=240).state
    except Timeout:
        raise AssertionError(f"{job.id} did not end: {job.status().message}; the site said: {site_warnings(fed)}") \
            from None


def acl_users(path: Path) -> set[int]:
    try:
        return {uid for tag, _, uid in _entries(os.getxattr(path, _ACL)) if tag == _USER}
    except OSError:
        return set()


def test_jobs_reach_neither_the_agents_keys_nor_another_tenant_nor_data_they_did_not_name(fed):
    io = fed.work / ".fedctl-io"
    with fed.client(timeout=30) as client:
        beta = client.submit(probe(fed, "beta-hold", "beta", {"dataset": ("read", str(fed.dataset))}, hold=120))
        wait_for(lambda: running_with_findings(fed, beta, "beta-hold"), 240, "beta's job running on its own head")
        beta_sid = f"fed-{beta.id}-1"
        alpha = client.submit(probe(fed, "alpha-blind", "alpha", {
            "site key": ("read", str(fed.pki["iso"].key)),
            "agreement key": ("read", str(io / "iso.x25519")),
            "site head token": ("read", str(fed.work / f"r{BASE}" / "auth_token")),
            "beta head token": ("read", f"/tmp/fedray-{BASE + 300}/auth_token"),
            "beta head jobs": ("ray-jobs", f"http://127.0.0.1:{BASE + 301}"),
            "own head jobs": ("ray-jobs", f"http://127.0.0.1:{BASE + 601}"),
            "attempt folders": ("list", str(io / "iso")),
            "beta inputs": ("list", str(io / "iso" / beta_sid / "in")),
            "beta outputs": ("write", str(io / "iso" / beta_sid / "out")),
            "kept logs": ("list", str(io / "iso.logs")),
            "dataset": ("read", str(fed.dataset)),
        }))
        assert ended(fed, alpha) == "succeeded", alpha.status().message
        seen = found(fed, "alpha-blind")
        assert seen.pop("user") == "fedjob-alpha"
        own = seen.pop("own head jobs")
        assert own.startswith("ok:") and f"fed-{alpha.id}-1" in own and beta_sid not in own
        assert seen.pop("beta head jobs") in ("http-401", "http-403")
        assert seen.pop("kept logs") in ("denied", "missing")
        assert seen == dict.fromkeys(seen, "denied"), seen
        assert found(fed, "beta-hold") == {"user": "fedjob-beta", "dataset": "denied"}

        named = client.submit(probe(fed, "alpha-named", "alpha", {"dataset": ("read", str(fed.dataset))},
                                    datasets=["patient-records-eu"]))
        assert ended(fed, named) == "succeeded", named.status().message
        assert found(fed, "alpha-named") == {"user": "fedjob-alpha", "dataset": "ok"}
        wait_for(lambda: not acl_users(fed.dataset), 30, "the grant taken back once the attempt ended")
        assert oct(fed.dataset.stat().st_mode & 0o777) == "0o600"
        beta.cancel()
        assert beta.wait(timeout=60).state == "cancelled"
