"""fedctl: one command-line program for users and operators.

Every command takes `--format json`. Errors print one line, `error[CODE]: message`
(or a JSON object with --format json), and exit with the code's status.
"""
from __future__ import annotations

import argparse
import logging
import sys

from federation.cli import admin, demo, jobs, render, server, simulate, sites, submit, training
from federation.cli.common import command_adder, wants_json
from federation.errors import ErrorCode, FederationError

# In this order in `fedctl --help`.
COMMAND_GROUPS = (demo, submit, training, jobs, server, sites, admin, simulate)


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
    add = command_adder(common)
    for group in COMMAND_GROUPS:
        group.register(sub, add)
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
    with render.escaped_output():
        try:
            return args.fn(args)
        except FederationError as e:
            return _fail(args, e.code, e.message, e.exit_status)
        except KeyboardInterrupt:
            return 130


def _fail(args: argparse.Namespace, code: ErrorCode, message: str, status: int) -> int:
    if wants_json(args):
        render.emit_json({"error": {"code": code.value, "message": message}})
    else:
        sys.stderr.write(f"error[{code.value}]: {message}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
