"""Sites at scale: a thousand sites connected to one federation at once, played over the wire,
and the same run with ten sites as the baseline.

    python -m bench.sites [--sites 1000] [--jobs 100000] [--baseline 10] [--server-threads N]
    python -m bench.sites --quick          # 200 sites, 5,000 jobs: a minute or two

The federation is a real `fedctl server start` process (mutual TLS, SQLite file, scheduling loop);
with --server-threads, its `spec.threads` (the pool that serves users' calls) set to that. Each site registers
with its own certificate
(its location bound in it), heartbeats at the federation's interval, and keeps a Connect stream
open, reporting each assignment running and then succeeded at once (bench.agents: one asyncio
loop per agent process plays many sites, each a real gRPC stream with its own TLS identity).

Measured: how many sites registered and connected, and the errors; heartbeat round trips (p50,
p99); submissions a second; submit-to-assigned latency (from the SDK's submit returning until a
site's stream delivers the assignment, p50, p99); the federation process's peak resident memory
(VmHWM); how many jobs the store holds as succeeded. The target noted: under 2 GiB at 1,000 sites.
Nothing here asserts a timing: it prints the figures and their ratios to the baseline.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import yaml

from bench.common import SPEC, WARMUP, bench_policy, memory_kib, pct, timed_submits
from federation.errors import FederationError
from federation.local import LocalFederation

GiB = 2**30
RSS_TARGET = 2 * GiB
ROW = "{:<26} {:>20} {:>20} {:>7}"


class Agents:
    """Agent processes (bench.agents), each playing a share of the sites."""

    def __init__(self, fed: LocalFederation, names: list[str], processes: int, ramp: float, work: Path) -> None:
        self.outs: list[Path] = []
        self.procs: list[subprocess.Popen] = []
        self.status: list[dict] = []
        shares = [names[k::processes] for k in range(processes) if names[k::processes]]
        for k, share in enumerate(shares):
            out, settings = work / f"agents-{k}.json", work / f"agents-{k}-settings.json"
            settings.write_text(json.dumps({"address": fed.address, "ca": str(fed.pki["ca"].cert),
                                            "pki": str(fed.work / "pki"), "sites": share,
                                            "ramp": ramp / len(shares), "out": str(out)}))
            proc = subprocess.Popen([sys.executable, "-m", "bench.agents", str(settings)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
            self.outs.append(out)
            self.procs.append(proc)
            self.status.append({})
            threading.Thread(target=self._follow, args=(k, proc), daemon=True).start()

    def _follow(self, k: int, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.status[k] = json.loads(line)

    def total(self, key: str) -> int:
        return sum(s.get(key, 0) for s in self.status)

    def stop(self) -> dict:
        for proc in self.procs:
            assert proc.stdin is not None
            try:
                proc.stdin.write("stop\n")
                proc.stdin.flush()
            except BrokenPipeError:
                pass   # it is gone already
        for proc in self.procs:
            proc.wait(timeout=120)
        results = [json.loads(out.read_text()) for out in self.outs if out.exists()]
        errors: Counter = Counter()
        for r in results:
            errors.update(r["errors"])
        return {"registered": sum(r["registered"] for r in results), "connected": sum(r["connected"] for r in results),
                "errors": errors, "heartbeats": [h for r in results for h in r["heartbeats"]],
                "assigned": {j: t for r in results for j, t in r["assigned"].items()}}


def wait_while(progress, idle_s: float, limit_s: float, done) -> float:
    """Wait until `done()` or `progress()` stands still for `idle_s` or `limit_s` pass; seconds waited."""
    start = last_change = time.monotonic()
    seen = progress()
    while not done() and time.monotonic() - last_change < idle_s and time.monotonic() - start < limit_s:
        time.sleep(0.5)
        if (now := progress()) != seen:
            seen, last_change = now, time.monotonic()
    return time.monotonic() - start


def start_federation(work: Path, names: list[str], args: argparse.Namespace) -> LocalFederation:
    specs = {n: {"location": {"jurisdiction": "DE", "region": n}} for n in names}
    fed = LocalFederation(work=work, sites=specs, port_bases={}, scheduler_interval_s=0.5,
                          site_timeout_s=args.site_timeout, policy=bench_policy(work, pending=max(10_000, args.jobs)))
    config = yaml.safe_load(fed.config.read_text())
    config["spec"]["heartbeat_interval_s"] = args.heartbeat
    if args.server_threads:
        config["spec"]["threads"] = args.server_threads
    fed.config.write_text(yaml.safe_dump(config))
    fed.start_server(timeout=60)
    return fed


def submit_all(fed: LocalFederation, args: argparse.Namespace) -> dict:
    """args.jobs submissions from args.threads SDK threads; after 20 failures, more than succeeded,
    the rest are not attempted (a federation that answers nothing would take forever)."""
    clients = [fed.client(timeout=args.rpc_timeout) for _ in range(args.threads)]
    failures: Counter = Counter()
    lock = threading.Lock()

    def failed(what: str) -> None:
        with lock:
            failures[what] += 1

    def submit(i: int) -> str | None:
        if sum(failures.values()) >= 20 and sum(failures.values()) > i // 2:
            failed("not attempted")
            return None
        if args.rate:
            time.sleep(max(0.0, start + i / args.rate - time.monotonic()))
        try:
            return clients[i % args.threads].submit(SPEC).id
        except FederationError as e:
            failed(type(e).__name__)
            return None

    warm = 0
    try:
        try:
            for _ in range(20):
                clients[0].submit(WARMUP)
                warm += 1
        except FederationError as e:
            failures[f"warm-up {type(e).__name__}"] += 1
        start = time.monotonic()
        run = timed_submits(args.jobs, args.threads, submit, args.submit_cap)
    finally:
        for c in clients:
            c.close()
    ok = [(job, end, took) for job, end, took in zip(run["results"], run["ended_at"], run["took"], strict=True)
          if job is not None]
    elapsed = max(run["done_at"], default=0.0)
    return {"ended": {job: end for job, end, _ in ok}, "latencies": [took for _, _, took in ok],
            "rate": len(ok) / elapsed if elapsed else 0.0, "failures": failures, "warm": warm}


def federation_view(fed: LocalFederation, timeout: float) -> str:
    try:
        with fed.client(timeout=timeout) as c:
            sites = c.sites()
        return f"{sum(1 for s in sites if s.connected)} of {len(sites)} connected"
    except FederationError as e:
        return f"no answer ({type(e).__name__})"


def succeeded_in_store(work: Path) -> int:
    """The benchmark's jobs the store holds as succeeded, read beside the running federation (WAL)."""
    db = sqlite3.connect(f"file:{work / 'federation.db'}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT COUNT(*) FROM jobs WHERE tenant='load' AND state='succeeded'").fetchone()[0]
    finally:
        db.close()


