"""What the wire benchmarks share: the trivial job they submit, timed submissions from many
threads, percentiles, a process's CPU time and memory read from /proc, the policy that lets a
benchmark submit more than a tenant's usual backlog, and a profile of the federation process."""
from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import yaml

from federation.local import CONFIGS
from federation.spec import job_from_dict

SPEC = job_from_dict({"metadata": {"name": "load", "tenant": "load"},
                      "spec": {"entrypoint": "true", "resources": {"cpus": 0.01}}})
WARMUP = job_from_dict({"metadata": {"name": "warmup", "tenant": "warmup"},
                        "spec": {"entrypoint": "true", "resources": {"cpus": 0.01}}})


def timed_submits(n: int, threads: int, submit: Callable[[int], object], cap_s: float = float("inf")) -> dict:
    """n calls of `submit(i)` from `threads` threads; calls not begun within `cap_s` are not made.
    rate: calls a second; latencies; results (None where not made); done_at: when each call
    ended, in order, from the start; ended_at and took: when each call ended (time.monotonic) and
    how long it took, by i."""
    latencies: list[float] = []
    done_at: list[float] = []
    results: list = [None] * n
    ended_at: list[float] = [0.0] * n
    took: list[float] = [0.0] * n
    start = time.perf_counter()

    def one(i: int) -> None:
        t = time.perf_counter()
        if t - start < cap_s:
            results[i] = submit(i)
            end = time.perf_counter()
            ended_at[i], took[i] = time.monotonic(), end - t
            latencies.append(end - t)
            done_at.append(end - start)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n)))
    return {"rate": len(latencies) / (time.perf_counter() - start), "latencies": latencies, "results": results,
            "done_at": sorted(done_at), "ended_at": ended_at, "took": took}


def window_rates(done_at: list[float], size: int = 1000) -> list[float]:
    """Calls a second in each successive window of `size` calls."""
    edges = [0.0] + done_at[size - 1::size]
    return [size / (b - a) for a, b in itertools.pairwise(edges) if b > a]


def summary(run: dict) -> dict:
    return {"rate": run["rate"], "p50": pct(run["latencies"], 0.5), "p99": pct(run["latencies"], 0.99),
            "done": len(run["latencies"]), "windows": window_rates(run["done_at"])}


def pct(values: list[float], q: float) -> float:
    """The q-quantile of seconds, in milliseconds; nan when there are none."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100   # utime, stime in clock ticks (USER_HZ = 100)


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (the most it has been resident) of a live process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def bench_policy(directory: Path, *, sites: dict[str, dict] | None = None, pending: int = 10_000,
                 per_second: float = 2_000) -> Path:
    """configs/policy.yaml with room for a benchmark's backlog (`pending` jobs waiting a tenant, `per_second`
    submissions a caller) and, with `sites`, those sites in its catalog."""
    data = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    limits = data["spec"].setdefault("limits", {})
    limits["pending_per_tenant"] = pending
    if "submissions_per_second" in _limit_fields():
        limits["submissions_per_second"] = per_second
    if sites:
        data["spec"]["sites"] = sites
    path = directory / "bench-policy.yaml"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def _limit_fields() -> set[str]:
    from federation.spec.policy import LimitsSpec
    return set(LimitsSpec.model_fields)


@contextmanager
def profiled(pid: int, out: Path | None, rate: int = 100) -> Iterator[None]:
    """py-spy sampling `pid` (Python frames holding the GIL, so CPU, not waits) for the duration, as
    a flame graph at `out` (.svg) or raw stacks (any other suffix); nothing when `out` is None."""
    if out is None:
        yield
        return
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    fmt = "flamegraph" if out.suffix == ".svg" else "raw"
    proc = subprocess.Popen([spy, "record", "-p", str(pid), "-r", str(rate), "--gil", "--nonblocking",
                             "-f", fmt, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(2)   # SIGINT: py-spy writes what it has and exits
        proc.wait(timeout=60)
