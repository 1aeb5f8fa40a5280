"""fedctl: one command-line program for users and operators.

Every command takes `--format json`. Errors print one line, `error[CODE]: message`
(or a JSON object with --format json), and exit with the code's status.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from federation.cli import render
from federation.errors import (
    ConfigError,
    ErrorCode,
    FederationError,
    InvalidSpec,
    Timeout,
)

EXIT_JOB_DID_NOT_SUCCEED = 1
EXIT_CHECK_FAILED = 1


def _client(args: argparse.Namespace):
    from federation.client import Client
    return Client.from_env(address=args.address, ca=args.ca, cert=args.cert, key=args.key,
                           insecure=True if args.insecure else None)


def _json(args: argparse.Namespace) -> bool:
    return args.format == "json"


# ------------------------------------------------------------------ jobs


def cmd_submit(args: argparse.Namespace) -> int:
    from federation.client import JobArray
    from federation.spec import load_job
    from federation.spec.loader import read_file
    data, _, _ = read_file(args.file)
    if isinstance(data, dict) and data.get("kind") == "FederatedTraining":
        return _submit_training(args)
    spec = _with_flags(load_job(args.file), args)  # validated here so a bad file never reaches the network
    with _client(args) as client:
        job = client.submit(spec, args.request_id)
        jobs = list(job) if isinstance(job, JobArray) else [job]
        if not _json(args):
            print("\n".join(j.id for j in jobs), flush=True)
        if args.wait:
            statuses = job.wait(timeout=args.timeout) if isinstance(job, JobArray) else [job.wait(args.timeout)]
            if not _json(args):
                for st in statuses:
                    print(f"{st.id}: {st.message or st.state}" if len(statuses) > 1 else st.message or st.state)
        else:
            statuses = [j.status() for j in jobs]
        if _json(args):
            render.emit_json({"array_id": job.id, "jobs": [st.to_dict() for st in statuses]}
                             if isinstance(job, JobArray) else statuses[0].to_dict())
        ok = all(st.state == "succeeded" for st in statuses)
        return 0 if not args.wait or ok else EXIT_JOB_DID_NOT_SUCCEED


def _submit_training(args: argparse.Namespace) -> int:
    from federation.spec import load_training
    if args.queue or args.request_id or any(getattr(args, k) for k in ("after_ok", "after_any", "after_not_ok")):
        raise InvalidSpec(f"{args.file}: --queue, --request-id and --after-* are for jobs; set spec.queue in the file")
    spec = load_training(args.file)
    with _client(args) as client:
        run = client.submit_training(spec)
        if not _json(args):
            print(run.id, flush=True)
        status = run.wait(timeout=args.timeout) if args.wait else run.status()
    if _json(args):
        render.emit_json(status.to_dict())
    elif args.wait:
        _print_training(status)
    return 0 if not args.wait or status.state == "succeeded" else EXIT_JOB_DID_NOT_SUCCEED


ROUND_HEADERS = ("ROUND", "STATE", "REPORTED", "LEFT OUT", "AGGREGATOR", "KB MOVED", "SECONDS", "LOCAL ACCURACY")


def _print_training(t) -> None:
    print(f"{t.id} {t.name} ({t.tenant}): {t.state}, {t.round} of {t.rounds} rounds; {t.message}")
    rows = [(f"{r.number}" + (f".{r.attempt}" if r.attempt > 1 else ""), r.state, ",".join(r.reported) or "-",
             ",".join(r.lost) or "-", r.aggregator, f"{r.bytes_moved / 1024:.1f}",
             f"{r.metrics['seconds']:.1f}" if "seconds" in r.metrics else "-",
             f"{r.metrics['accuracy']:.3f}" if "accuracy" in r.metrics else "-") for r in t.history]
    if rows:
        render.table(ROUND_HEADERS, rows)


def cmd_training(args: argparse.Namespace) -> int:
    from federation.client import Training
    with _client(args) as client:
        if args.action == "list":
            found = client.trainings(tenant=args.tenant)
            if _json(args):
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
    if _json(args):
        render.emit_json(status.to_dict())
    else:
        _print_training(status)
    return 0


def _with_flags(spec, args: argparse.Namespace):
    """The spec with --queue and --after-* from the command line added (validated like the file)."""
    from federation.spec import job_from_dict
    data = spec.model_dump(mode="json", exclude_none=True)
    if args.queue:
        data["spec"]["queue"] = args.queue
    deps = data["spec"].setdefault("dependencies", {})
    for kind in ("after_ok", "after_any", "after_not_ok"):
        deps[kind] = list(deps.get(kind, [])) + list(getattr(args, kind) or [])
    return job_from_dict(data, source=f"{args.file} with command-line flags")


def cmd_jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        jobs = client.jobs(tenant=args.tenant, states=args.state or (), limit=args.limit)
    if _json(args):
        render.emit_json({"jobs": [j.to_dict() for j in jobs]})
    else:
        render.table(["ID", "NAME", "TENANT", "STATE", "SITE", "AGE", "MESSAGE"],
                     [[j.id, j.name, j.tenant, j.state, j.site or "-", render.ago(j.created_at), j.message[:60]]
                      for j in jobs])
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        s = client.get(args.id)
    if _json(args):
        render.emit_json(s.to_dict())
    else:
        print(f"{s.id}  {s.name}  tenant={s.tenant}  state={s.state}  site={s.site or '-'}")
        print(f"  {s.message}")
        for a in s.attempts:
            print(f"  attempt {a.number}: {a.state} on {a.site} ({a.submission_id}){': ' + a.message if a.message else ''}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if _json(args):
            data = b"".join(client.stream_logs(args.id, follow=args.follow))
            render.emit_json({"id": args.id, "logs": data.decode("utf-8", "replace")})
            return 0
        for chunk in client.stream_logs(args.id, follow=args.follow):
            sys.stdout.write(chunk.decode("utf-8", "replace"))
            sys.stdout.flush()
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        s = client.cancel(args.id)
    if _json(args):
        render.emit_json(s.to_dict())
    else:
        print(f"{s.id} {s.state}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    with _client(args) as client:
        p = client.explain(args.id)
    if _json(args):
        render.emit_json(dict(p.to_dict(), id=args.id))
        return 0
    print(f"{args.id}: {p.state}" + (f" on {p.site}" if p.site else ""))
    print(f"  {p.summary}")
    if p.verdicts:
        render.table(["SITE", "VERDICT", "WHY"],
                     [[v.site, "ok" if v.eligible else v.reason_code, v.reason] for v in p.verdicts])
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    with _client(args) as client:
        entries, queues = client.queue(queue=args.queue, tenant=args.tenant, limit=args.limit)
    if _json(args):
        render.emit_json({"jobs": [e.to_dict() for e in entries], "queues": [q.to_dict() for q in queues]})
        return 0
    render.table(["QUEUE", "PARENT", "PENDING", "STANDING", "USE NOW", "DESERVED", "LIMIT", "WEIGHT"],
                 [[q.name, q.parent or "-", q.pending, _standing(q.tier, q.share), _amounts(q.running),
                   _amounts(q.deserved), _amounts(q.limit), f"{q.over_quota_weight:g}"] for q in queues])
    print()
    render.table(["POS", "ID", "NAME", "TENANT", "QUEUE", "PRIORITY", "STANDING", "AGE", "HELD"],
                 [[e.position, e.job.id, e.job.name, e.job.tenant, e.job.queue, e.priority,
                   _standing(e.tier, e.share), render.ago(e.job.created_at), e.held or "-"] for e in entries])
    return 0


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


def cmd_usage(args: argparse.Namespace) -> int:
    import csv
    import time as clock
    by = [f.strip() for f in args.by.split(",") if f.strip()]
    now = clock.time()
    since, until = _when(args.since, now) if args.since else 0.0, _when(args.until, now) if args.until else 0.0
    with _client(args) as client:
        rows = client.usage(group_by=by, since=since, until=until)
    if args.csv:
        out = sys.stdout if args.csv == "-" else open(args.csv, "w", newline="")
        try:
            writer = csv.DictWriter(out, fieldnames=[*by, "attempts", "cpu_seconds", "memory_gib_seconds",
                                                     "gpu_seconds"])
            writer.writeheader()
            writer.writerows(rows)
        finally:
            if out is not sys.stdout:
                out.close()
        return 0
    if _json(args):
        render.emit_json({"since": since, "until": until or now, "group_by": by, "rows": rows})
        return 0
    render.table([f.upper() for f in by] + ["ATTEMPTS", "CPU-HOURS", "MEMORY-GIB-HOURS", "GPU-HOURS"],
                 [[r[f] or "-" for f in by] + [r["attempts"], f"{r['cpu_seconds'] / 3600:.2f}",
                                               f"{r['memory_gib_seconds'] / 3600:.2f}", f"{r['gpu_seconds'] / 3600:.2f}"]
                  for r in rows])
    return 0


def _when(text: str, now: float) -> float:
    """A time from a duration ago (7d, 12h), an ISO date or time, or unix seconds."""
    from datetime import datetime, timezone

    from federation.spec.quantity import parse_duration
    try:
        return now - parse_duration(text) if not text.replace(".", "", 1).isdigit() else float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since/--until: {text!r} is not a duration (7d), an ISO date or unix seconds") from None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def cmd_user_add(args: argparse.Namespace) -> int:
    from federation.identity import TENANT_ROLES, scopes
    from federation.pki import Issued, issue
    from federation.spec.models import NAME_RE
    for what, values in (("name", [args.name]), ("--tenant", args.tenant or []), ("--site", args.site or [])):
        bad = [v for v in values if not NAME_RE.match(v)]
        if bad:
            raise ConfigError(f"{what}: {bad[0]!r} must be lower-case letters, digits and '-'")
    if args.role in TENANT_ROLES and not args.tenant:
        raise ConfigError(f"--tenant: a {args.role} needs at least one tenant")
    if args.role == "site-operator" and not args.site:
        raise ConfigError("--site: a site-operator needs at least one site")
    directory = Path(args.dir)
    ca = Issued(directory / "ca.pem", directory / "ca.key")
    if not ca.key.exists():
        raise ConfigError(f"{ca.key}: no CA here; run `fedctl ca init --dir {directory}` first")
    if (directory / f"{args.name}.pem").exists():
        raise ConfigError(f"{directory / args.name}.pem exists; remove it to issue a new certificate")
    issued = issue(ca, directory, args.name, days=args.days,
                   units=tuple(scopes(args.role, tuple(args.tenant or ()), tuple(args.site or ()))))
    if _json(args):
        render.emit_json({"name": args.name, "role": args.role, "cert": str(issued.cert), "key": str(issued.key)})
    else:
        print(f"{args.name} ({args.role}): {issued.cert}, {issued.key}")
    return 0


def cmd_site_token(args: argparse.Namespace) -> int:
    from federation.spec.quantity import parse_duration
    labels = {}
    for item in args.label or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise ConfigError(f"--label: {item!r} is not key=value")
        labels[k] = v
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as e:
        raise ConfigError(f"--ttl: {e}") from None
    with _client(args) as client:
        token, expires = client.create_join_token(args.name, args.jurisdiction, args.region, labels, ttl)
    if _json(args):
        render.emit_json({"name": args.name, "token": token, "expires_at": expires})
    else:
        print(token)
    return 0


def cmd_site_join(args: argparse.Namespace) -> int:
    from federation.enrolment import join
    if not args.ca:
        raise ConfigError("--ca: the federation's CA certificate is needed to check who answers")
    cert = join(args.enrol_address, Path(args.ca), args.token, Path(args.dir))
    if _json(args):
        render.emit_json({"cert": str(cert), "key": str(Path(args.dir) / "site.key"), "ca": str(Path(args.dir) / "ca.pem")})
    else:
        print(f"enrolled: {cert} (key {Path(args.dir) / 'site.key'}); point spec.federation.tls at them")
    return 0


def cmd_server_drain(args: argparse.Namespace) -> int:
    drain = args.action == "drain"
    deadline = time.monotonic() + (args.timeout if drain else 0)
    with _client(args) as client:
        draining, pending, live = client.drain_federation(drain)
        while drain and args.wait and (pending or live):
            if time.monotonic() > deadline:
                raise Timeout(f"--timeout: {pending} jobs pending and {live} attempts live after {args.timeout:g}s")
            time.sleep(1.0)
            draining, pending, live = client.drain_federation(True)
    if _json(args):
        render.emit_json({"draining": draining, "pending": pending, "live": live})
    else:
        print(f"federation {'draining' if draining else 'taking submissions'}: {pending} jobs pending, "
              f"{live} attempts placed or running")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with _client(args) as client:
        n = client.revoke(args.name)
    if _json(args):
        render.emit_json({"name": args.name, "revoked": n})
    else:
        print(f"{args.name}: {n} certificate{'s' if n != 1 else ''} revoked")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from federation import audit
    public = Path(args.public) if args.public else audit.public_path(Path(args.store))
    if not public.exists():
        raise ConfigError(f"{public}: no audit public key (give --public)")
    n, head, problem = audit.verify(audit.read(Path(args.store)), audit.load_public(public))
    if _json(args):
        render.emit_json({"ok": not problem, "records": n, "head": head, "problem": problem or None})
    elif problem:
        sys.stderr.write(f"audit log {args.store}: {problem}\n")
    else:
        print(f"audit log {args.store}: {n} records, chain and signatures intact; head {head}")
    return EXIT_CHECK_FAILED if problem else 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    from federation import audit
    records = audit.read(Path(args.store), args.action or "", args.subject or "", args.actor or "")[-args.limit:]
    if _json(args):
        render.emit_json({"records": [r.to_dict() for r in records]})
        return 0
    render.table(["SEQ", "TIME", "ACTOR", "ACTION", "SUBJECT", "DETAIL"],
                 [[r.seq, render.when(r.at), r.actor, r.action, r.subject,
                   ", ".join(f"{k}={v}" for k, v in sorted(r.detail.items()))[:120]] for r in records])
    return 0


# ------------------------------------------------------------------ sites


def _site_row(s) -> list[Any]:
    cap, alloc = s.capacity, s.allocated
    return [s.name, s.jurisdiction, s.region, s.state, "yes" if s.connected else "no",
            f"{alloc['cpus']:g}/{cap['cpus']:g}", f"{render.gib(alloc['memory'])}/{render.gib(cap['memory'])}",
            f"{alloc['gpus']:g}/{cap['gpus']:g}", s.running_attempts,
            ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) or "-"]


SITE_HEADERS = ["NAME", "JURIS", "REGION", "STATE", "CONNECTED", "CPUS", "MEMORY", "GPUS", "ATTEMPTS", "LABELS"]


def cmd_site_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        sites = client.sites()
    if _json(args):
        render.emit_json({"sites": [s.to_dict() for s in sites]})
    else:
        render.table(SITE_HEADERS, [_site_row(s) for s in sites])
    return 0


def cmd_site_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        s = client.site(args.name)
    if _json(args):
        render.emit_json(s.to_dict())
        return 0
    render.table(SITE_HEADERS, [_site_row(s)])
    for d in s.datasets:
        print(f"  dataset {d['name']} ({d['classification']}) {d['path']}")
    print(f"  last heartbeat {render.ago(s.last_heartbeat)}")
    return 0


def cmd_site_inventory(args: argparse.Namespace) -> int:
    """A site's GPU inventory as its agent would publish it, or a raw NVML recording of this machine."""
    import json

    if args.record:
        from site_agent.nvml_record import record
        try:
            import pynvml
            data = record(pynvml)
        except ImportError:
            raise ConfigError("--record: NVML bindings are not installed (pip install 'fedctl[site]')") from None
        except Exception as e:  # pynvml.NVMLError and its subclasses: no driver, no GPU
            raise ConfigError(f"--record: NVML: {e}") from None
        Path(args.record).write_text(json.dumps(data, indent=1))
        print(f"{args.record}: {len(data['gpus'])} GPUs recorded")
        return 0
    from federation.spec import load_site
    from site_agent.inventory import site_gpus
    nodes = site_gpus(load_site(args.config), None).inventory.nodes
    rows = [{"name": n.name, "model": n.model, "gpus": n.gpus, "memory": n.memory,
             "nvlink_domains": sorted({d for d in n.domains if d}), "rack": n.rack, "block": n.block} for n in nodes]
    if _json(args):
        render.emit_json({"nodes": rows})
        return 0
    render.table(["NODE", "MODEL", "GPUS", "MEMORY", "NVLINK", "RACK", "BLOCK"],
                 [[r["name"], r["model"], r["gpus"], render.gib(r["memory"]), ",".join(r["nvlink_domains"]) or "-",
                   r["rack"] or "-", r["block"] or "-"] for r in rows])
    return 0


