"""What Prometheus metrics cost the submission path: submissions a second from 8 threads with
/metrics served and scraped every half second (30x Prometheus's default interval) by another
process, against a federation that serves none, in one run.

    python -m bench.metrics [--submits 1000] [--rounds 4]

Two real federation servers in this process (mutual TLS, SQLite file, the scheduling loop, a site
played by a raw Connect stream that runs each attempt at once), taking turns round by round (each
first in turn, and each left to run all it was given before the other starts) so both see the
same machine load. Events are counted in both (counting is always on); what differs is
the endpoint, its scrapes (which read the store: jobs by state, sites, live attempts) and the TLS
handshakes they make. The cost of counting one event is timed on its own.
"""
from __future__ import annotations

import argparse
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
from tests.scrape import scrape

TARGET = 0.95   # at most 5% slower


def scrape_loop(port: int, ca: str, cert: str, key: str, every_s: float) -> None:
    """Prometheus's part, in a process of its own: scrape every `every_s`, printing each scrape's seconds."""
    while True:
        t = time.perf_counter()
        scrape(port, Path(ca), Path(cert), Path(key))
        print(f"{time.perf_counter() - t:.6f}", flush=True)
        time.sleep(every_s)


@contextmanager
def scraped(side: Side, every_s: float, took: list[float]) -> Iterator[None]:
    pki = side.pki
    args = [str(side.server.metrics.port), str(pki["ca"].cert), str(pki["admin"].cert), str(pki["admin"].key),
            str(every_s)]
    proc = subprocess.Popen([sys.executable, "-m", "bench.metrics", "--scrape", *args], stdout=subprocess.PIPE,
                            text=True)
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
        try:
            for side in sides.values():
                side.submit_rate(50)   # warm up: connections, caches
            for k in range(args.rounds):
                for name in sorted(sides, reverse=k % 2 == 1):   # each goes first in turn
                    side = sides[name]
                    with scraped(side, 0.5, scrapes) if name == "on" else nullcontext():
                        run = timed_submits(args.submits, args.threads, lambda i, s=side: s.client.submit(SPEC))
                    rates[name].append(run["rate"])
                    settled(side)
        finally:
            for side in sides.values():
                side.close()
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    print(f"submissions/s from {args.threads} threads, median of {args.rounds} rounds of {args.submits}:")
    print(f"  metrics off: {off:,.0f}/s   {' '.join(f'{r:.0f}' for r in rates['off'])}")
    print(f"  metrics on (scraped every 0.5 s): {on:,.0f}/s   {' '.join(f'{r:.0f}' for r in rates['on'])}")
    print(f"  on/off: x{on / off:.3f} (target: >= {TARGET}, at most 5% slower)")
    if scrapes:
        print(f"  {len(scrapes)} scrapes, p50 {statistics.median(scrapes) * 1000:.1f} ms, "
              f"max {max(scrapes) * 1000:.1f} ms (up to {args.rounds * args.submits:,} jobs in the store)")
    print(f"  counting a submission and its call's latency: {counting_cost() * 1e6:.2f} us")


if __name__ == "__main__":
    main()
