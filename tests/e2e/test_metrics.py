"""Prometheus metrics of a real federation and real agents with real Ray heads, scraped over mutual
TLS while a job runs: the values follow the run."""
from __future__ import annotations

import pytest

from tests.e2e.test_federation import job
from tests.scrape import scraped, total, value
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def test_the_federation_and_its_agents_report_a_job_as_it_runs(federation, client):
    for site in ("eu-west", "us-east"):
        agent = scraped(federation, site)
        assert value(agent, "fedctl_agent_connected") == 1 and value(agent, "fedctl_agent_ray_reachable") == 1
        assert value(agent, "fedctl_agent_fenced") == 0 and value(agent, "fedctl_agent_lease_remaining_seconds") > 0
        assert value(agent, "fedctl_agent_reconcile_seconds_count") > 0
    before = scraped(federation)
    j = client.submit(job("watched", entrypoint="python stamp.py", env={"HOLD": "4"}, resources={"cpus": 1},
                          placement={"sites": ["eu-west"]}))
    wait_for(lambda: value(scraped(federation, "eu-west"), "fedctl_agent_attempts_running") >= 1, 90,
             "eu-west's agent to count the attempt running")
    running = scraped(federation)
    assert total(running, "fedctl_jobs", state="running", tenant="e2e") >= 1
    assert total(running, "fedctl_placements_total") == total(before, "fedctl_placements_total") + 1
    assert value(running, "fedctl_submissions_total", tenant="e2e") == \
        value(before, "fedctl_submissions_total", tenant="e2e") + 1
    assert value(running, "fedctl_site_running_attempts", site="eu-west") >= 1
    assert value(running, "fedctl_site_free", site="eu-west", resource="cpus") <= \
        value(running, "fedctl_site_capacity", site="eu-west", resource="cpus") - 1
    assert value(running, "fedctl_site_gpus", site="us-east", model="H100") == 2
    assert j.wait(timeout=120).state == "succeeded"
    ended = wait_for(lambda: (s := scraped(federation)) and value(
        s, "fedctl_attempts_ended_total", site="eu-west", state="succeeded") > value(
        before, "fedctl_attempts_ended_total", site="eu-west", state="succeeded") and s, 30, "the success counted")
    assert value(ended, "fedctl_audit_chain_verified") == 1
