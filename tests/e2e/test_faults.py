"""Fault injection with real processes: the federation killed mid-scheduling, an agent killed with
jobs running, a site's Ray cluster stopped, a site partitioned past its lease and healed, and
everything restarted in turn during a stream of submissions. After each, every job has ended once,
and the ledger its attempts write proves none ran twice or in two places at once."""
from __future__ import annotations

import itertools
import os
import re
import signal
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from federation.errors import Timeout
from federation.local import LocalFederation, Proxy
from site_agent.local_ray import descendants
from tests.e2e.conftest import running
from tests.e2e.test_federation import job
from tests.scrape import scraped, value
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
LEASE_S = 6.0
SITES = {name: {"location": {"jurisdiction": "DE", "region": name}, "ray": {"local": {"num_cpus": 4}},
                "work_dir": str(HERE)} for name in ("north", "south")}


@pytest.fixture(scope="module")
def fed():
    work = Path(tempfile.mkdtemp(prefix="ffault-", dir="/tmp"))
    federation = LocalFederation(work=work, sites=SITES, port_bases={"north": 29000, "south": 29400},
                                 site_timeout_s=LEASE_S, scheduler_interval_s=0.1, witness=True, metrics=True)
    federation.ledger = work / "ledger"
    yield from running(federation)


@pytest.fixture
def client(fed):
    with fed.client(timeout=60) as c:   # long enough to ride out a federation restart
        yield c


def ledger_job(fed, name: str, hold: float, **spec) -> dict:
    return job(name, tenant="faults", entrypoint="python ledger.py",
               env={"LEDGER": str(fed.ledger), "HOLD": str(hold)}, **spec)


def ran_once(fed, jobs, *, unseen_ends: bool = False) -> dict[str, list[tuple[int, str, float, float]]]:
    """Each job succeeded once and no two of its attempts ever ran at the same time: per job, its
    attempts as (number, site, first ledger line, last ledger line).

    With `unseen_ends`, an attempt may also have run to its end unseen and been re-placed all the
    same: its agent was down longer than the lease (it ended before its guard's deadline), or its
    Ray cluster was killed as it ended (before Ray recorded the end). The federation could not
    know. That is the one way a job ends twice, one attempt after the other, and the federation's
    record must say so (lost by its site's silence, or vanished with its cluster)."""
    lines: dict[tuple[str, int], list[tuple[str, str, float]]] = defaultdict(list)
    for line in fed.ledger.read_text().splitlines():
        event, job_id, attempt, site, at = line.split()
        lines[(job_id, int(attempt))].append((event, site, float(at)))
    out = {}
    for j in jobs:
        status = j.status()
        assert status.state == "succeeded", (j.id, status.state, status.message)
        runs = sorted((n, ev[0][1], ev[0][2], ev[-1][2]) for (job_id, n), ev in lines.items() if job_id == j.id)
        ends = sorted(n for (job_id, n), ev in lines.items() if job_id == j.id and ev[-1][0] == "end")
        unseen = [a for a in status.attempts[:-1] if a.number in ends]
        assert len(ends) == 1 or unseen_ends, (j.id, runs, status.attempts)
        assert all(a.state == "lost" and ("no heartbeat" in a.message or "vanished" in a.message) for a in unseen), (
            j.id, runs, status.attempts)
        assert ends[-1] == status.attempts[-1].number and status.attempts[-1].state == "succeeded"
        for (_, _, _, last), (n, _, first, _) in itertools.pairwise(runs):
            assert last < first, f"{j.id}: attempt {n} started before the one before it stopped: {runs}"
        out[j.id] = runs
    return out


def kill_ray(fed, name: str) -> None:
    """Stop a site's Ray cluster as a crash would: every process of it, at once."""
    pid = fed.ray_head_pid(name)
    family = descendants(pid) | {pid}
    for p in family:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_killing_the_federation_mid_scheduling_loses_and_duplicates_nothing(fed, client):
    submitted: list = []

    def submit_stream():
        for i in range(12):
            submitted.append(client.submit(ledger_job(fed, f"stream-{i}", 0.5)))

    submitter = threading.Thread(target=submit_stream)
    submitter.start()
    wait_for(lambda: len(submitted) >= 4, 60, "some submissions")
    fed.server.send_signal(signal.SIGKILL)
    fed.server.wait()
    fed.start_server()          # same store, same address: the SDK's retries reach it
    submitter.join(timeout=120)
    assert len(submitted) == 12
    wait_for(lambda: all(j.status().terminal for j in submitted), 120, "every job to end")
    ran_once(fed, submitted)
    names = [j.name for j in client.jobs(tenant="faults") if j.name.startswith("stream-")]
    assert sorted(names) == sorted(f"stream-{i}" for i in range(12))   # none lost, none stored twice


