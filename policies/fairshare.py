"""Federation-wide fair share: hierarchical queues, dominant-resource fairness, hard limits.

Resources are named dimensions: `cpus`, `memory`, `gpus` (any model) and `gpu:<model>`.
A queue's use mixes what it holds now with its usage decayed over a half-life (the mix is
the policy's `history_weight`). Among sibling queues the next job comes from the one
furthest below its deserved share (its dominant ratio of use to deserved); once every
sibling with work has its deserved share, from the one with the least dominant share of
the federation per unit of over-quota weight. Descending the tree that way picks a leaf;
inside a leaf, higher priority first, then first come. `Ledger` is one cycle's mutable
account of that; nothing here does I/O.
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from policies.model import PendingJob

EPS = 1e-9
DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class Queue:
    name: str
    parent: str | None = None
    deserved: Mapping[str, float] = field(default_factory=dict)
    weight: float = 1.0                  # over-quota weight; 0: nothing beyond the deserved share
    limit: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    running: Mapping[str, float] = field(default_factory=dict)   # held now by live attempts
    history: Mapping[str, float] = field(default_factory=dict)   # decayed mean held over the half-life


@dataclass(frozen=True, slots=True)
class Queues:
    """The queue tree (parents before children) and each leaf queue's usage."""

    queues: tuple[Queue, ...] = (Queue(DEFAULT),)
    usage: Mapping[str, Usage] = field(default_factory=dict)
    history_weight: float = 0.5

    def leaves(self) -> list[str]:
        parents = {q.parent for q in self.queues}
        return [q.name for q in self.queues if q.name not in parents]


def demand(job: PendingJob, model: str = "") -> dict[str, float]:
    """What a job holds while it runs; `model`: the GPU model its binding took, if known."""
    gpus = job.gpu.whole if job.gpu is not None and job.gpu.wanted else job.gpus
    out = {"cpus": job.cpus, "memory": job.memory, "gpus": gpus}
    if model and gpus:
        out[f"gpu:{model}"] = gpus
    return out


def _add(into: dict[str, float], amounts: Mapping[str, float], sign: float = 1.0) -> None:
    for d, v in amounts.items():
        into[d] = into.get(d, 0.0) + sign * v


def describe_dim(dim: str, amount: float) -> str:
    if dim == "memory":
        return f"{amount / 2**30:.3g}Gi memory"
    if dim.startswith("gpu:"):
        return f"{amount:g} {dim[4:]} GPUs"
    return f"{amount:g} {dim}"


class _Node:
    __slots__ = ("children", "heap", "history", "jobs", "parent", "placed", "pos", "queue", "running", "version")

    def __init__(self, queue: Queue, parent: _Node | None) -> None:
        self.queue = queue
        # None only at the root, above which no walk goes (they stop at it, or test for None)
        self.parent: _Node = cast("_Node", parent)
        self.children: list[_Node] = []
        self.running: dict[str, float] = {}
        self.history: dict[str, float] = {}
        self.placed: dict[str, float] = {}
        self.version = 0
        self.heap: list[tuple] = []
        self.jobs: list[PendingJob] = []
        self.pos = 0


@dataclass(frozen=True, slots=True)
class Factors:
    """Why a queue is where it is in the order: for `fedctl queue` and explanations."""

    queue: str
    tier: int            # 0 below its deserved share, 1 over it (by weight), 2 over with weight 0
    ratio: float         # tier 0: dominant use / deserved; else dominant share of the federation / weight
    use: Mapping[str, float]


