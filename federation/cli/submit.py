"""`fedctl submit`: a job spec (with command-line additions) or a federated training spec."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from federation.cli import render
from federation.cli.common import EXIT_JOB_DID_NOT_SUCCEED, AddCommand, Subcommands, connect, wants_json
from federation.cli.progress import StatusLine, array_line, job_line
from federation.cli.training import submit_training


def cmd_submit(args: argparse.Namespace) -> int:
    from federation.client import JobArray
    from federation.spec.loader import read_file
    from federation.spec.sbatch import is_batch_script
    if len(args.files) > 1:
        return submit_many(args)
    args.file = args.files[0]
    if not is_batch_script(args.file):
        data, _, _ = read_file(args.file)
        if isinstance(data, dict) and data.get("kind") == "FederatedTraining":
            return submit_training(args)
    spec = _with_flags(_load(args.file), args)  # validated here so a bad file never reaches the network
    with connect(args) as client:
        job = client.submit(spec, args.request_id)
        jobs = _jobs(job)
        if not wants_json(args):
            print("\n".join(j.id for j in jobs), flush=True)
        if args.wait:
            statuses = _wait(job, jobs, args.timeout, live=not wants_json(args))
            if not wants_json(args):
                for st in statuses:
                    print(f"{st.id}: {st.message or st.state}" if len(statuses) > 1 else st.message or st.state)
        else:
            statuses = [j.status() for j in jobs]
        if wants_json(args):
            render.emit_json({"array_id": job.id, "jobs": [st.to_dict() for st in statuses]}
                             if isinstance(job, JobArray) else statuses[0].to_dict())
        ok = all(st.state == "succeeded" for st in statuses)
        return 0 if not args.wait or ok else EXIT_JOB_DID_NOT_SUCCEED


def _wait(job: Any, jobs: list, timeout: float | None, live: bool) -> list:
    """Every job's final status; with `live`, a status line on stderr as they go."""
    from federation.client import JobArray
    line = StatusLine() if live else None
    states = {j.id: j.status() for j in jobs} if isinstance(job, JobArray) else {}

    def changed(status: Any) -> None:
        if line is None:
            return
        if states:
            states[status.id] = status
            line.show(f"{job.id}: {array_line(states.values())}")
        else:
            line.show(job_line(status))
    try:
        return job.wait(timeout, changed) if isinstance(job, JobArray) else [job.wait(timeout, changed)]
    finally:
        if line is not None:
            line.end()


def submit_many(args: argparse.Namespace) -> int:
    """Several job specs, read and checked here first (one bad file sends nothing), then sent in few
    calls, each stored or refused on its own: ids on stdout, refusals on stderr naming the file."""
    from federation.errors import FederationError, InvalidSpec
    if args.request_id or args.wait:
        raise InvalidSpec(f"--{'request-id' if args.request_id else 'wait'}: for one file at a time")
    specs = [_with_flags(_load(path), args, path) for path in args.files]
    with connect(args) as client:
        results = client.submit_many(specs)
    refused = [(path, r) for path, r in zip(args.files, results, strict=True) if isinstance(r, FederationError)]
    if wants_json(args):
        render.emit_json([{"file": path, "error": {"code": r.code.value, "message": _without_index(r.message)}}
                          if isinstance(r, FederationError) else {"file": path, "jobs": [j.id for j in _jobs(r)]}
                          for path, r in zip(args.files, results, strict=True)])
    else:
        print("\n".join(j.id for r in results if not isinstance(r, FederationError) for j in _jobs(r)), flush=True)
        for path, e in refused:
            sys.stderr.write(f"error[{e.code.value}]: {path}: {_without_index(e.message)}\n")
    return refused[0][1].exit_status if refused else 0


def _load(path: str) -> Any:
    """A YAML job spec or an #SBATCH script; what a script's translation skipped goes to stderr."""
    from federation.spec import load_batch, load_job
    from federation.spec.sbatch import is_batch_script
    if not is_batch_script(path):
        return load_job(path)
    spec, notes = load_batch(path)
    for note in notes:
        sys.stderr.write(f"note: {path}: {note}\n")
    return spec


def _jobs(submitted: Any) -> list:
    from federation.client import JobArray
    return list(submitted) if isinstance(submitted, JobArray) else [submitted]


def _without_index(message: str) -> str:
    return message.partition(": ")[2] if message.startswith("specs[") else message


def _with_flags(spec: Any, args: argparse.Namespace, path: str | None = None) -> Any:
    """The spec with --queue and --after-* from the command line added (validated like the file)."""
    from federation.spec import job_from_dict
    data = spec.model_dump(mode="json", exclude_none=True)
    if args.queue:
        data["spec"]["queue"] = args.queue
    deps = data["spec"].setdefault("dependencies", {})
    for kind in ("after_ok", "after_any", "after_not_ok"):
        deps[kind] = list(deps.get(kind, [])) + list(getattr(args, kind) or [])
    return job_from_dict(data, source=f"{path or args.file} with command-line flags")


def cmd_convert(args: argparse.Namespace) -> int:
    """An `#SBATCH` script's job spec as YAML on stdout, checked as `submit` would check it."""
    from federation.spec import load_batch, sbatch
    load_batch(args.file)   # refused here, with its line, as submit would refuse it
    text, source = sbatch.read_script(args.file)
    sys.stdout.write(sbatch.to_yaml(sbatch.translate(text, source), source))
    return 0


def register(sub: Subcommands, add: AddCommand) -> None:
    sp = add(sub, "submit", cmd_submit, "submit a job or federated training spec, or several job specs; "
                                        "prints their ids")
    sp.add_argument("files", nargs="+", metavar="FILE")
    sp.add_argument("--wait", action="store_true", help="wait for the job to end; exit 1 unless it succeeded")
    sp.add_argument("--timeout", type=float, default=None, help="seconds to wait with --wait")
    sp.add_argument("--queue", help="charge this queue (overrides spec.queue)")
    sp.add_argument("--request-id", help="make a retried submission return the first one's job, not a new one")
    for kind in ("after_ok", "after_any", "after_not_ok"):
        sp.add_argument(f"--{kind.replace('_', '-')}", dest=kind, action="append", metavar="ID",
                        help=f"add a job or array id to spec.dependencies.{kind} (repeatable)")
    sp = add(sub, "convert", cmd_convert, "print the YAML job spec an #SBATCH script gives (what submit would send)")
    sp.add_argument("file", metavar="SCRIPT")
