"""fedctl commands about jobs: list, status, logs, cancel, explain, the queue and resource usage."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from datetime import UTC
from typing import Any

from federation.cli import render
from federation.cli.common import AddCommand, Subcommands, connect, wants_json
from federation.errors import ConfigError

JOB_HEADERS = ["ID", "NAME", "TENANT", "STATE", "SITE", "AGE", "MESSAGE"]


def _job_row(j: Any) -> list[str]:
    return [j.id, j.name, j.tenant, j.state, j.site or "-", render.ago(j.created_at), j.message]


STATES = ("pending", "placed", "running", "succeeded", "failed", "cancelled")
SLURM_STATES = {"pd": "pending", "cf": "placed", "configuring": "placed", "r": "running", "cd": "succeeded",
                "completed": "succeeded", "f": "failed", "to": "failed", "timeout": "failed", "ca": "cancelled"}


def states(text: str) -> list[str]:
    """`--state` values: ours or Slurm's (`squeue -t PD,R`), any case, comma-separated."""
    out = []
    for word in (w.strip().lower() for w in text.split(",") if w.strip()):
        state = word if word in STATES else SLURM_STATES.get(word)
        if state is None:
            raise argparse.ArgumentTypeError(f"{word!r} is not a state: use {', '.join(STATES)} or Slurm's "
                                             "PENDING, CONFIGURING, RUNNING, COMPLETED, FAILED, TIMEOUT, CANCELLED")
        out.append(state)
    return out


def cmd_jobs(args: argparse.Namespace) -> int:
    states = sorted(set(args.state or ()))   # Slurm's words and ours may name one state twice
    with connect(args) as client:
        if args.watch:
            return _watch_jobs(client, args, states)
        jobs = client.jobs(tenant=args.tenant, states=states, limit=args.limit or None, submitter=args.user)
    if wants_json(args):
        render.emit_json({"jobs": [j.to_dict() for j in jobs]})
    else:
        render.table(JOB_HEADERS, [_job_row(j) for j in jobs])
    return 0


