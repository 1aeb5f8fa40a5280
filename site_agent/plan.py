"""What the site agent does next, as a pure function of what it knows.

A pass sees three things: what the federation wants here (its assignments), what Ray holds (this
site's federation jobs), and the agent's own records (what it submitted, what it saw run, what it
decided itself, the newest attempt of each job, whether it is fenced). From them `plan` returns
actions and the records to keep; `site_agent.reconciler` carries them out. Nothing here reads a
clock, Ray or a file.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from federation.jobs import AttemptState, parse_submission_id
from site_agent.binding import MISMATCH, MISMATCH_EXIT
from site_agent.guard import FENCED_EXIT
from site_agent.lease_file import FENCE_AT
from site_agent.ray_driver import LOST_AT_SITE, RayJob
from site_agent.runner import NODE_DIED

ASK_AT = 1 / 2   # of the lease: ask the witnesses early, so an outage renews it well before the guards' deadline

RAY_TO_ATTEMPT = {
    "PENDING": AttemptState.ASSIGNED,
    "RUNNING": AttemptState.RUNNING,
    "SUCCEEDED": AttemptState.SUCCEEDED,
    "FAILED": AttemptState.FAILED,
    "STOPPED": AttemptState.STOPPED,
}
# Ray's own words before the job's output; only the code is taken from a kept job's failure.
RAY_EXIT = re.compile(r"Job entrypoint command failed with exit code (-?\d{1,3})\b")
NO_LONGER_DESIRED = "no longer desired"
GUARDED_OUT = "stopped at the site by its guard: the site's agent was silent for most of its lease"
NODE_LOST = "lost with its node (a spot node taken back, or a machine gone); its retry policy runs it again"


@dataclass(frozen=True)
class Wanted:
    """An attempt the federation assigns to this site; its submission id names it in Ray."""

    job_id: str
    attempt: int
    described: bool = True   # its spec has arrived; one listed only by reference yet is kept, not started


@dataclass(frozen=True)
class SiteWord:
    """What this agent decided itself about an attempt: one Ray never ran, or one it stopped."""

    state: AttemptState
    message: str


@dataclass(frozen=True)
class Start:
    """Hand a desired attempt to Ray (a no-op when Ray holds it already: the submission id).
    A Ray error fails the attempt only when Ray has just answered a listing: otherwise it may be
    Ray that is down, not the job that is bad."""

    sid: str
    ray_reachable: bool


@dataclass(frozen=True)
class Stop:
    """Stop a job Ray runs for this site."""

    sid: str
    why: str


@dataclass(frozen=True)
class Settle:
    """Record the site's own word on an attempt, which the report then carries instead of Ray's."""

    sid: str
    word: SiteWord


Action = Start | Stop | Settle


@dataclass(frozen=True)
class Records:
    """The agent's memory across passes, as a plan reads it."""

    local: Mapping[str, SiteWord]     # the site's own word, per submission id
    submitted: Collection[str]        # desired attempts handed to Ray by this process
    ran: Collection[str]              # desired attempts seen past PENDING
    epochs: Mapping[str, int]         # per job, the newest attempt seen here
    synced: bool                      # a desired set has arrived on the current stream
    fenced: str                       # why this site stopped its work and starts none


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    acts: bool                   # False: observe and report only (before the federation speaks, or fenced)
    submitted: frozenset[str]    # the records to keep
    ran: frozenset[str]
    epochs: dict[str, int]


def ours(jobs: Mapping[str, RayJob], site: str) -> dict[str, RayJob]:
    """Only this site's federation jobs: a Ray cluster may be shared with other sites or users."""
    return {sid: j for sid, j in jobs.items() if parse_submission_id(sid) and j.site in (None, site)}


