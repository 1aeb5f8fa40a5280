"""The policy's queues as the scheduler sees them, which queue a job is charged to, and usage.

Usage is resource-seconds of attempts that ran: by tenant, queue, site and GPU model for
`fedctl usage`, and decayed over the policy's half-life for fair share.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from federation.errors import InvalidSpec
from federation.spec.policy import PolicyConfig, QueueSpec
from policies.fairshare import DEFAULT, Queue, Usage

GROUPS = ("tenant", "queue", "site", "gpu_model")


@dataclass(frozen=True)
class UsageRecord:
    """One attempt that ran: what it held, where, for whom, and when."""

    job_id: str
    attempt: int
    tenant: str
    queue: str
    site: str
    gpu_model: str
    cpus: float
    memory: float
    gpus: float
    started_at: float
    ended_at: float            # 0: still running
    price: float = 0.0         # per hour

    def amounts(self) -> dict[str, float]:
        out = {"cpus": self.cpus, "memory": self.memory, "gpus": self.gpus}
        if self.gpu_model and self.gpus:
            out[f"gpu:{self.gpu_model}"] = self.gpus
        return out


def queue_tree(policy: PolicyConfig) -> tuple[Queue, ...]:
    """Parents before children; a policy without queues has one, `default`, for every tenant."""
    out: list[Queue] = []

    def walk(q: QueueSpec, parent: str | None) -> None:
        out.append(Queue(q.name, parent, q.deserved.amounts(), q.over_quota_weight, q.limit.amounts()))
        for child in q.queues:
            walk(child, q.name)

    for q in policy.spec.queues:
        walk(q, None)
    return tuple(out) or (Queue(DEFAULT),)


def time_limits(policy: PolicyConfig) -> dict[str, float]:
    """Each queue's default time limit for its jobs: its own, else its nearest parent's."""
    out: dict[str, float] = {}

    def walk(q: QueueSpec, inherited: float | None) -> None:
        limit = q.time_limit or inherited
        if limit:
            out[q.name] = limit
        for child in q.queues:
            walk(child, limit)

    for q in policy.spec.queues:
        walk(q, None)
    return out


def leaves(policy: PolicyConfig) -> dict[str, QueueSpec]:
    return {q.name: q for q in _all(policy) if not q.queues}


def resolve(policy: PolicyConfig, tenant: str, requested: str | None) -> str:
    """The leaf queue a job of `tenant` is charged to; InvalidSpec naming `spec.queue` if none."""
    if not policy.spec.queues:
        if requested not in (None, DEFAULT):
            raise InvalidSpec(f"spec.queue: unknown queue '{requested}'; the policy defines no queues "
                              f"(every job goes to '{DEFAULT}')")
        return DEFAULT
    known = leaves(policy)
    if requested is not None:
        if requested in known:
            return requested
        hint = difflib.get_close_matches(requested, list(known), n=1)
        groups = {q.name for q in _all(policy)} - set(known)
        why = " is a group of queues, not a queue jobs go to" if requested in groups else " is not a queue"
        raise InvalidSpec(f"spec.queue: '{requested}'{why}"
                          + (f" (did you mean '{hint[0]}'?)" if hint else f"; queues: {', '.join(sorted(known))}"))
    for q in known.values():
        if tenant in q.tenants:
            return q.name
    if tenant in known:
        return tenant
    if DEFAULT in known:
        return DEFAULT
    raise InvalidSpec(f"spec.queue: tenant '{tenant}' has no queue in the policy and there is no '{DEFAULT}' "
                      f"queue; name one of {', '.join(sorted(known))}")


def _all(policy: PolicyConfig) -> Iterable[QueueSpec]:
    stack = list(policy.spec.queues)
    while stack:
        q = stack.pop()
        yield q
        stack.extend(q.queues)


def decayed(start: float, end: float, now: float, half_life: float) -> float:
    """Seconds of [start, end] weighted by 2^-(age / half_life): the integral, in closed form."""
    if end <= start:
        return 0.0
    k = math.log(2) / half_life
    return (math.exp(-k * (now - end)) - math.exp(-k * (now - start))) / k


def fair_share_usage(records: Iterable[UsageRecord], running: Mapping[str, Mapping[str, float]], now: float,
                     half_life: float) -> dict[str, Usage]:
    """Per queue: what its live attempts hold now, and its decayed mean use (decayed resource-seconds
    over the decayed length of all time, half_life / ln 2)."""
    window = half_life / math.log(2)
    history: dict[str, dict[str, float]] = {}
    for r in records:
        weight = decayed(r.started_at, r.ended_at or now, now, half_life) / window
        if weight <= 0:
            continue
        into = history.setdefault(r.queue, {})
        for d, v in r.amounts().items():
            into[d] = into.get(d, 0.0) + v * weight
    return {q: Usage(running=dict(running.get(q, {})), history=history.get(q, {}))
            for q in set(history) | set(running)}


DAY = 86400.0


def budgets(policy: PolicyConfig) -> dict[str, tuple[float, str]]:
    """Per queue with a cost_per_day, or under one: (the budget, the queue that sets it), nearest first.
    A queue under two budgets gets both checked (`over_budget`); this maps each queue to its own."""
    out: dict[str, tuple[float, str]] = {}
    stack = list(policy.spec.queues)
    while stack:
        q = stack.pop()
        if q.limit.cost_per_day is not None:
            out[q.name] = (q.limit.cost_per_day.amount, q.name)
        stack.extend(q.queues)
    return out


def over_budget(records: Iterable[UsageRecord], policy: PolicyConfig, parents: Mapping[str, str | None],
                now: float) -> dict[str, str]:
    """Per queue whose own budget, or a parent's, is spent (what its attempts cost in the last 24
    hours, running ones up to now): why its jobs wait."""
    limits = budgets(policy)
    if not limits:
        return {}
    spent: dict[str, float] = {}
    for r in records:
        start, end = max(r.started_at, now - DAY), min(r.ended_at or now, now)
        if end > start and r.price:
            q: str | None = r.queue
            while q is not None:   # a child's spending counts against every budget above it
                spent[q] = spent.get(q, 0.0) + r.price * (end - start) / 3600
                q = parents.get(q)
    currency = policy.spec.currency
    held: dict[str, str] = {}
    for name in parents:
        at: str | None = name
        while at is not None:
            if at in limits and spent.get(at, 0.0) >= limits[at][0]:
                held[name] = (f"queue {at} spent {spent[at]:.2f} {currency} of its {limits[at][0]:g} {currency} "
                              f"a day (limit.cost_per_day); it waits until the last 24 hours cost less")
                break
            at = parents.get(at)
    return held


def report(records: Iterable[UsageRecord], by: tuple[str, ...], since: float, until: float) -> list[dict]:
    """Resource-seconds and cost within [since, until], grouped by the `by` fields, largest GPU use first."""
    rows: dict[tuple, dict] = {}
    for r in records:
        start, end = max(r.started_at, since), min(r.ended_at or until, until)
        if end <= start:
            continue
        seconds = end - start
        key = tuple(getattr(r, f) for f in by)
        row = rows.setdefault(key, {**dict(zip(by, key)), "attempts": 0, "cpu_seconds": 0.0,
                                    "memory_gib_seconds": 0.0, "gpu_seconds": 0.0, "cost": 0.0})
        row["attempts"] += 1
        row["cpu_seconds"] += r.cpus * seconds
        row["memory_gib_seconds"] += r.memory / 2**30 * seconds
        row["gpu_seconds"] += r.gpus * seconds
        row["cost"] += r.price * seconds / 3600
    return sorted(rows.values(), key=lambda row: (-row["gpu_seconds"], -row["cpu_seconds"],
                                                  tuple(str(row[f]) for f in by)))