def _watch_jobs(client: Any, args: argparse.Namespace, states: list[str]) -> int:
    """The table again every `--interval` on a terminal; elsewhere (or with --format json) a line
    (or a JSON object) for each job that appears or changes. Until Ctrl-C."""
    seen: dict[str, tuple[str, str, int]] = {}
    raw = getattr(sys.stdout, "raw", sys.stdout)
    redraw = raw.isatty() and not wants_json(args)
    try:
        while True:
            jobs = client.jobs(tenant=args.tenant, states=states, limit=args.limit or None, submitter=args.user)
            if redraw:
                raw.write("\x1b[H\x1b[2J")   # home and clear; the table below is escaped like any output
                render.table(JOB_HEADERS, [_job_row(j) for j in jobs])
            for j in jobs:
                now = (j.state, j.site, len(j.attempts))
                if not redraw and seen.get(j.id) != now:
                    if wants_json(args):
                        print(json.dumps(j.to_dict(), sort_keys=True), flush=True)
                    else:
                        print("  ".join(c for c in _job_row(j)[:5] + [j.message]), flush=True)
                seen[j.id] = now
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def cmd_status(args: argparse.Namespace) -> int:
    with connect(args) as client:
        s = client.get(args.id)
    if wants_json(args):
        render.emit_json(s.to_dict())
    else:
        print(f"{s.id}  {s.name}  tenant={s.tenant}  state={s.state}  site={s.site or '-'}")
        print(f"  {s.message}")
        for a in s.attempts:
            print(f"  attempt {a.number}: {a.state} on {a.site} ({a.submission_id})"
                  f"{': ' + a.message if a.message else ''}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """The job's logs; where the rules of its data keep them at its site, a line on stderr saying so
    and how to read them there (`kept_at_site` in JSON)."""
    with connect(args) as client:
        if wants_json(args):
            parts = list(client.log_stream(args.id, follow=args.follow))
            render.emit_json({"id": args.id, "logs": b"".join(d for d, _ in parts).decode("utf-8", "replace"),
                              "kept_at_site": next((k for _, k in parts if k), None)})
            return 0
        for chunk, kept in client.log_stream(args.id, follow=args.follow):
            if kept:
                print(kept, file=sys.stderr)
                continue
            sys.stdout.write(chunk.decode("utf-8", "replace"))
            sys.stdout.flush()
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with connect(args) as client:
        s = client.cancel(args.id)
    if wants_json(args):
        render.emit_json(s.to_dict())
    else:
        print(f"{s.id} {s.state}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    with connect(args) as client:
        p = client.explain(args.id)
    if wants_json(args):
        render.emit_json(dict(p.to_dict(), id=args.id))
        return 0
    print(f"{args.id}: {p.state}" + (f" on {p.site}" if p.site else ""))
    print(f"  {p.summary}")
    if p.execution:
        print(f"  starts as: {p.execution}")
    if p.verdicts:
        render.table(["SITE", "VERDICT", "WHY"],
                     [[v.site, "ok" if v.eligible else v.reason_code, v.reason] for v in p.verdicts])
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    with connect(args) as client:
        entries, queues = client.queue(queue=args.queue, tenant=args.tenant, limit=args.limit)
    if wants_json(args):
        render.emit_json({"jobs": [e.to_dict() for e in entries], "queues": [q.to_dict() for q in queues]})
        return 0
    render.table(["QUEUE", "PARENT", "PENDING", "STANDING", "USE NOW", "DESERVED", "LIMIT", "WEIGHT"],
                 [[q.name, q.parent or "-", q.pending, _standing(q.tier, q.share), _amounts(q.running),
                   _amounts(q.deserved), _amounts(q.limit), f"{q.over_quota_weight:g}"] for q in queues])
    print()
    render.table(["POS", "ID", "NAME", "TENANT", "QUEUE", "PRIORITY", "STANDING", "AGE", "HELD", "RESERVED"],
                 [[e.position, e.job.id, e.job.name, e.job.tenant, e.job.queue, e.priority,
                   _standing(e.tier, e.share), render.ago(e.job.created_at), e.held or "-", _reserved(e)]
                  for e in entries])
    return 0


def _reserved(e: Any) -> str:
    """Where and in how long the job is reserved a start (backfill)."""
    if not e.reserved_at:
        return "-"
    return f"{e.reserved_site} in {max(0.0, e.reserved_at - time.time()):.0f}s"


def _standing(tier: int, share: float) -> str:
    """A queue's fair-share position in words: how far into its deserved share, or past it."""
    if tier < 0:
        return "held"
    if tier == 0:
        return f"{share:.0%} of deserved"
    return f"over ({share:.2f}/weight)" if tier == 1 else "over (no weight)"


def _amounts(a: dict[str, float]) -> str:
    from policies.fairshare import describe_dim
    return ", ".join(describe_dim(d, v) for d, v in sorted(a.items()) if v) or "-"


def _privacy(args: argparse.Namespace) -> int:
    with connect(args) as client:
        rows = client.privacy()
    if wants_json(args):
        render.emit_json({"privacy": rows})
        return 0
    def left(r: dict) -> str:
        return f"{r['budget_epsilon'] - r['spent_epsilon'] - r['held_epsilon']:.3g}" if r["budget_epsilon"] else "-"

    render.table(["DATASET", "BUDGET-EPSILON", "SPENT", "HELD", "LEFT", "TRAININGS"],
                 [[r["dataset"], f"{r['budget_epsilon']:g}" if r["budget_epsilon"] else "-",
                   f"{r['spent_epsilon']:.3g}", f"{r['held_epsilon']:.3g}", left(r), r["trainings"]] for r in rows])
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    import csv
    import time as clock
    by = [f.strip() for f in args.by.split(",") if f.strip()]
    now = clock.time()
    since, until = _when(args.since, now) if args.since else 0.0, _when(args.until, now) if args.until else 0.0
    if args.privacy:
        return _privacy(args)
    with connect(args) as client:
        rows = client.usage(group_by=by, since=since, until=until)
    if args.csv:
        with contextlib.nullcontext(sys.stdout) if args.csv == "-" else open(args.csv, "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=[*by, "attempts", "cpu_seconds", "memory_gib_seconds",
                                                     "gpu_seconds", "cost"])
            writer.writeheader()
            writer.writerows(rows)
        return 0
    if wants_json(args):
        render.emit_json({"since": since, "until": until or now, "group_by": by, "rows": rows})
        return 0
    cost = ["COST"] if args.cost else []
    render.table([f.upper() for f in by] + ["ATTEMPTS", "CPU-HOURS", "MEMORY-GIB-HOURS", "GPU-HOURS"] + cost,
                 [[r[f] or "-" for f in by] + [r["attempts"], f"{r['cpu_seconds'] / 3600:.2f}",
                                               f"{r['memory_gib_seconds'] / 3600:.2f}",
                                               f"{r['gpu_seconds'] / 3600:.2f}"]
                  + ([f"{r['cost']:.2f}"] if args.cost else []) for r in rows])
    return 0