def newest(epochs: Mapping[str, int], seen: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Per job, the newest attempt number among `epochs` and the (job, attempt) pairs `seen`."""
    out = dict(epochs)
    for job_id, number in seen:
        if number > out.get(job_id, 0):
            out[job_id] = number
    return out


def plan(desired: Mapping[str, Wanted], observed: Mapping[str, RayJob] | None, records: Records) -> Plan:
    """One pass's decisions. `observed` is None before Ray is listed: new assignments start
    first, since listing grows with Ray's job history and a start needs no look first."""
    epochs = dict(records.epochs)
    if observed is not None:
        epochs = newest(epochs, [_ids(sid) for sid in observed])
    if not records.synced or records.fenced:
        # Until the federation speaks on a stream, an empty desired set must not stop running work;
        # and a fenced site starts nothing until the federation speaks again.
        return Plan((), False, frozenset(records.submitted), frozenset(records.ran), epochs)
    submitted = frozenset(records.submitted) & desired.keys()
    ran = frozenset(records.ran)
    if observed is None:
        todo = [sid for sid in desired if sid not in submitted and sid not in records.local]
    else:
        ran = (ran | {sid for sid in desired if sid in observed and observed[sid].status != "PENDING"}) & desired.keys()
        # Not started yet, or lost by Ray (a restarted cluster) before it ran. One that ran and
        # vanished is the federation's to judge: starting it here could run it twice.
        todo = [sid for sid in desired if sid not in observed and sid not in records.local and sid not in ran]
    todo = [sid for sid in todo if desired[sid].described]
    actions: list[Action] = [_start(sid, desired[sid], epochs, ray_reachable=observed is not None) for sid in todo]
    if observed is not None:
        actions += [Stop(sid, NO_LONGER_DESIRED) for sid, job in observed.items()
                    if sid not in desired and not job.terminal]
    return Plan(tuple(actions), True, submitted, ran, epochs)


def _start(sid: str, wanted: Wanted, epochs: Mapping[str, int], *, ray_reachable: bool) -> Action:
    newer = epochs.get(wanted.job_id, 0)
    if wanted.attempt < newer:
        return Settle(sid, SiteWord(AttemptState.REJECTED, f"stale epoch: attempt {newer} of this job is newer"))
    return Start(sid, ray_reachable)


def plan_fence(desired: Collection[str], observed: Mapping[str, RayJob], local: Mapping[str, SiteWord],
               reason: str, waiting: Collection[str] = ()) -> list[Action]:
    """The lease ran out: stop every running federation job of this site and call it lost, and
    call every desired attempt not yet decided lost too (its retry policy covers that). One that
    ended keeps Ray's word: calling a finished job lost would run it again. Attempts `waiting` for
    the site (`on_site_loss: wait`) are never re-placed, so they keep running."""
    stops = [sid for sid, job in observed.items() if not job.terminal and sid not in waiting]
    actions: list[Action] = []
    for sid in stops:
        actions += [Stop(sid, f"fencing: {reason}"),
                    Settle(sid, SiteWord(AttemptState.LOST, f"stopped by the site: {reason}"))]
    ended = {sid for sid, job in observed.items() if job.terminal}
    actions += [Settle(sid, SiteWord(AttemptState.LOST, f"not started: {reason}"))
                for sid in desired if sid not in local and sid not in stops and sid not in waiting
                and sid not in ended]
    return actions


def starting(desired: Collection[str], observed: Mapping[str, RayJob], local: Collection[str]) -> set[str]:
    """Desired attempts Ray has not started yet: worth a quick look between full passes."""
    return {sid for sid in desired
            if sid not in local and (sid not in observed or observed[sid].status == "PENDING")}


@dataclass(frozen=True)
class Ref:
    sid: str
    job_id: str
    attempt: int


@dataclass(frozen=True)
class Status:
    job_id: str
    attempt: int
    state: AttemptState
    message: str


@dataclass(frozen=True)
class Report:
    """What one full report carries, before its log and output bytes are read."""

    statuses: tuple[Status, ...]
    outputs: tuple[Ref, ...]              # succeeded desired attempts: their output files go up with it
    logs: tuple[tuple[Ref, bool], ...]    # attempts whose new log bytes to read, and whether each ended


def plan_report(desired: Collection[str], observed: Mapping[str, RayJob], local: Mapping[str, SiteWord],
                watched: Collection[str], logs_done: Collection[str], *, speaks: Collection[str],
                site: str, guards_fired: bool = False) -> Report:
    """Every federation attempt Ray holds for this site, with Ray's state unless the site has its
    own word on a desired one (a job that succeeded did, whatever the site said: a fence's stop can
    come as it ends); then the site's own words. Outputs go with the terminal status until
    the federation takes both in; logs are read once Ray runs a job, until an ended one is drained.
    Ray's message goes up only for attempts in `speaks` (whose data lets logs cross); the others get
    a fixed word instead (`kept_message`). With `guards_fired` (this agent's predecessor was silent
    long enough), a guarded attempt its guard stopped is lost, not failed."""
    statuses, outputs, logs = [], [], []
    for sid, job in sorted(observed.items()):
        ref = Ref(sid, *_ids(sid))
        if job.status == "SUCCEEDED" and sid in desired:
            outputs.append(ref)
        if not (sid in local and sid in desired) or job.status == "SUCCEEDED":
            statuses.append(ray_status(ref, job, sid in speaks, site, guards_fired))
        if sid in watched and sid not in logs_done and job.status != "PENDING":
            logs.append((ref, job.terminal))
    statuses += [Status(*_ids(sid), word.state, word.message) for sid, word in sorted(local.items())
                 if sid in desired and not (sid in observed and observed[sid].status == "SUCCEEDED")]
    return Report(tuple(statuses), tuple(outputs), tuple(logs))


def keep_folder(sid: str, desired: Collection[str], observed: Mapping[str, RayJob]) -> bool:
    """An attempt's input/output folder stays while it is desired or Ray still runs it."""
    return sid in desired or (sid in observed and not observed[sid].terminal)


def fence_reason(now: float, renewed: float, lease_s: float, at: float = FENCE_AT) -> str | None:
    """Why this site must fence its work now, if it must: its lease (0: none) is counted from when
    the last acknowledged heartbeat was *sent*, and the site gives up a third of a lease early.
    With `at`, whether the lease has run that far (ASK_AT: time to ask whether anybody leads)."""
    silent = now - renewed
    if not lease_s or silent <= lease_s * at:
        return None
    return f"lease expired (no heartbeat acknowledged for {silent:.1f}s of a {lease_s:g}s lease)"


def ray_status(ref: Ref, job: RayJob, speaks: bool, site: str, guards_fired: bool) -> Status:
    if guards_fired and guarded_out(job):
        return Status(ref.job_id, ref.attempt, AttemptState.LOST, GUARDED_OUT)
    if node_died(job):
        return Status(ref.job_id, ref.attempt, AttemptState.LOST, NODE_LOST)
    if job.status == "FAILED" and job.message.startswith(LOST_AT_SITE):
        return Status(ref.job_id, ref.attempt, AttemptState.LOST, job.message[:500])
    message = "" if not job.terminal else ended_message(job) if speaks else kept_message(job, site)
    return Status(ref.job_id, ref.attempt, RAY_TO_ATTEMPT[job.status], message)


def node_died(job: RayJob) -> bool:
    """Failed because the node under it vanished (a spot node taken back, a machine lost), by Ray's
    own words: they come before any of the job's output, which cannot pose as them."""
    if job.status != "FAILED":
        return False
    m = job.message
    return m.startswith(NODE_DIED) or (m.startswith("Job supervisor actor died") and "its node has died" in m)


def guarded_out(job: RayJob) -> bool:
    """Stopped by its guard (`site_agent.guard`): run behind one, and ended with its code. Its own
    program could end with the same code; only while the agent's predecessor was silent long
    enough does the agent take it for the guard's."""
    exited = RAY_EXIT.match(job.message) if job.status == "FAILED" and job.guarded else None
    return exited is not None and int(exited.group(1)) == FENCED_EXIT


def ended_message(job: RayJob) -> str:
    """Ray's message, or the binding wrapper's own line when Ray could not honour a reservation."""
    if job.status == "FAILED" and MISMATCH in job.message:
        line = next(ln for ln in job.message.splitlines() if MISMATCH in ln)
        return "failed reservation: " + line[line.index(MISMATCH):][:450]
    return job.message[:500]


def kept_message(job: RayJob, site: str) -> str:
    """A fixed word, free of the job's data, for an attempt whose data keeps its logs at the site:
    Ray's message on a failure carries the tail of the job's output."""
    if job.status != "FAILED":
        return ""
    exited = RAY_EXIT.match(job.message)
    code = int(exited.group(1)) if exited else None
    what = "failed reservation" if code == MISMATCH_EXIT and MISMATCH in job.message else "failed"
    return f"{what}{f' (exit {code})' if code is not None else ''}; details kept at site {site}"


def _ids(sid: str) -> tuple[str, int]:
    parsed = parse_submission_id(sid)
    if parsed is None:
        raise ValueError(f"not a federation submission id: {sid!r}")
    return parsed
