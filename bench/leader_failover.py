"""Leader failover: the time from kill -9 of the leading replica to the first placement by the next.

    python -m bench.leader_failover [--trials 3] [--stores sqlite,postgres]

Per store, per trial: two real `fedctl server` replicas on one store (a SQLite file, or a real
PostgreSQL started from the OS packages), two sites played over mutual TLS that follow the
leader, and a stream of submissions (20 a second). The leader is killed with -9; the figure is
the time to the first assignment a site receives for a job submitted after the kill. The
baseline, in the same run: one replica, killed and started again at once (what a supervisor
such as systemd does), measured the same way.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

from federation.client import Client
from federation.local import LocalFederation, free_port, stop_processes
from federation.played import PlayedSite, leader_at

SITES = {name: {"location": {"jurisdiction": "DE", "region": name}} for name in ("site-a", "site-b")}
SPEC = {"metadata": {"name": "failover", "tenant": "bench"},
        "spec": {"entrypoint": "true", "resources": {"cpus": 0.01}}}


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise SystemExit(f"FAILED: no {what} within {timeout:g}s")


def trial(work: Path, database: str, replicas: int) -> float:
    """Seconds from kill -9 of the leader to the first placement of a job submitted after it."""
    fed = LocalFederation(work=work, sites=SITES, port_bases={}, site_timeout_s=30, scheduler_interval_s=0.1)
    addresses = [fed.address] + [f"127.0.0.1:{free_port()}" for _ in range(replicas - 1)]
    processes = [fed.start_replica("replica-1", addresses[0], database)]
    wait(lambda: leader_at(addresses[0], fed.pki) == addresses[0], 60, "replica-1 to lead")
    processes += [fed.start_replica(f"replica-{i + 1}", a, database) for i, a in enumerate(addresses[1:], 1)]
    sites = [PlayedSite(name, addresses, fed.pki, hold_s=0.05) for name in SITES]
    for s in sites:
        s.start()
    client = Client(addresses, ca=fed.pki["ca"].cert, cert=fed.pki["admin"].cert, key=fed.pki["admin"].key,
                    timeout=120)
    submitted_after: dict[str, float] = {}
    killed = threading.Event()
    done = threading.Event()

    def stream() -> None:
        while not done.is_set():
            job = client.submit(SPEC)
            if killed.is_set():
                submitted_after[job.id] = time.time()
            done.wait(0.05)

    submitter = threading.Thread(target=stream, daemon=True)
    try:
        submitter.start()
        wait(lambda: sum(len(s.placed) for s in sites) >= 20, 60, "placements before the kill")
        processes[0].send_signal(signal.SIGKILL)
        killed_at = time.time()
        killed.set()
        if replicas == 1:
            processes.append(fed.start_replica("replica-1b", addresses[0], database))

        def first_after() -> float | None:
            ids = set(submitted_after)
            times = [t for s in sites for (job_id, t) in s.placed if job_id in ids]
            return min(times) if times else None

        return wait(first_after, 120, "a placement after the kill") - killed_at
    finally:
        done.set()
        submitter.join(timeout=130)   # its last call ends (or times out) before its client closes
        for s in sites:
            s.done.set()
        client.close()
        stop_processes([p for p in processes if p.poll() is None])
        fed.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--stores", default="sqlite,postgres")
    args = p.parse_args()
    rows = []
    for store in args.stores.split(","):
        pg = _postgres() if store == "postgres" else None
        try:
            for replicas in (2, 1):
                times = []
                for _ in range(args.trials):
                    work = Path(tempfile.mkdtemp(prefix="fleader-", dir="/tmp"))
                    try:
                        times.append(trial(work, pg.database() if pg else "", replicas))
                    finally:
                        shutil.rmtree(work, ignore_errors=True)
                rows.append((store, replicas, times))
        finally:
            if pg is not None:
                pg.stop()
                shutil.rmtree(pg.root, ignore_errors=True)
    print(f"kill -9 of the leader to the first placement of a job submitted after it ({args.trials} trials)")
    print(f"{'store':<9} {'setup':<32} {'median s':>9} {'max s':>7}")
    medians = {}
    for store, replicas, times in rows:
        setup = "two replicas (failover)" if replicas == 2 else "one, restarted at once (baseline)"
        medians[(store, replicas)] = statistics.median(times)
        print(f"{store:<9} {setup:<32} {statistics.median(times):>9.2f} {max(times):>7.2f}")
    for store in args.stores.split(","):
        print(f"{store}: failover / restart = {medians[(store, 2)] / medians[(store, 1)]:.2f}")


def _postgres():
    from tests.postgres import PostgresServer, binaries
    bin_dir = binaries()
    if bin_dir is None:
        raise SystemExit("PostgreSQL not installed: apt-get install postgresql")
    server = PostgresServer(bin_dir, Path(tempfile.mkdtemp(prefix="fedctl-pg-")))
    server.start()
    return server


if __name__ == "__main__":
    main()