def _when(text: str, now: float) -> float:
    """A time from a duration ago (7d, 12h), an ISO date or time, or unix seconds."""
    from datetime import datetime

    from federation.spec.quantity import parse_duration
    try:
        return now - parse_duration(text) if not text.replace(".", "", 1).isdigit() else float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since/--until: {text!r} is not a duration (7d), an ISO date or unix seconds") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def register(sub: Subcommands, add: AddCommand) -> None:
    sp = add(sub, "queue", cmd_queue, "pending jobs in scheduling order with their fair-share standing")
    sp.add_argument("--queue", help="only this queue")
    sp.add_argument("--tenant", help="only this tenant")
    sp.add_argument("--limit", type=int, default=100)

    sp = add(sub, "usage", cmd_usage, "resource use of attempts that ran, by tenant, queue, site or GPU model")
    sp.add_argument("--by", default="tenant", help="comma-separated: tenant, queue, site, gpu_model")
    sp.add_argument("--since", help="a duration ago (7d), an ISO date, or unix seconds; default: from the start")
    sp.add_argument("--until", help="as --since; default: now")
    sp.add_argument("--csv", metavar="FILE", help="write the rows as CSV to FILE (- for standard output)")
    sp.add_argument("--cost", action="store_true", help="a COST column: each attempt's hours at the price of where "
                                                        "it ran (the policy's currency; JSON and CSV always have it)")
    sp.add_argument("--privacy", action="store_true", help="instead, each dataset's differential privacy budget: "
                                                           "epsilon spent by ended trainings and held by running ones")

    sp = add(sub, "jobs", cmd_jobs, "list jobs, newest first")
    sp.add_argument("--tenant", "-A", "--account", dest="tenant", help="only this tenant (Slurm's account)")
    sp.add_argument("--user", "-u", help="only the jobs this identity submitted (a certificate's or token's name)")
    sp.add_argument("--state", "-t", dest="state", action="extend", type=states,
                    help="only these states, comma-separated (repeatable): pending, placed, running, succeeded, "
                         "failed, cancelled, or Slurm's names and codes (PENDING/PD, CONFIGURING/CF, RUNNING/R, "
                         "COMPLETED/CD, FAILED/F, TIMEOUT/TO, CANCELLED/CA)")
    sp.add_argument("--limit", type=int, default=100, help="at most this many, fetched a page at a time (0: all)")
    sp.add_argument("--watch", action="store_true", help="keep showing them as they change, until Ctrl-C")
    sp.add_argument("--interval", type=float, default=2.0, help="seconds between looks with --watch")

    for name, fn, help in (("status", cmd_status, "a job's state and attempts"),
                           ("cancel", cmd_cancel, "cancel a job (stops its Ray job)"),
                           ("explain", cmd_explain, "why a job runs where it runs, or why it still waits")):
        add(sub, name, fn, help).add_argument("id")
    sp = add(sub, "logs", cmd_logs, "a job's logs")
    sp.add_argument("id")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