class Ledger:
    """One cycle's fair-share account. Iterating yields pending jobs in fair order; `charge`
    records a placement, so the next pick already sees it."""

    def __init__(self, queues: Queues, totals: Mapping[str, float], pending: Sequence[PendingJob]) -> None:
        self.totals = {d: v for d, v in totals.items() if v > 0}
        self.w = queues.history_weight
        self.nodes: dict[str, _Node] = {}
        self.root = _Node(Queue(""), None)
        for q in queues.queues:
            parent = self.nodes[q.parent] if q.parent else self.root
            node = self.nodes[q.name] = _Node(q, parent)
            parent.children.append(node)
        for name, u in queues.usage.items():
            walk = self.nodes.get(name)
            while walk is not None:
                _add(walk.running, u.running)
                _add(walk.history, u.history)
                walk = walk.parent
        for job in pending:
            self.nodes[job.queue].jobs.append(job)
        for node in self.nodes.values():
            node.jobs.sort(key=lambda j: (-j.priority, j.submitted_at, j.id))
        self._seq = itertools.count()
        self._fill(self.root)
        self._limited: dict[tuple[str, bool], bool] = {}

    def limited(self, name: str, models: bool = False) -> bool:
        """Whether queue `name` or a parent has a limit (with `models`: a per-GPU-model one)."""
        hit = self._limited.get((name, models))
        if hit is None:
            node, hit = self.nodes[name], False
            while node is not self.root and not hit:
                hit = any(d.startswith("gpu:") for d in node.queue.limit) if models else bool(node.queue.limit)
                node = node.parent
            self._limited[(name, models)] = hit
        return hit

    def _fill(self, node: _Node) -> bool:
        """Build the heaps below `node`; whether it has pending work."""
        has = bool(node.jobs)
        for child in node.children:
            if self._fill(child):
                heapq.heappush(node.heap, (self._key(child), next(self._seq), child.version, child))
                has = True
        return has

    def use(self, node: _Node) -> dict[str, float]:
        out: dict[str, float] = {}
        _add(out, node.running, 1.0 - self.w)
        _add(out, node.history, self.w)
        _add(out, node.placed)
        return out

    def factors(self, name: str) -> Factors:
        node = self.nodes[name]
        tier, ratio = self._key(node)[:2]
        return Factors(name, tier, ratio, self.use(node))

    def _key(self, node: _Node) -> tuple:
        use = self.use(node)
        q = node.queue
        owed = [(use.get(d, 0.0) / v) for d, v in q.deserved.items() if v > 0]
        if owed and max(owed) < 1.0 - EPS:
            return 0, max(owed), q.name
        share = max((use.get(d, 0.0) / t for d, t in self.totals.items()), default=0.0)
        if q.weight > 0:
            return 1, share / q.weight, q.name
        return 2, share, q.name

    def __iter__(self) -> Iterator[PendingJob]:
        while True:
            leaf = self._pick(self.root)
            if leaf is None:
                return
            job = leaf.jobs[leaf.pos]
            leaf.pos += 1
            yield job

    def remaining(self) -> list[PendingJob]:
        """Jobs not yet yielded, in no particular order."""
        return [j for n in self.nodes.values() for j in n.jobs[n.pos:]]

    def _pick(self, node: _Node) -> _Node | None:
        """The leaf the next job comes from, descending by the smallest key; None when all are done."""
        heap = node.heap
        while heap:
            _, _, version, child = heap[0]
            if version != child.version:
                heapq.heappop(heap)  # a newer entry for this child is in the heap
                continue
            if child.jobs and child.pos < len(child.jobs):
                return child
            if not child.jobs:
                got = self._pick(child)
                if got is not None:
                    return got
            heapq.heappop(heap)  # nothing left below it
        return None

    def admits(self, name: str, amounts: Mapping[str, float]) -> str:
        """'' if the queue and its parents stay within their limits after taking `amounts`, else why not."""
        node = self.nodes[name]
        while node is not self.root:
            for d, cap in node.queue.limit.items():
                need = amounts.get(d, 0.0)
                if need <= 0:
                    continue
                held = node.running.get(d, 0.0) + node.placed.get(d, 0.0)
                if held + need > cap + EPS:
                    return (f"queue {node.queue.name} holds {describe_dim(d, held)} of its limit of "
                            f"{describe_dim(d, cap)}; this job needs {describe_dim(d, need)}")
            node = node.parent
        return ""

    def charge(self, name: str, amounts: Mapping[str, float], sign: float = 1.0) -> None:
        """A placement in queue `name` (sign -1: one undone): its use and its parents' change; their
        order is updated."""
        node = self.nodes[name]
        while node is not self.root:
            _add(node.placed, amounts, sign)
            node.version += 1
            heapq.heappush(node.parent.heap, (self._key(node), next(self._seq), node.version, node))
            node = node.parent
