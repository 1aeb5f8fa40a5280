"""`fedctl server`: run the federation, drain it and resume it."""
from __future__ import annotations

import argparse
import time

from federation.cli import render
from federation.cli.common import AddCommand, Subcommands, connect, wait_for_signal, wants_json
from federation.errors import Timeout


def cmd_server_start(args: argparse.Namespace) -> int:
    from federation.server import start_server
    from federation.spec import load_federation
    config = load_federation(args.config)
    if args.advertise:   # one config for every replica; each says where it is reached
        body = config.spec
        config = config.model_copy(update={"spec": body.model_copy(update={
            "replication": body.replication.model_copy(update={"advertise": args.advertise})})})
    server = start_server(config)
    done = wait_for_signal(lambda: None)
    print(f"federation listening on port {server.port}", flush=True)
    done.wait()
    server.stop()
    return 0


def cmd_server_drain(args: argparse.Namespace) -> int:
    drain = args.action == "drain"
    deadline = time.monotonic() + (args.timeout if drain else 0)
    with connect(args) as client:
        draining, pending, live = client.drain_federation(drain)
        while drain and args.wait and (pending or live):
            if time.monotonic() > deadline:
                raise Timeout(f"--timeout: {pending} jobs pending and {live} attempts live after {args.timeout:g}s")
            time.sleep(1.0)
            draining, pending, live = client.drain_federation(True)
    if wants_json(args):
        render.emit_json({"draining": draining, "pending": pending, "live": live})
    else:
        print(f"federation {'draining' if draining else 'taking submissions'}: {pending} jobs pending, "
              f"{live} attempts placed or running")
    return 0


def register(sub: Subcommands, add: AddCommand) -> None:
    server = add(sub, "server", None, "the federation control plane")
    server_sub = server.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = add(server_sub, "start", cmd_server_start, "run the federation")
    sp.add_argument("--config", required=True)
    sp.add_argument("--advertise", metavar="HOST:PORT",
                    help="where sites and users reach this replica (spec.replication.advertise)")
    sp = add(server_sub, "drain", cmd_server_drain, "take no more submissions; queued and running work goes on")
    sp.add_argument("--wait", action="store_true", help="return once no job is pending or running")
    sp.add_argument("--timeout", type=float, default=3600.0)
    add(server_sub, "resume", cmd_server_drain, "take submissions again")
