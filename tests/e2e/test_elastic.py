"""An on-prem site and an elastic cloud site, real processes end to end: the cloud's Ray head adds
nodes through its autoscaler (Ray's fake multi-node provider: real raylets started on demand) for
work the federation spills there, and removes them when idle; a GDPR job waits rather than leave
its jurisdiction; a spot node taken back mid-job loses its attempt, and the job resumes from its
checkpoint and ends once."""
from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest
import yaml

from federation.local import CONFIGS, LocalFederation
from site_agent.local_ray import descendants
from tests.e2e.conftest import running
from tests.e2e.test_faults import ran_once
from tests.e2e.test_federation import job
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
PRICES = {"currency": "USD", "cpu_hour": 0.05, "memory_gib_hour": 0.005,
          "spot": {"cpu_hour": 0.015, "memory_gib_hour": 0.0015}}
SITES = {
    "onprem": {"location": {"jurisdiction": "DE", "region": "eu-west"}, "ray": {"local": {"num_cpus": 2}},
               "pricing": {"currency": "USD", "cpu_hour": 0.01}, "work_dir": str(HERE),
               "datasets": [{"name": "records-eu", "path": str(HERE / "jobs" / "report.py")}]},
    "cloud": {"location": {"jurisdiction": "US", "region": "us-east"}, "ray": {"local": {"num_cpus": 0}},
              "pricing": PRICES, "work_dir": str(HERE),
              "elastic": {"idle_timeout": "6s", "node_types": [
                  {"name": "cpu-od", "cpus": 1, "memory": "1Gi", "max": 1, "start": "10s"},
                  {"name": "cpu-spot", "cpus": 1, "memory": "1Gi", "max": 1, "spot": True, "start": "15s"}]}},
}


@pytest.fixture(scope="module")
def fed():
    work = Path(tempfile.mkdtemp(prefix="felastic-", dir="/tmp"))
    policy = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    policy["spec"]["datasets"]["records-eu"] = {"classification": "gdpr-personal", "sites": ["onprem"],
                                                "tenants": ["e2e"]}
    (work / "policy.yaml").write_text(yaml.safe_dump(policy))
    federation = LocalFederation(work=work, sites=SITES, port_bases={"onprem": 20000, "cloud": 20400},
                                 scheduler_interval_s=0.1, policy=work / "policy.yaml")
    federation.ledger = work / "ledger"
    yield from running(federation)


@pytest.fixture
def client(fed):
    with fed.client(timeout=30) as c:
        yield c


def up(client, node_type: str) -> int:
    return next(t["up"] for t in client.site("cloud").node_types if t["name"] == node_type)


def sleeper(name: str, seconds: float, **spec) -> dict:
    return job(name, entrypoint=f"sleep {seconds}", **spec)


def fill_onprem(client, seconds: float = 30) -> list:
    jobs = [client.submit(sleeper(f"fill-{i}", seconds, placement={"sites": ["onprem"]})) for i in range(2)]
    wait_for(lambda: all(j.status().state == "running" for j in jobs), 60, "on-prem full")
    return jobs


def test_the_cloud_site_shows_its_prices_and_node_types(client):
    cloud = client.site("cloud")
    assert cloud.pricing["currency"] == "USD" and cloud.pricing["spot"]["cpu_hour"] == 0.015
    types = {t["name"]: t for t in cloud.node_types}
    assert (types["cpu-od"]["max"], types["cpu-spot"]["spot"], types["cpu-od"]["up"]) == (1, True, 0)
    assert types["cpu-od"]["price_hour"] == pytest.approx(0.05 + 0.005)