def test_an_agent_killed_with_jobs_running_adopts_them_when_it_returns(fed, client):
    jobs = [client.submit(ledger_job(fed, f"adopt-{i}", 6, placement={"sites": ["north"]})) for i in range(2)]
    wait_for(lambda: all(j.status().state == "running" for j in jobs), 60, "both running on north")
    fed.agents["north"].send_signal(signal.SIGKILL)
    fed.agents["north"].wait()
    fed.start_agent("north")    # well inside the lease: nothing is fenced or re-placed
    fed.wait_connected(60)
    wait_for(lambda: all(j.status().terminal for j in jobs), 60, "both to end")
    for runs in ran_once(fed, jobs).values():
        assert [(n, site) for n, site, _, _ in runs] == [(1, "north")]   # adopted, never started again
    assert "adopted the local Ray head" in (fed.work / "north.log").read_text()


def test_an_agent_killed_with_tasks_running_adopts_them_from_its_runner(fed, client):
    jobs = [client.submit(ledger_job(fed, f"adopt-task-{i}", 6, placement={"sites": ["north"]}, execution="task",
                                     resources={"cpus": 0.1})) for i in range(3)]
    wait_for(lambda: all(j.status().state == "running" for j in jobs), 60, "all three running on north")
    fed.agents["north"].send_signal(signal.SIGKILL)
    fed.agents["north"].wait()
    fed.start_agent("north")    # well inside the lease: the runner and its tasks ran on meanwhile
    fed.wait_connected(60)
    wait_for(lambda: all(j.status().terminal for j in jobs), 60, "all three to end")
    for runs in ran_once(fed, jobs).values():
        assert [(n, site) for n, site, _, _ in runs] == [(1, "north")]   # adopted, never started again
    assert not any(f"fed-{j.id}-1" in fed.ray_jobs("north") for j in jobs), "tasks of the runner, not Ray jobs"


@pytest.mark.parametrize("execution", ["driver", "task"])
def test_an_agent_dead_past_its_lease_has_its_job_stopped_by_its_guard_before_it_runs_elsewhere(fed, client,
                                                                                                 execution):
    j = client.submit(ledger_job(fed, f"orphaned-{execution}", 12, placement={"prefer": ["north"]},
                                 execution=execution))
    wait_for(lambda: (s := j.status()).state == "running" and s.site == "north", 60, "running on north")
    try:
        fed.agents["north"].send_signal(signal.SIGKILL)   # nobody left at north to fence it
        fed.agents["north"].wait()
        killed = time.time()
        final = wait_for(lambda: (s := j.status()).terminal and s, 120, "the job to end")
    finally:
        fed.start_agent("north")
        fed.wait_connected(60)
    runs = ran_once(fed, [j])[j.id]
    assert [(n, site) for n, site, _, _ in runs] == [(1, "north"), (2, "south")]
    assert runs[0][3] < killed + LEASE_S, "its guard stopped it before the federation's lease ran out"
    assert [a.state for a in final.attempts] == ["lost", "succeeded"]
    assert "site north lost: no heartbeat" in final.attempts[0].message


def test_a_sites_ray_cluster_that_dies_is_restarted_and_its_jobs_retried(fed, client):
    j = client.submit(ledger_job(fed, "ray-dies", 3, placement={"sites": ["south"]}, retry={"backoff": "0.5s"},
                                 checkpoint={"path": str(fed.work / "ckpt-{job_id}")}))
    wait_for(lambda: j.status().state == "running", 60, "running on south")
    wait_for(lambda: (fed.work / f"ckpt-{j.id}").exists(), 30, "a checkpoint")
    kill_ray(fed, "south")
    final = wait_for(lambda: (s := j.status()).terminal and s, 120, "the job to end")
    assert [a.state for a in final.attempts] == ["lost", "succeeded"], final
    assert "vanished" in final.attempts[0].message
    ran_once(fed, [j])
    resumed = re.search(r"resumed at tick (\d+) of 15", j.logs())
    assert resumed and int(resumed.group(1)) >= 1, j.logs()
    second = fed.ledger.read_text().count(f"tick {j.id} 2 ")
    assert second == 15 - int(resumed.group(1)), "the second attempt did only what the first had not checkpointed"
    fed.wait_connected(60)


