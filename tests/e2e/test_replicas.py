"""Two federation replicas, real `fedctl server` processes on one real PostgreSQL database, with
sites played over mutual TLS: the leader is killed with -9 in the middle of a stream of 2,000
submissions. The other replica leads within the sites' lease, no submission is lost or stored
twice, every job ends once, and no site is ever told to stop work it was running."""
from __future__ import annotations

import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from federation.client import Client
from federation.local import LocalFederation, free_port, stop_processes
from federation.played import PlayedSite, leader_at
from tests.conftest import make_spec
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

LEASE_S = 6.0
JOBS, KILL_AFTER = 2000, 500
SITES = {name: {"location": {"jurisdiction": "DE", "region": name}} for name in ("site-a", "site-b")}


def test_killing_the_leader_mid_stream_loses_duplicates_and_stops_nothing(tmp_path, postgres_url):
    fed = LocalFederation(work=tmp_path, sites=SITES, port_bases={}, site_timeout_s=LEASE_S,
                          scheduler_interval_s=0.1)
    addresses = [fed.address, f"127.0.0.1:{free_port()}"]
    first = fed.start_replica("replica-1", addresses[0], postgres_url)
    wait_for(lambda: leader_at(addresses[0], fed.pki) == addresses[0], 30, "replica-1 to lead")
    second = fed.start_replica("replica-2", addresses[1], postgres_url)
    sites = [PlayedSite(name, addresses, fed.pki) for name in SITES]
    for s in sites:
        s.start()
    client = Client(addresses, ca=fed.pki["ca"].cert, cert=fed.pki["admin"].cert, key=fed.pki["admin"].key,
                    timeout=60)
    acknowledged: dict[str, str] = {}
    killed_at = 0.0

    def submit(i: int) -> None:
        nonlocal killed_at
        request_id = uuid.uuid4().hex
        acknowledged[request_id] = client.submit(make_spec(f"stream-{i}", tenant="stream",
                                                           resources={"cpus": 0.01}), request_id).id
        if len(acknowledged) == KILL_AFTER and not killed_at:
            first.send_signal(signal.SIGKILL)
            killed_at = time.time()

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(submit, range(JOBS)))
        assert killed_at, "the leader was killed mid-stream"
        wait_for(lambda: leader_at(addresses[1], fed.pki) == addresses[1], 30, "replica-2 to lead")
        jobs = wait_for(lambda: (js := client.jobs(tenant="stream", limit=None)) and
                        all(j.terminal for j in js) and len(js) >= JOBS and js, 180, "every job to end")
        assert len(set(acknowledged.values())) == JOBS, "each acknowledged submission is its own job"
        assert sorted(j.id for j in jobs) == sorted(acknowledged.values()), "nothing lost, nothing stored twice"
        assert {(j.state, len(j.attempts)) for j in jobs} == {("succeeded", 1)}, "every job ended once"
        assert all(not s.stopped for s in sites), [sorted(s.stopped)[:5] for s in sites]
        after = min(t for s in sites for _, t in s.placed if t > killed_at)
        print(f"\nkill -9 of the leader to the first placement by the new one: {after - killed_at:.2f}s "
              f"({JOBS} submissions, the leader killed after {KILL_AFTER})")
    finally:
        for s in sites:
            s.done.set()
        client.close()
        stop_processes([p for p in (first, second) if p.poll() is None])
