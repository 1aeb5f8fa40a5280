"""`fedctl training`: federated trainings, their rounds and their global model."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from federation.cli import render
from federation.cli.common import EXIT_JOB_DID_NOT_SUCCEED, AddCommand, Subcommands, connect, wants_json
from federation.cli.progress import StatusLine, training_line
from federation.errors import InvalidSpec


def submit_training(args: argparse.Namespace) -> int:
    from federation.spec import load_training
    if args.queue or args.request_id or any(getattr(args, k) for k in ("after_ok", "after_any", "after_not_ok")):
        raise InvalidSpec(f"{args.file}: --queue, --request-id and --after-* are for jobs; set spec.queue in the file")
    spec = load_training(args.file)
    with connect(args) as client:
        run = client.submit_training(spec)
        if not wants_json(args):
            print(run.id, flush=True)
        if args.wait:
            line = StatusLine() if not wants_json(args) else None
            try:
                status = run.wait(timeout=args.timeout,
                                  on_change=(lambda t: line.show(training_line(t))) if line else lambda t: None)
            finally:
                if line is not None:
                    line.end()
        else:
            status = run.status()
    if wants_json(args):
        render.emit_json(status.to_dict())
    elif args.wait:
        print_training(status)
    return 0 if not args.wait or status.state == "succeeded" else EXIT_JOB_DID_NOT_SUCCEED


ROUND_HEADERS = ("ROUND", "STATE", "REPORTED", "LEFT OUT", "AGGREGATOR", "KB MOVED", "SECONDS", "LOCAL ACCURACY")


def print_training(t: Any) -> None:
    print(f"{t.id} {t.name} ({t.tenant}): {t.state}, {t.round} of {t.rounds} rounds; {t.message}")
    rows = [(f"{r.number}" + (f".{r.attempt}" if r.attempt > 1 else ""), r.state, ",".join(r.reported) or "-",
             ",".join(r.lost) or "-", r.aggregator, f"{r.bytes_moved / 1024:.1f}",
             f"{r.metrics['seconds']:.1f}" if "seconds" in r.metrics else "-",
             f"{r.metrics['accuracy']:.3f}" if "accuracy" in r.metrics else "-") for r in t.history]
    if rows:
        render.table(ROUND_HEADERS, rows)


def cmd_training(args: argparse.Namespace) -> int:
    from federation.client import Training
    with connect(args) as client:
        if args.action == "list":
            found = client.trainings(tenant=args.tenant)
            if wants_json(args):
                render.emit_json({"trainings": [t.to_dict() for t in found]})
            else:
                render.table(("ID", "NAME", "TENANT", "STATE", "ROUND", "MESSAGE"),
                             [(t.id, t.name, t.tenant, t.state, f"{t.round}/{t.rounds}", t.message) for t in found])
            return 0
        run = Training(client, args.id)
        if args.action == "model":
            import io

            import numpy as np
            model = run.model()
            buffer = io.BytesIO()
            np.savez(buffer, **model)
            Path(args.out).write_bytes(buffer.getvalue())
            print(f"{args.out}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(model.items())))
            return 0
        status = run.cancel() if args.action == "cancel" else run.status()
    if wants_json(args):
        render.emit_json(status.to_dict())
    else:
        print_training(status)
    return 0


def register(sub: Subcommands, add: AddCommand) -> None:
    training = add(sub, "training", None, "federated trainings: rounds across the sites holding a dataset")
    training_sub = training.add_subparsers(dest="action", required=True, metavar="ACTION")
    add(training_sub, "list", cmd_training, "every training you may see").add_argument("--tenant")
    add(training_sub, "show", cmd_training, "a training and its rounds").add_argument("id")
    add(training_sub, "cancel", cmd_training, "stop a training and its jobs").add_argument("id")
    sp = add(training_sub, "model", cmd_training, "save the current global model (.npz)")
    sp.add_argument("id")
    sp.add_argument("--out", required=True, help="file to write")
