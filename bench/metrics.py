"""What Prometheus metrics cost the submission path: submissions a second from 8 threads with
/metrics served and scraped every half second (30x Prometheus's default interval) by another
process, against a federation that serves none, in one run.

    python -m bench.metrics [--submits 1000] [--rounds 4]

Two real federation servers in this process (mutual TLS, SQLite file, the scheduling loop, a site
played by a raw Connect stream that runs each attempt at once), taking turns round by round (each
first in turn, and each left to run all it was given before the other starts) so both see the
same machine load; the ratio is each round's, their median printed. Events are counted in both
(counting is always on); what differs is the endpoint and its scrapes (which read the store: jobs
by state, sites, live attempts, the audit log's new records). The scraper keeps its connection
alive between scrapes, as Prometheus does. The cost of counting one event is timed on its own.
"""
from __future__ import annotations

import argparse
import http.client
import resource
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from bench.common import timed_submits
from bench.mtls import SPEC, Side
from federation.observe.metrics import FederationMetrics

TARGET = 0.95   # at most 5% slower


def scrape_loop(port: int, ca: str, cert: str, key: str, every_s: float) -> None:
    """Prometheus's part, in a process of its own: over one kept-alive TLS connection (as Prometheus
    scrapes), read /metrics every `every_s`, printing each scrape's seconds."""
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert, key)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    while True:
        t = time.perf_counter()
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200 or b"fedctl_jobs" not in body:
            raise SystemExit(f"scrape: HTTP {response.status}: {body[:200]!r}")
        print(f"{time.perf_counter() - t:.6f}", flush=True)
        time.sleep(every_s)


@contextmanager
def scraped(side: Side, every_s: float, took: list[float]) -> Iterator[None]:
    pki = side.pki
    args = [str(side.server.metrics.port), str(pki["ca"].cert), str(pki["admin"].cert), str(pki["admin"].key),
            str(every_s)]
    proc = subprocess.Popen([sys.executable, "-m", "bench.metrics", "--scrape", *args], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    took.append(float(proc.stdout.readline()))   # started and scraping: its start-up is not the endpoint's cost
    try:
        yield
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        took.extend(float(line) for line in out.split())


def settled(side: Side, timeout_s: float = 120) -> None:
    """Until none of `side`'s jobs waits or runs: none of its work is left to slow the other side."""
    deadline = time.monotonic() + timeout_s
    while side.client.jobs(states=["pending", "placed", "running"], limit=1):
        if time.monotonic() > deadline:
            print(f"  (side still busy after {timeout_s:g} s; measuring on)")
            return
        time.sleep(0.1)


def counting_cost(n: int = 200_000) -> float:
    """Seconds to count one submission and observe one call's latency, as the submission path does."""
    m = FederationMetrics()
    t = time.perf_counter()
    for _ in range(n):
        m.submissions.labels("bench").inc()
        m.rpc_seconds.labels("SubmitJob", "OK").observe(0.001)
    return (time.perf_counter() - t) / n


def cpu_seconds() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--submits", type=int, default=1000, help="submissions per side and round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--scrape", nargs=5, metavar=("PORT", "CA", "CERT", "KEY", "EVERY_S"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.scrape:
        port, ca, cert, key, every = args.scrape
        scrape_loop(int(port), ca, cert, key, float(every))
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"off": Side(Path(tmp) / "off", True),
                 "on": Side(Path(tmp) / "on", True, metrics={"listen": "127.0.0.1:0"})}
        scrapes: list[float] = []
        rates: dict[str, list[float]] = {k: [] for k in sides}
        cpu: dict[str, list[float]] = {k: [] for k in sides}   # CPU seconds a submission, to settled
        try:
            for side in sides.values():
                side.submit_rate(50)   # warm up: connections, caches
            for k in range(args.rounds):
                for name in sorted(sides, reverse=k % 2 == 1):   # each goes first in turn
                    side = sides[name]
                    with scraped(side, 0.5, scrapes) if name == "on" else nullcontext():
                        used = cpu_seconds()
                        run = timed_submits(args.submits, args.threads, lambda i, s=side: s.client.submit(SPEC))
                        settled(side)
                        cpu[name].append((cpu_seconds() - used) / args.submits)
                    rates[name].append(run["rate"])
        finally:
            for side in sides.values():
                side.close()
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    ratio = statistics.median(b / a for a, b in zip(rates["off"], rates["on"], strict=True))
    print(f"submissions/s from {args.threads} threads, median of {args.rounds} rounds of {args.submits}:")
    print(f"  metrics off: {off:,.0f}/s   {' '.join(f'{r:.0f}' for r in rates['off'])}")
    print(f"  metrics on (scraped every 0.5 s): {on:,.0f}/s   {' '.join(f'{r:.0f}' for r in rates['on'])}")
    print(f"  on/off, median of each round's ratio: x{ratio:.3f} (target: >= {TARGET}, at most 5% slower)")
    off_cpu, on_cpu = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    print(f"  this process's CPU a submission (client, federation, site; submitted to all done): off "
          f"{off_cpu * 1000:.2f} ms, on {on_cpu * 1000:.2f} ms: x{off_cpu / on_cpu:.3f} (steadier than the rates)")
    if scrapes:
        print(f"  {len(scrapes)} scrapes, p50 {statistics.median(scrapes) * 1000:.1f} ms, "
              f"max {max(scrapes) * 1000:.1f} ms (up to {args.rounds * args.submits:,} jobs in the store)")
    print(f"  counting a submission and its call's latency: {counting_cost() * 1e6:.2f} us")


if __name__ == "__main__":
    main()
