"""End to end on real Ray sites: dependency chains and job arrays with a running limit."""
from __future__ import annotations

import pytest

from tests.e2e.test_federation import job, write
from tests.scrape import scraped, value
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def interval(logs: str) -> tuple[float, float]:
    """(start, end) wall-clock times a stamp.py run printed."""
    stamps = {line.split()[0]: float(line.split()[1]) for line in logs.splitlines()
              if line.startswith(("start ", "end "))}
    return stamps["start"], stamps["end"]


def test_an_after_ok_chain_submitted_with_the_cli_runs_in_order(federation, client, tmp_path):
    spec = job("chain", entrypoint="python stamp.py", env={"HOLD": "0.5"}, resources={"cpus": 0.5})
    first = federation.cli_json("submit", write(tmp_path, spec, "a.yaml"))
    second = federation.cli_json("submit", write(tmp_path, spec, "b.yaml"), "--after-ok", first["id"])
    third = federation.cli_json("submit", write(tmp_path, spec, "c.yaml"), "--after-ok", second["id"],
                                "--wait", "--timeout", "120")
    assert third["state"] == "succeeded", third
    runs = [interval(client.job(j["id"]).logs()) for j in (first, second, third)]
    assert runs[0][1] <= runs[1][0] and runs[1][1] <= runs[2][0], f"the chain overlapped: {runs}"
    usage = {r["queue"]: r for r in client.usage(group_by=["queue"])}
    assert usage["default"]["attempts"] >= 3 and usage["default"]["cpu_seconds"] > 0


def test_a_ten_element_array_never_runs_more_than_two_at_once(federation, client):
    array = client.submit(job("sweep", entrypoint="python stamp.py", env={"HOLD": "1"}, resources={"cpus": 0.5},
                              array="0-9%2"))
    statuses = array.wait(timeout=240)
    assert [s.state for s in statuses] == ["succeeded"] * 10, [s.message for s in statuses]
    logs = [j.logs() for j in array]
    runs = [interval(text) for text in logs]
    seen = [next(line.split()[3] for line in text.splitlines() if line.startswith("start ")) for text in logs]
    assert seen == [str(i) for i in range(10)], "each element saw its own index"
    # The most elements alive at any moment, from when each really started and ended on Ray.
    events = sorted([(start, 1) for start, _ in runs] + [(end, -1) for _, end in runs])
    alive, most = 0, 0
    for _, step in events:
        alive += step
        most = max(most, alive)
    assert most == 2, f"at most 2 at once, and the limit was used: {most}"


def test_a_low_priority_job_is_preempted_requeued_and_finishes_with_usage_for_both(federation, client, tmp_path):
    preempted_before = value(scraped(federation), "fedctl_preemptions_total", site="us-east")
    only_us = {"sites": ["us-east"]}
    low = client.submit(job("low", tenant="e2e-batch", entrypoint="python stamp.py", priority="low",
                            env={"MARK": str(tmp_path / "first-run"), "HOLD_FIRST": "120", "HOLD": "0.5"},
                            resources={"cpus": 4}, placement=only_us))
    wait_for(lambda: low.status().state == "running", 90, "the low-priority job running")
    high = client.submit(job("high", tenant="e2e-urgent", entrypoint="python stamp.py", priority="high",
                             env={"HOLD": "0.5"}, resources={"cpus": 4}, placement=only_us))
    assert high.wait(timeout=120).state == "succeeded"
    final = low.wait(timeout=120)
    assert final.state == "succeeded", final.message
    assert [a.state for a in final.attempts] == ["preempted", "succeeded"]
    assert final.attempts[0].message == f"preempted for {high.id} (priority: {high.id} outranks it)"
    # The first run never ended (it was stopped); the high job ran next; the second run came after it.
    low_starts = [float(line.split()[1]) for line in low.logs().splitlines() if line.startswith("start ")]
    high_start, high_end = interval(high.logs())
    assert len(low_starts) == 2 and low_starts[0] < high_start < high_end < low_starts[1]
    usage = {r["tenant"]: r for r in client.usage(group_by=["tenant", "site"])}
    assert usage["e2e-batch"]["attempts"] == 2 and usage["e2e-batch"]["cpu_seconds"] > 0
    assert usage["e2e-urgent"]["attempts"] == 1 and usage["e2e-urgent"]["site"] == "us-east"
    after = scraped(federation)
    assert value(after, "fedctl_preemptions_total", site="us-east") == preempted_before + 1
    assert value(after, "fedctl_attempts_ended_total", site="us-east", state="preempted") >= 1