def test_the_federation_down_for_twice_the_lease_stops_no_work(fed, client):
    """kill -9 the federation while jobs run at both sites and keep it down for two leases: the
    witness tells the sites nobody leads, so they keep their work, and each job runs once."""
    jobs = [client.submit(ledger_job(fed, f"outage-{site}", 4 * LEASE_S, placement={"sites": [site]}))
            for site in ("north", "south")]
    wait_for(lambda: all(j.status().state == "running" for j in jobs), 60, "both jobs running")
    marks = {name: (fed.work / f"{name}.log").stat().st_size for name in fed.agents}
    fed.stop_server(signal.SIGKILL)
    time.sleep(2 * LEASE_S)   # the outage itself: what is measured is what the sites did through it
    fed.start_server(timeout=60)
    for j in jobs:
        status = j.wait(timeout=120)
        assert status.state == "succeeded" and len(status.attempts) == 1, (j.id, status.attempts)
    assert {j.id: len(runs) for j, runs in zip(jobs, ran_once(fed, jobs).values(), strict=True)} == {
        j.id: 1 for j in jobs}
    for name, mark in marks.items():
        with open(fed.work / f"{name}.log") as f:
            f.seek(mark)
            through = f.read()
        assert "no replica leads the federation" in through and "fenced" not in through, (name, through[-2000:])
    fed.wait_connected(60)


def test_a_partitioned_site_fences_its_work_which_runs_once_elsewhere_and_it_rejoins(fed, client):
    proxy = Proxy(fed.address)
    fed.agents["north"].send_signal(signal.SIGTERM)
    fed.agents["north"].wait()
    fed.start_agent("north", address=proxy.address)
    fed.wait_connected(60)
    try:
        j = client.submit(ledger_job(fed, "partitioned", 10, placement={"prefer": ["north"]}))
        wait_for(lambda: (s := j.status()).state == "running" and s.site == "north", 60, "running on north")
        cut = time.time()
        proxy.partition()
        final = wait_for(lambda: (s := j.status()).terminal and s, 120, "the job to end")
        runs = ran_once(fed, [j])[j.id]
        assert [(n, site) for n, site, _, _ in runs] == [(1, "north"), (2, "south")]
        assert [a.state for a in final.attempts] == ["lost", "succeeded"]
        assert "site north lost" in final.attempts[0].message
        moved = runs[1][2] - cut
        assert runs[0][3] < cut + LEASE_S, "north fenced its attempt before the federation's lease ran out"
        log = (fed.work / "north.log").read_text()
        assert "fenced: lease expired" in log
        seen = scraped(fed)
        assert value(seen, "fedctl_site_lost", site="north") == 1 and value(seen, "fedctl_site_connected",
                                                                            site="north") == 0
        assert value(seen, "fedctl_attempts_ended_total", site="north", state="lost") >= 1
        assert value(scraped(fed, "north"), "fedctl_agent_fenced") == 1, "north's own metrics say it fenced"
        print(f"\nsite loss to running elsewhere: {moved:.1f}s with a {LEASE_S:g}s lease")
        proxy.heal()
        wait_for(lambda: {s.name: s for s in client.sites()}["north"].connected, 60, "north to rejoin")
        again = client.submit(ledger_job(fed, "after-heal", 0.5, placement={"sites": ["north"]}))
        assert again.wait(timeout=60).state == "succeeded"
    finally:
        proxy.close()
        fed.agents["north"].send_signal(signal.SIGTERM)
        fed.agents["north"].wait()
        fed.start_agent("north")
        fed.wait_connected(60)


def test_restarting_everything_in_turn_during_a_stream_of_submissions(fed, client):
    submitted: list = []
    done = threading.Event()

    def submit_stream():
        i = 0
        while not done.is_set():
            spec = ledger_job(fed, f"rolling-{i}", 1, retry={"backoff": "0.5s"})
            for _ in range(30):
                try:   # a restarting server may not answer in time: the same request id never stores twice
                    submitted.append(client.submit(spec, f"rolling-{i}"))
                    break
                except Timeout:
                    continue
            i += 1
            done.wait(0.3)   # a steady stream, ending as soon as the restarts are over

    submitter = threading.Thread(target=submit_stream)
    submitter.start()
    try:
        fed.stop_server()
        fed.start_server()
        for name in ("north", "south"):
            fed.agents[name].send_signal(signal.SIGKILL)
            fed.agents[name].wait()
            fed.start_agent(name)
            fed.wait_connected(60)
        kill_ray(fed, "north")
        wait_for(lambda: len(submitted) >= 20, 120, "twenty submissions")
    finally:
        done.set()
        submitter.join(timeout=120)
    wait_for(lambda: all(j.status().terminal for j in submitted), 180, "every job to end")
    # An agent killed here may take longer than the 6 s lease to start again on a loaded machine, and
    # north's Ray cluster is killed with whatever ends at that moment.
    ran_once(fed, submitted, unseen_ends=True)
    names = [j.name for j in client.jobs(tenant="faults") if j.name.startswith("rolling-")]
    assert sorted(names) == sorted(j.name for j in (s.status() for s in submitted))
