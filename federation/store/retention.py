"""Which ended jobs one batch of `Store.compact` removes: pure, shared by every backend.

A job is removed with all that belongs only to it (its attempts, their logs, its files, the record
of the submission that made it), and leaves behind what others still read: the usage of its
attempts that ran (`compacted_usage`, read by `usage_records`) and its final state (a tombstone in
`compacted_jobs`, read by `dependency_states`, so that a job waiting on it still starts or is
cancelled as it would have been). An array's elements and a gang's parts go together or not at all.
Jobs a federated training still needs stay: its current model's job, and the jobs of the rounds of
a training still running.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

from federation.jobs import TERMINAL_JOB_STATES

# Written out, not bound: a partial index on ended jobs applies only to a query that names the
# same states (SQLite compares the terms as written; PostgreSQL cannot prove it of a parameter).
TERMINAL_SQL = "(" + ", ".join(f"'{s.value}'" for s in sorted(TERMINAL_JOB_STATES, key=lambda s: s.value)) + ")"
ENDED = frozenset(s.value for s in TERMINAL_JOB_STATES)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A job as compaction sees it."""

    id: str
    array_id: str
    gang_id: str
    state: str
    updated_at: float

    @property
    def unit(self) -> str:
        """What is removed together: its gang, its array, or itself."""
        return self.gang_id or self.array_id or self.id


def grouped(page: Sequence[Candidate]) -> tuple[list[str], list[str]]:
    """The array ids and gang ids of a page: their other elements and parts are read too."""
    arrays = {c.array_id for c in page if c.array_id and not c.gang_id}
    return sorted(arrays), sorted({c.gang_id for c in page if c.gang_id})


def plan(page: Sequence[Candidate], members: Mapping[str, Sequence[Candidate]], held: Set[str],
         ended_before: float, limit: int, full: bool) -> tuple[list[str], tuple[float, str] | None]:
    """The jobs to remove, and where the next batch goes on from (None: nothing further).

    `page`: ended jobs older than `ended_before`, oldest first, at most `limit` (`full`: exactly);
    `members`: per array or gang met in it, all of its elements or parts; `held`: jobs that must
    stay (an attempt still live or ended since `ended_before`, or a training's). A unit is removed
    when all of it ended before `ended_before` and none of it is held; the batch stops once it holds
    `limit` jobs (more only by the rest of the last array or gang)."""
    doomed: list[str] = []
    seen: set[str] = set()
    for row in page:
        if row.unit in seen:
            continue
        seen.add(row.unit)
        group = members.get(row.unit, (row,))
        if all(m.state in ENDED and m.updated_at < ended_before and m.id not in held for m in group):
            doomed.extend(m.id for m in group)
            if len(doomed) >= limit:
                return doomed, (row.updated_at, row.id)
    return doomed, ((page[-1].updated_at, page[-1].id) if full and page else None)


def training_jobs(model_jobs: Iterable[str], rounds: Iterable[tuple[str, str, str, str]]) -> set[str]:
    """The jobs trainings still need: each one's current model (`model_jobs`), and every job of
    `rounds` (steps, reveals and keys as stored, JSON objects of job ids; the aggregate job) of
    trainings still running."""
    out = {j for j in model_jobs if j}
    for steps, aggregate, reveals, keys in rounds:
        out.update(json.loads(steps).values())
        out.update(json.loads(reveals).values())
        out.update(json.loads(keys).values())
        out.add(aggregate)
    out.discard("")
    return out
