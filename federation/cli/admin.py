"""fedctl commands for the federation's administrator: the CA, users, revocation, the audit log, schemas."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from federation.cli import render
from federation.cli.common import EXIT_CHECK_FAILED, AddCommand, Subcommands, connect, wants_json
from federation.errors import ConfigError


def cmd_ca_init(args: argparse.Namespace) -> int:
    from federation.pki import init_pki
    from federation.spec import load_site
    configs = [load_site(path) for path in args.site or ()]
    sites = {c.metadata.name: c.spec.model_dump(mode="json") for c in configs}
    issued = init_pki(Path(args.dir), clients=tuple(args.client or ("admin",)), sites=sites)
    if wants_json(args):
        render.emit_json({k: {"cert": str(v.cert), "key": str(v.key)} for k, v in issued.items()})
    else:
        for name, v in issued.items():
            print(f"{name}: {v.cert}")
    return 0


def cmd_schema_export(args: argparse.Namespace) -> int:
    from federation.http.openapi import document
    from federation.spec.schema import export_schemas
    written = export_schemas(Path(args.dir))
    openapi = Path(args.dir) / "openapi.json"   # the HTTP API's, generated from its routes and types
    openapi.write_text(json.dumps(document(), indent=2, sort_keys=True) + "\n")
    written.append(openapi)
    if wants_json(args):
        render.emit_json({"written": [str(p) for p in written]})
    else:
        for p in written:
            print(p)
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    from federation.identity import TENANT_ROLES, scopes
    from federation.pki import Issued, issue
    from federation.spec.common import NAME_RE
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
    if wants_json(args):
        render.emit_json({"name": args.name, "role": args.role, "cert": str(issued.cert), "key": str(issued.key)})
    else:
        print(f"{args.name} ({args.role}): {issued.cert}, {issued.key}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with connect(args) as client:
        n = client.revoke(args.name)
    if wants_json(args):
        render.emit_json({"name": args.name, "revoked": n})
    else:
        print(f"{args.name}: every certificate issued until now refused ({n} seen)")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from federation import audit
    public = Path(args.public) if args.public else audit.public_path(Path(args.store))
    if not public.exists():
        raise ConfigError(f"{public}: no audit public key (give --public)")
    anchors = [(path, audit.load_anchor(Path(path))) for path in args.anchor or ()]
    records = audit.read(Path(args.store))
    n, head, problem = audit.verify(records, audit.load_public(public))
    for path, anchor in anchors:
        problem = problem or audit.check_anchor(records, anchor, f"anchor {path}")
    if wants_json(args):
        render.emit_json({"ok": not problem, "records": n, "head": head, "problem": problem or None,
                          "anchors": [{"path": path, "seq": a.seq, "hash": a.hash} for path, a in anchors]})
    elif problem:
        sys.stderr.write(f"audit log {args.store}: {problem}\n")
    else:
        held = f"; agrees with {len(anchors)} anchor{'s' if len(anchors) != 1 else ''}" if anchors else ""
        print(f"audit log {args.store}: {n} records, chain and signatures intact; head {head}{held}")
    return EXIT_CHECK_FAILED if problem else 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    from federation import audit
    records = audit.read(Path(args.store), args.action or "", args.subject or "", args.actor or "")[-args.limit:]
    if wants_json(args):
        render.emit_json({"records": [r.to_dict() for r in records]})
        return 0
    render.table(["SEQ", "TIME", "ACTOR", "ACTION", "SUBJECT", "DETAIL"],
                 [[r.seq, render.when(r.at), r.actor, r.action, r.subject,
                   ", ".join(f"{k}={v}" for k, v in sorted(r.detail.items()))[:120]] for r in records])
    return 0


def register(sub: Subcommands, add: AddCommand) -> None:
    ca = add(sub, "ca", None, "certificates for mutual TLS")
    ca_sub = ca.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = add(ca_sub, "init", cmd_ca_init, "create a CA, a server certificate and client certificates")
    sp.add_argument("--dir", default=".fedctl/pki")
    sp.add_argument("--client", action="append", default=None,
                    help="client certificate name (repeatable): admin is a federation admin, any other a site whose "
                         "attributes only the policy's site catalog binds")
    sp.add_argument("--site", action="append", metavar="CONFIG",
                    help="a site config (repeatable): its certificate binds the site's location and labels")

    user = add(sub, "user", None, "users: client certificates carrying a role and its tenants or sites")
    user_sub = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    add(user_sub, "revoke", cmd_revoke, "refuse every certificate issued for the user until now"
        ).add_argument("name")
    sp = add(user_sub, "add", cmd_user_add, "issue a user's certificate with the federation's CA")
    sp.add_argument("name")
    sp.add_argument("--role", required=True,
                    choices=["submitter", "tenant-admin", "site-operator", "federation-admin", "monitor"])
    sp.add_argument("--tenant", action="append", help="a tenant the user works for (repeatable)")
    sp.add_argument("--site", action="append", help="a site the operator runs (repeatable)")
    sp.add_argument("--dir", default=".fedctl/pki", help="the CA's folder")
    sp.add_argument("--days", type=int, default=30, help="validity")

    audit = add(sub, "audit", None, "the federation's hash-chained, signed audit log")
    audit_sub = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = add(audit_sub, "verify", cmd_audit_verify, "check every record's hash, order and signature")
    sp.add_argument("--store", required=True, help="the federation's SQLite file")
    sp.add_argument("--public", help="the audit public key (default: beside the store, where whoever can rewrite the "
                                     "store can replace it: give a copy kept apart)")
    sp.add_argument("--anchor", action="append", metavar="FILE",
                    help="a head a site agent kept (<work_dir>/.fedctl-io/<site>.audit-head.json): the log must hold "
                         "that record with that hash, so a truncated, emptied or re-signed log fails (repeatable)")
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