def test_work_spills_to_a_new_cloud_node_which_goes_when_idle_and_gdpr_work_waits(fed, client):
    fillers = fill_onprem(client)
    spill = client.submit(sleeper("spill", 3))
    gdpr = client.submit(job("gdpr", datasets=["records-eu"]))
    placed = wait_for(lambda: (p := client.explain(spill.id)).site and p, 30, "the spill-over placed")
    assert placed.site == "cloud"
    assert "starts on a new cpu-od node the site adds (about 10 s)" in placed.summary, placed.summary
    assert "0.05 USD/h" in placed.summary
    wait_for(lambda: up(client, "cpu-od") >= 1, 60, "a cpu-od node to come up at the cloud")
    assert spill.wait(timeout=90).state == "succeeded"
    assert node_type_of(fed, spill.status().attempts[-1]) == "cpu-od", "the job ran on the node added for it"
    # GDPR data may not leave DE: the US cloud is no place for it, however much room it has.
    why = client.explain(gdpr.id)
    assert gdpr.status().state == "pending" and not why.site
    assert {v.site: v.reason_code for v in why.verdicts}["cloud"] == "jurisdiction", why.verdicts
    for f in fillers:
        f.cancel()
    assert gdpr.wait(timeout=90).state == "succeeded" and gdpr.status().site == "onprem"
    wait_for(lambda: up(client, "cpu-od") == 0, 90, "the idle cloud node to be removed")


def nodes(fed) -> list[dict]:
    return fed.ray_api("cloud", "/api/v0/nodes?detail=1")["data"]["result"]["result"]


def node_of(fed, attempt) -> str:
    """The Ray node the attempt's driver ran on, by Ray's own record of the job."""
    return fed.ray_api("cloud", f"/api/jobs/{attempt.submission_id}")["driver_node_id"]


def node_type_of(fed, attempt) -> str:
    return next(n["labels"].get("node-type", "head") for n in nodes(fed) if n["node_id"] == node_of(fed, attempt))


def kill_node(fed, node_type: str) -> str:
    """A spot reclaim: the node's raylet, then everything of it, killed; its id."""
    node_id = next(n["node_id"] for n in nodes(fed) if n["labels"].get("node-type") == node_type
                   and n["state"] == "ALIVE")
    victims = []
    for proc in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = proc.read_bytes().decode(errors="replace")
        except OSError:
            continue
        if f"--node_id={node_id}" in cmd or f"--node-id={node_id}" in cmd:
            victims.append((0 if "raylet" in cmd else 1, int(proc.parent.name)))
    assert victims, f"no process of node {node_id}"
    for _, pid in sorted(victims):
        for p in (pid, *descendants(pid)):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return node_id


def test_a_spot_node_taken_back_mid_job_resumes_from_the_checkpoint_once(fed, client, tmp_path):
    fillers = fill_onprem(client, seconds=20)
    spec = job("spotty", entrypoint="python ledger.py", checkpoint={"path": str(tmp_path / "{job_id}.ckpt")},
               placement={"spot": "prefer"}, retry={"backoff": "0.5s"},
               env={"LEDGER": str(fed.ledger), "HOLD": "12", "TICK": "0.5"})
    j = client.submit(spec)
    wait_for(lambda: (s := j.status()).state == "running" and s.site == "cloud", 90, "running on a spot node")
    assert "spot" in client.explain(j.id).summary
    wait_for(lambda: (tmp_path / f"{j.id}.ckpt").exists() and int((tmp_path / f"{j.id}.ckpt").read_text()) >= 4,
             60, "a few checkpointed ticks")
    taken = kill_node(fed, "cpu-spot")
    assert node_of(fed, j.status().attempts[0]) == taken
    final = j.wait(timeout=180)
    assert final.state == "succeeded", final
    assert [a.state for a in final.attempts] == ["lost", "succeeded"], final.attempts
    assert "lost with its node" in final.attempts[0].message
    runs = ran_once(fed, [j])[j.id]
    assert [n for n, *_ in runs] == [1, 2] and runs[0][1] == "cloud"
    again = final.attempts[1]
    assert again.site == "onprem" or node_of(fed, again) != taken, "resumed elsewhere, not on the node taken back"
    log = client.logs(j.id)
    assert "resumed at tick" in log, log
    assert [f.wait(timeout=60).state for f in fillers] == ["succeeded", "succeeded"]