def one_run(n: int, args: argparse.Namespace, work: Path) -> dict:
    names = [f"site-{i:04d}" for i in range(n)]
    fed = start_federation(work, names, args)
    assert fed.server is not None
    pid, agents, out = fed.server.pid, None, {"sites": n}
    sub: dict = {"ended": {}, "latencies": [], "rate": 0.0, "failures": Counter(), "warm": 0}
    try:
        agents = Agents(fed, names, min(args.agent_processes, max(1, n // 50)), args.ramp, work)
        out["connect_s"] = wait_while(lambda: (agents.total("registered"), agents.total("connected")), args.idle,
                                      n / args.ramp + 120, lambda: agents.total("connected") >= n)
        out["rss_connected"] = _memory(pid).get("VmRSS", 0)
        time.sleep(2 * args.heartbeat)   # every site heartbeats before any job
        sub = submit_all(fed, args)
        expected = len(sub["ended"])
        wait_while(lambda: (agents.total("assigned"), succeeded_in_store(work)), args.idle, args.drain_limit,
                   lambda: succeeded_in_store(work) >= expected)
        out["view"] = federation_view(fed, args.rpc_timeout)
        out["memory"] = _memory(pid)
    finally:
        played = agents.stop() if agents is not None else None
        fed.shutdown()
    assigned = played["assigned"] if played else {}
    waits = [assigned[j] - t for j, t in sub["ended"].items() if j in assigned]
    return {**out, **(played or {}), "submitted": len(sub["ended"]), "failures": sub["failures"],
            "rate": sub["rate"], "submit_p50": pct(sub["latencies"], 0.5), "submit_p99": pct(sub["latencies"], 0.99),
            "assigned_n": len(waits), "assign_p50": pct(waits, 0.5), "assign_p99": pct(waits, 0.99),
            "succeeded": succeeded_in_store(work)}


def _memory(pid: int) -> dict[str, int]:
    try:
        return memory_kib(pid)
    except OSError:
        return {}   # the federation is gone


def report(runs: list[dict], args: argparse.Namespace) -> None:
    base, big = runs
    threads = args.server_threads or "64 (the default spec.threads)"
    pace = f"paced at {args.rate:g}/s" if args.rate else f"from {args.threads} threads, unpaced"
    print(f"federation gRPC threads: {threads}; heartbeat every {args.heartbeat:g}s; {args.jobs} jobs each run, {pace}")
    print(ROW.format("", f"{base['sites']} sites", f"{big['sites']} sites", "ratio"))

    def row(name: str, key, fmt: str = "{:.1f}", ratio: bool = True) -> None:
        a, b = (key(r) if callable(key) else r.get(key) for r in (base, big))
        text = [fmt.format(v) if isinstance(v, (int, float)) else str(v) for v in (a, b)]
        r = f"x{b / a:.2f}" if ratio and isinstance(a, (int, float)) and a and isinstance(b, (int, float)) else ""
        print(ROW.format(name, *text, r))

    row("registered", "registered", "{:d}", False)
    row("streams connected", "connected", "{:d}", False)
    row("seconds to connect", "connect_s")
    row("federation's view", "view", ratio=False)
    row("heartbeats answered", lambda r: len(r.get("heartbeats", [])), "{:d}", False)
    row("heartbeat p50 ms", lambda r: pct(r.get("heartbeats", []), 0.5))
    row("heartbeat p99 ms", lambda r: pct(r.get("heartbeats", []), 0.99))
    row("submitted", "submitted", "{:d}", False)
    row("submits/s", "rate", "{:.0f}")
    row("submit p50 ms", "submit_p50")
    row("submit p99 ms", "submit_p99")
    row("assigned (of submitted)", "assigned_n", "{:d}", False)
    row("submit->assigned p50 ms", "assign_p50")
    row("submit->assigned p99 ms", "assign_p99")
    row("succeeded in the store", "succeeded", "{:d}", False)
    row("RSS, all connected MiB", lambda r: r.get("rss_connected", 0) / 1024, "{:.0f}")
    row("peak RSS (VmHWM) MiB", lambda r: r.get("memory", {}).get("VmHWM", 0) / 1024, "{:.0f}")
    for r in runs:
        errors = dict(r.get("errors", {}), **{f"submit {k}": v for k, v in r["failures"].items()})
        print(f"{r['sites']} sites, errors: {errors or 'none'}")
    peak = big.get("memory", {}).get("VmHWM", 0) * 1024
    verdict = "met" if peak and peak < RSS_TARGET and big.get("connected") == big["sites"] else "NOT met"
    print(f"target: federation memory < 2 GiB with {big['sites']} sites connected: {verdict} "
          f"(peak {peak / GiB:.2f} GiB, {big.get('connected', 0)} of {big['sites']} streams connected)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sites", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--baseline", type=int, default=10, help="sites in the baseline run")
    p.add_argument("--quick", action="store_true", help="200 sites and 5,000 jobs")
    p.add_argument("--server-threads", type=int, default=0,
                   help="the federation's gRPC threads (spec.threads); default: its default, 256")
    p.add_argument("--threads", type=int, default=16, help="concurrent SDK submitters")
    p.add_argument("--rate", type=float, default=0.0,
                   help="submissions a second, paced (default 0: as fast as the submitters go)")
    p.add_argument("--agent-processes", type=int, default=2)
    p.add_argument("--ramp", type=float, default=200.0, help="sites started a second")
    p.add_argument("--heartbeat", type=float, default=2.0, help="the federation's heartbeat_interval_s")
    p.add_argument("--site-timeout", type=float, default=30.0, help="the federation's site_timeout_s")
    p.add_argument("--rpc-timeout", type=float, default=15.0, help="the SDK's deadline for each call")
    p.add_argument("--idle", type=float, default=20.0, help="a phase ends after this long without progress")
    p.add_argument("--submit-cap", type=float, default=1800.0,
                   help="submissions not begun within this many seconds are not made (a stalled federation)")
    p.add_argument("--drain-limit", type=float, default=900.0, help="longest wait for every job to succeed")
    p.add_argument("--work", type=Path, help="keep each run's files (federation.log, the store) here")
    args = p.parse_args()
    if args.quick:
        args.sites, args.jobs, args.submit_cap, args.drain_limit = 200, 5000, 120.0, 120.0
    runs = []
    for n in (args.baseline, args.sites):
        if args.work is not None:
            runs.append(one_run(n, args, args.work / f"sites-{n}"))
            continue
        with tempfile.TemporaryDirectory(prefix=f"fsites{n}-", dir="/tmp") as tmp:
            runs.append(one_run(n, args, Path(tmp)))
    report(runs, args)


if __name__ == "__main__":
    main()