def _site_state(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with _client(args) as client:
            s = client.drain(args.name, args.handover) if action == "drain" else getattr(client, action)(args.name)
        if _json(args):
            render.emit_json(s.to_dict())
        else:
            print(f"{s.name} {s.state}")
        return 0
    return run


def _wait_for_signal(stop: Callable[[], None]) -> threading.Event:
    done = threading.Event()

    def handler(signum, frame):
        logging.getLogger("fedctl").info("signal %d: shutting down", signum)
        done.set()
        stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return done


def cmd_site_start(args: argparse.Namespace) -> int:
    from federation.spec import load_site
    from site_agent.process import run_site
    config = load_site(args.config)
    return run_site(config, local_ray=args.local_ray, on_stop=_wait_for_signal)


def cmd_server_start(args: argparse.Namespace) -> int:
    from federation.server import start_server
    from federation.spec import load_federation
    server = start_server(load_federation(args.config))
    done = _wait_for_signal(lambda: None)
    print(f"federation listening on port {server.port}", flush=True)
    done.wait()
    server.stop()
    return 0


# ------------------------------------------------------------------ misc


def cmd_ca_init(args: argparse.Namespace) -> int:
    from federation.pki import init_pki
    issued = init_pki(Path(args.dir), clients=tuple(args.client))
    if _json(args):
        render.emit_json({k: {"cert": str(v.cert), "key": str(v.key)} for k, v in issued.items()})
    else:
        for name, v in issued.items():
            print(f"{name}: {v.cert}")
    return 0


def cmd_schema_export(args: argparse.Namespace) -> int:
    from federation.spec.schema import export_schemas
    written = export_schemas(Path(args.dir))
    if _json(args):
        render.emit_json({"written": [str(p) for p in written]})
    else:
        for p in written:
            print(p)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from federation.control.rules import rules_from_policy
    from federation.simulate import engine, report, trace
    from federation.spec import load_policy

    rules = rules_from_policy(load_policy(args.policy))
    if args.site_config:
        w = trace.configured([Path(p) for p in args.site_config])
    else:
        w = trace.alibaba(Path(args.trace), args.pods, args.sites, args.seed)
    if args.jobs:
        w = trace.csv_jobs(Path(args.jobs), w)
    elif args.site_config:
        raise ConfigError("--site-config: give the jobs to replay with --jobs FILE.csv")
    missing = {c for _, (c, _) in w.datasets.items()} - set(rules.classifications)
    if missing:
        raise ConfigError(f"{args.policy}: no rule for classification(s) {', '.join(sorted(missing))}")
    if args.mode == "fairness":
        return _simulate_fairness(args, w, rules)
    modes = ["replay", "inflation"] if args.mode == "both" else [args.mode]
    if not w.timed:
        if args.mode == "replay":
            raise ConfigError(f"--mode replay: the {args.pods} task list has no arrival times; use inflation")
        modes = ["inflation"]
    strategies = args.strategy or ["topology", "blind", "round-robin"]
    outcomes = {m: [engine.run(w, rules, s, inflation=m == "inflation", speedup=args.speedup, seed=args.seed)
                    for s in strategies] for m in modes}
    results = {m: [report.summary(o) for o in runs] for m, runs in outcomes.items()}
    if args.plot:
        report.plot(outcomes, Path(args.plot))
    if _json(args):
        render.emit_json({"rules": w.rules, "jobs": len(w.jobs), "sites": [
            {"name": s.name, "jurisdiction": s.jurisdiction, "gpus": s.inventory.gpus} for s in w.sites],
            **{m: {"results": rows, "ratios": report.ratios(rows)} for m, rows in results.items()}})
        return 0
    print(f"{len(w.jobs)} jobs on " + ", ".join(f"{s.name} ({s.jurisdiction}, {s.inventory.gpus} GPUs)"
                                               for s in w.sites))
    print(f"rules: {w.rules}")
    for m, rows in results.items():
        print(f"\n{m}:")
        print(report.table(rows))
        for name, r in report.ratios(rows).items():
            print(f"  {name}: " + ", ".join(f"{k} x{v}" for k, v in r.items()))
    if args.plot:
        print(f"\nplot: {args.plot}")
    return 0


def _simulate_fairness(args: argparse.Namespace, w, rules) -> int:
    from dataclasses import replace

    from federation.simulate import fairness
    w = fairness.smaller(w, args.keep_every)
    gpus = sum(s.inventory.gpus for s in w.sites)
    jobs, speedup, load = fairness.compressed(fairness.skewed_tenants(w.jobs, args.seed, args.tenants), gpus,
                                              args.load)
    w = replace(w, jobs=tuple(sorted(jobs, key=lambda j: (j.arrival, j.id))))
    rows = [fairness.summary(fairness.run(w, rules, s, min_runtime=args.min_runtime))
            for s in args.strategy or fairness.STRATEGIES]
    setup = (f"{len(w.jobs)} jobs of {args.tenants} tenants (seed {args.seed}, tenant k drawn with weight 1/(k+1)) on "
             f"{gpus} GPUs (one GPU node in {args.keep_every} of each site); arrivals divided by {speedup:.3g} for a "
             f"peak load of {load:.2f}x (asked {args.load:g}x: GPUs asked at once over GPUs held); preemption after "
             f"{args.min_runtime:g}s of runtime")
    if _json(args):
        render.emit_json({"setup": setup, "rules": w.rules, "results": rows, "ratios": fairness.ratios(rows)})
        return 0
    print(setup)
    render.table(["STRATEGY", "JAIN(TIME)", "JAIN(ALL)", "DELAY-MEAN-S", "DELAY-P99-S", "PREEMPTIONS", "FINISHED",
                  "GPU-HOURS"],
                 [[r["strategy"], r["jain_over_time"], r["jain_gpu_share_vs_entitlement"], r["queue_delay_s"]["mean"],
                   r["queue_delay_s"]["p99"], r["preemptions"], r["finished"], r["gpu_hours"]] for r in rows])
    for name, r in fairness.ratios(rows).items():
        print(f"  {name}: " + ", ".join(f"{k} x{v}" for k, v in r.items()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from federation.demo import run_demo
    return run_demo(json_output=_json(args), keep=args.keep, examples=Path(args.examples) if args.examples else None)


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    # Defaults are suppressed so an option given before the command is not reset by the
    # subcommand's copy of the same option; _defaults fills them in after parsing.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--format", choices=["table", "json"], help="output format (default: table)")
    common.add_argument("--address", help="federation address (default: $FEDCTL_ADDRESS or 127.0.0.1:50051)")
    common.add_argument("--ca", help="CA certificate (default: $FEDCTL_CA or .fedctl/pki/ca.pem)")
    common.add_argument("--cert", help="client certificate")
    common.add_argument("--key", help="client key")
    common.add_argument("--insecure", action="store_true", help="plain-text gRPC (development only)")
    common.add_argument("-v", "--verbose", action="store_true")

    p = argparse.ArgumentParser(prog="fedctl", description="Run jobs across many Ray sites.", parents=[common])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(parent, name: str, fn: Callable, help: str) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help, parents=[common], description=help)
        sp.set_defaults(fn=fn)
        return sp

    sp = add(sub, "demo", cmd_demo, "embedded federation and three local Ray sites running the example jobs")
    sp.add_argument("--keep", action="store_true", help="keep the demo's directory (store, logs) afterwards")
    sp.add_argument("--examples", help="folder of job specs to submit (default: configs/examples)")

    sp = add(sub, "submit", cmd_submit, "submit a job or federated training spec; prints its id")
    sp.add_argument("file")
    sp.add_argument("--wait", action="store_true", help="wait for the job to end; exit 1 unless it succeeded")
    sp.add_argument("--timeout", type=float, default=None, help="seconds to wait with --wait")
    sp.add_argument("--queue", help="charge this queue (overrides spec.queue)")
    sp.add_argument("--request-id", help="make a retried submission return the first one's job, not a new one")
    for kind in ("after_ok", "after_any", "after_not_ok"):
        sp.add_argument(f"--{kind.replace('_', '-')}", dest=kind, action="append", metavar="ID",
                        help=f"add a job or array id to spec.dependencies.{kind} (repeatable)")

    training = add(sub, "training", None, "federated trainings: rounds across the sites holding a dataset")
    training_sub = training.add_subparsers(dest="action", required=True, metavar="ACTION")
    add(training_sub, "list", cmd_training, "every training you may see").add_argument("--tenant")
    add(training_sub, "show", cmd_training, "a training and its rounds").add_argument("id")
    add(training_sub, "cancel", cmd_training, "stop a training and its jobs").add_argument("id")
    sp = add(training_sub, "model", cmd_training, "save the current global model (.npz)")
    sp.add_argument("id")
    sp.add_argument("--out", required=True, help="file to write")

    sp = add(sub, "queue", cmd_queue, "pending jobs in scheduling order with their fair-share standing")
    sp.add_argument("--queue", help="only this queue")
    sp.add_argument("--tenant", help="only this tenant")
    sp.add_argument("--limit", type=int, default=100)

    sp = add(sub, "usage", cmd_usage, "resource use of attempts that ran, by tenant, queue, site or GPU model")
    sp.add_argument("--by", default="tenant", help="comma-separated: tenant, queue, site, gpu_model")
    sp.add_argument("--since", help="a duration ago (7d), an ISO date, or unix seconds; default: from the start")
    sp.add_argument("--until", help="as --since; default: now")
    sp.add_argument("--csv", metavar="FILE", help="write the rows as CSV to FILE (- for standard output)")

    sp = add(sub, "jobs", cmd_jobs, "list jobs, newest first")
    sp.add_argument("--tenant")
    sp.add_argument("--state", action="append", choices=["pending", "placed", "running", "succeeded", "failed",
                                                           "cancelled"])
    sp.add_argument("--limit", type=int, default=100)

    for name, fn, help in (("status", cmd_status, "a job's state and attempts"),
                           ("cancel", cmd_cancel, "cancel a job (stops its Ray job)"),
                           ("explain", cmd_explain, "why a job runs where it runs, or why it still waits")):
        add(sub, name, fn, help).add_argument("id")
    sp = add(sub, "logs", cmd_logs, "a job's logs")
    sp.add_argument("id")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")

    server = add(sub, "server", None, "the federation control plane")
    server_sub = server.add_subparsers(dest="action", required=True, metavar="ACTION")
    add(server_sub, "start", cmd_server_start, "run the federation").add_argument("--config", required=True)
    sp = add(server_sub, "drain", cmd_server_drain, "take no more submissions; queued and running work goes on")
    sp.add_argument("--wait", action="store_true", help="return once no job is pending or running")
    sp.add_argument("--timeout", type=float, default=3600.0)
    add(server_sub, "resume", cmd_server_drain, "take submissions again")

    site = add(sub, "site", None, "site agents and operator actions")
    site_sub = site.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = add(site_sub, "start", cmd_site_start, "run a site agent")
    sp.add_argument("--config", required=True)
    sp.add_argument("--local-ray", action="store_true", help="start a private Ray head for this site")
    add(site_sub, "list", cmd_site_list, "list sites")
    sp = add(site_sub, "inventory", cmd_site_inventory, "the GPU inventory a site agent would publish")
    target = sp.add_mutually_exclusive_group(required=True)
    target.add_argument("--config", help="a Site YAML: its declared gpu_nodes, else this machine's NVML view")
    target.add_argument("--record", metavar="FILE", help="write this machine's raw NVML topology to FILE")
    add(site_sub, "revoke", cmd_revoke, "refuse the site's certificates from now on (open streams too)"
        ).add_argument("name")
    token = add(site_sub, "token", None, "one-time join tokens")
    token_sub = token.add_subparsers(dest="token_action", required=True, metavar="ACTION")
    sp = add(token_sub, "create", cmd_site_token, "a token a site enrols with once; its attributes are bound")
    sp.add_argument("name")
    sp.add_argument("--jurisdiction", required=True, help="ISO code the site will be bound to, e.g. DE")
    sp.add_argument("--region", required=True)
    sp.add_argument("--label", action="append", help="key=value bound to the site (repeatable)")
    sp.add_argument("--ttl", default="1h", help="how long the token is valid (default 1h)")
    sp = add(site_sub, "join", cmd_site_join, "enrol this site with a join token: key here, certificate back")
    sp.add_argument("--token", required=True)
    sp.add_argument("--enrol-address", required=True, help="the federation's enrolment listener, host:port")
    sp.add_argument("--dir", default=".fedctl/site", help="where the key and certificate go")
    for action, help in (("show", "one site"), ("cordon", "no new work"), ("uncordon", "accept work again"),
                         ("drain", "no new work; running work finishes")):
        fn = cmd_site_show if action == "show" else _site_state(action)
        sp = add(site_sub, action, fn, help)
        sp.add_argument("name")
        if action == "drain":
            sp.add_argument("--handover", action="store_true",
                            help="stop its running work now and place it elsewhere, instead of letting it finish")

    ca = add(sub, "ca", None, "certificates for mutual TLS")
    ca_sub = ca.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = add(ca_sub, "init", cmd_ca_init, "create a CA, a server certificate and client certificates")
    sp.add_argument("--dir", default=".fedctl/pki")
    sp.add_argument("--client", action="append", default=None, help="client certificate name (repeatable)")

    user = add(sub, "user", None, "users: client certificates carrying a role and its tenants or sites")
    user_sub = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    add(user_sub, "revoke", cmd_revoke, "refuse the user's certificates from now on").add_argument("name")
    sp = add(user_sub, "add", cmd_user_add, "issue a user's certificate with the federation's CA")
    sp.add_argument("name")
    sp.add_argument("--role", required=True,
                    choices=["submitter", "tenant-admin", "site-operator", "federation-admin"])
    sp.add_argument("--tenant", action="append", help="a tenant the user works for (repeatable)")
    sp.add_argument("--site", action="append", help="a site the operator runs (repeatable)")
    sp.add_argument("--dir", default=".fedctl/pki", help="the CA's folder")
    sp.add_argument("--days", type=int, default=30, help="validity")

    audit = add(sub, "audit", None, "the federation's hash-chained, signed audit log")
    audit_sub = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = add(audit_sub, "verify", cmd_audit_verify, "check every record's hash, order and signature")
    sp.add_argument("--store", required=True, help="the federation's SQLite file")
    sp.add_argument("--public", help="the audit public key (default: beside the store)")
    sp = add(audit_sub, "show", cmd_audit_show, "records, oldest first, filtered")
    sp.add_argument("--store", required=True, help="the federation's SQLite file")
    sp.add_argument("--action", help="e.g. job.submit, job.place, job.cancel, job.preempt, site.register, call.denied")
    sp.add_argument("--subject", help="a job id or site name")
    sp.add_argument("--actor", help="a certificate name, or scheduler")
    sp.add_argument("--limit", type=int, default=100, help="the last this many")

    schema = add(sub, "schema", None, "JSON Schemas of the spec files")
    schema_sub = schema.add_subparsers(dest="action", required=True, metavar="ACTION")
    add(schema_sub, "export", cmd_schema_export, "write the JSON Schemas").add_argument(
        "--dir", default="configs/schemas")
    sp = add(sub, "simulate", cmd_simulate, "replay a trace through the placement code in simulated time")
    sp.add_argument("--trace", default=os.environ.get("FEDCTL_TRACE", "../shared/traces/alibaba-gpu-v2023"),
                    help="folder with the Alibaba 2023 GPU trace's csv files")
    sp.add_argument("--pods", default="default", choices=["default", "gpuspec33", "multigpu50"],
                    help="which of the trace's task lists")
    sp.add_argument("--sites", type=int, default=4, help="split the trace's nodes into this many sites (1-4)")
    sp.add_argument("--site-config", action="append", help="a Site YAML with gpu_nodes (repeatable); needs --jobs")
    sp.add_argument("--jobs", help="a CSV of jobs: id,arrival_s,duration_s,cpus,gpus,gpu_type,nvlink,dataset,tenant")
    sp.add_argument("--policy", default="configs/policy.yaml")
    sp.add_argument("--mode", choices=["replay", "inflation", "both", "fairness"], default="both",
                    help="replay: trace times; inflation: draw jobs until GPUs asked = GPUs (FGD's method); "
                         "fairness: tenants on a contended federation, against per-site scheduling")
    sp.add_argument("--speedup", type=float, default=1.0, help="divide arrival times by this (more load)")
    sp.add_argument("--strategy", action="append",
                    choices=["topology", "blind", "round-robin", "federated", "fair-per-site", "fifo-per-site"])
    sp.add_argument("--tenants", type=int, default=8, help="fairness: tenants to draw")
    sp.add_argument("--load", type=float, default=2.0, help="fairness: most GPUs asked at once over GPUs held")
    sp.add_argument("--keep-every", type=int, default=4, help="fairness: keep one GPU node in this many")
    sp.add_argument("--min-runtime", type=float, default=600.0, help="fairness: seconds before work may be preempted")
    sp.add_argument("--seed", type=int, default=7)
    sp.add_argument("--plot", help="write a PNG here")
    return p


_DEFAULTS = {"format": "table", "address": None, "ca": None, "cert": None, "key": None, "insecure": False,
             "verbose": False}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, default in _DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    if getattr(args, "client", "unset") is None:
        args.client = ["admin"]
    daemon = getattr(args, "action", None) == "start"
    level = logging.DEBUG if args.verbose else (logging.INFO if daemon else logging.WARNING)
    logging.basicConfig(level=level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.fn(args)
    except FederationError as e:
        return _fail(args, e.code, e.message, e.exit_status)
    except KeyboardInterrupt:
        return 130


def _fail(args: argparse.Namespace, code: ErrorCode, message: str, status: int) -> int:
    if _json(args):
        render.emit_json({"error": {"code": code.value, "message": message}})
    else:
        sys.stderr.write(f"error[{code.value}]: {message}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
