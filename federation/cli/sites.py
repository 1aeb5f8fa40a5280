"""`fedctl site`: run a site agent, enrol it, list and show sites, cordon, drain, its GPU inventory, and
the logs it keeps of jobs whose data's rules keep them there."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from federation.cli import render
from federation.cli.admin import cmd_revoke
from federation.cli.common import AddCommand, Handler, Subcommands, connect, wait_for_signal, wants_json
from federation.errors import ConfigError, NotFound


def _site_row(s: Any) -> list[Any]:
    cap, alloc = s.capacity, s.allocated
    return [s.name, s.jurisdiction, s.region, s.state, "yes" if s.connected else "no",
            f"{alloc['cpus']:g}/{cap['cpus']:g}", f"{render.gib(alloc['memory'])}/{render.gib(cap['memory'])}",
            f"{alloc['gpus']:g}/{cap['gpus']:g}", s.running_attempts,
            ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) or "-"]


SITE_HEADERS = ["NAME", "JURIS", "REGION", "STATE", "CONNECTED", "CPUS", "MEMORY", "GPUS", "ATTEMPTS", "LABELS"]


def cmd_site_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        sites = client.sites()
    if wants_json(args):
        render.emit_json({"sites": [s.to_dict() for s in sites]})
    else:
        render.table(SITE_HEADERS, [_site_row(s) for s in sites])
    return 0


def cmd_site_show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        s = client.site(args.name)
    if wants_json(args):
        render.emit_json(s.to_dict())
        return 0
    render.table(SITE_HEADERS, [_site_row(s)])
    for d in s.datasets:
        print(f"  dataset {d['name']} ({d['classification']})")
    p = s.pricing
    if p:
        gpus = "".join(f", {m} {v:g}" for m, v in sorted(p["gpu_hour"].items()))
        spot = f"; spot cpu {p['spot']['cpu_hour']:g}" if p["spot"] else ""
        print(f"  prices per hour ({p['currency']}): cpu {p['cpu_hour']:g}, memory GiB {p['memory_gib_hour']:g}"
              f"{gpus}{spot}; egress per GB {p['egress_gb']:g}")
    if s.node_types:
        print(f"  elastic: idle nodes go after {s.idle_timeout_s:g}s")
        render.table(["  NODE TYPE", "SHAPE", "MARKET", "UP", "MIN-MAX", "START", "PER HOUR"], [
            [f"  {t['name']}", f"{t['cpus']:g} cpus, {render.gib(t['memory'])}"
             + (f", {t['gpus']} {t['gpu_model']}" if t["gpus"] else ""), "spot" if t["spot"] else "on-demand",
             t["up"], f"{t['min']}-{t['max']}", f"{t['start_s']:g}s", f"{t['price_hour']:.4g} {p.get('currency', '')}"]
            for t in s.node_types])
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
    rows: list[dict[str, Any]] = [{"name": n.name, "model": n.model, "gpus": n.gpus, "memory": n.memory,
             "nvlink_domains": sorted({d for d in n.domains if d}), "rack": n.rack, "block": n.block} for n in nodes]
    if wants_json(args):
        render.emit_json({"nodes": rows})
        return 0
    render.table(["NODE", "MODEL", "GPUS", "MEMORY", "NVLINK", "RACK", "BLOCK"],
                 [[r["name"], r["model"], r["gpus"], render.gib(r["memory"]), ",".join(r["nvlink_domains"]) or "-",
                   r["rack"] or "-", r["block"] or "-"] for r in rows])
    return 0


def cmd_site_logs(args: argparse.Namespace) -> int:
    """The logs a site keeps of a job whose data's rules do not let them cross, read at the site."""
    from federation.spec import load_site
    from site_agent.files import AttemptFiles
    config = load_site(args.config)
    files = AttemptFiles.of(config)
    kept = files.kept_logs(args.id)
    if not kept:
        raise NotFound(f"site {config.metadata.name} keeps no logs of job {args.id} (in {files.logs_dir}); "
                       f"logs that may cross are read with: fedctl logs {args.id}")
    if wants_json(args):
        render.emit_json({"id": args.id, "site": config.metadata.name, "attempts": [
            {"attempt": n, "path": str(p), "logs": p.read_bytes().decode("utf-8", "replace")} for n, p in kept]})
        return 0
    for n, path in kept:
        if len(kept) > 1:
            print(f"==> attempt {n} ({path}) <==", flush=True)
        sys.stdout.write(path.read_bytes().decode("utf-8", "replace"))
    return 0


def _site_state(action: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        with connect(args) as client:
            s = client.drain(args.name, args.handover) if action == "drain" else getattr(client, action)(args.name)
        if wants_json(args):
            render.emit_json(s.to_dict())
        else:
            print(f"{s.name} {s.state}")
        return 0
    return run


def cmd_site_start(args: argparse.Namespace) -> int:
    from federation.spec import load_site
    from site_agent.process import run_site
    config = load_site(args.config)
    return run_site(config, local_ray=args.local_ray, on_stop=wait_for_signal)


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
    with connect(args) as client:
        token, expires = client.create_join_token(args.name, args.jurisdiction, args.region, labels, ttl)
    if wants_json(args):
        render.emit_json({"name": args.name, "token": token, "expires_at": expires})
    else:
        print(token)
    return 0


def cmd_site_join(args: argparse.Namespace) -> int:
    from federation.enrolment import join
    if not args.ca:
        raise ConfigError("--ca: the federation's CA certificate is needed to check who answers")
    cert = join(args.enrol_address, Path(args.ca), args.token, Path(args.dir))
    if wants_json(args):
        render.emit_json({"cert": str(cert), "key": str(Path(args.dir) / "site.key"),
                          "ca": str(Path(args.dir) / "ca.pem")})
    else:
        print(f"enrolled: {cert} (key {Path(args.dir) / 'site.key'}); point spec.federation.tls at them")
    return 0


def register(sub: Subcommands, add: AddCommand) -> None:
    site = add(sub, "site", None, "site agents and operator actions")
    site_sub = site.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = add(site_sub, "start", cmd_site_start, "run a site agent")
    sp.add_argument("--config", required=True)
    sp.add_argument("--local-ray", action="store_true", help="start a private Ray head for this site")
    add(site_sub, "list", cmd_site_list, "list sites")
    sp = add(site_sub, "logs", cmd_site_logs, "a job's logs kept at this site (its data's rules keep them here)")
    sp.add_argument("id")
    sp.add_argument("--config", required=True, help="this site's config (its work_dir holds the kept logs)")
    sp = add(site_sub, "inventory", cmd_site_inventory, "the GPU inventory a site agent would publish")
    target = sp.add_mutually_exclusive_group(required=True)
    target.add_argument("--config", help="a Site YAML: its declared gpu_nodes, else this machine's NVML view")
    target.add_argument("--record", metavar="FILE", help="write this machine's raw NVML topology to FILE")
    add(site_sub, "revoke", cmd_revoke, "refuse every certificate issued for the site until now (open streams too)"
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
