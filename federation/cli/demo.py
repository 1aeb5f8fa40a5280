"""`fedctl demo`: an embedded federation and three local Ray sites running the example jobs."""
from __future__ import annotations

import argparse
from pathlib import Path

from federation.cli.common import AddCommand, Subcommands, wants_json


def cmd_demo(args: argparse.Namespace) -> int:
    from federation.demo import run_demo
    return run_demo(json_output=wants_json(args), keep=args.keep,
                    examples=Path(args.examples) if args.examples else None)


def register(sub: Subcommands, add: AddCommand) -> None:
    sp = add(sub, "demo", cmd_demo, "embedded federation and three local Ray sites running the example jobs")
    sp.add_argument("--keep", action="store_true", help="keep the demo's directory (store, logs) afterwards")
    sp.add_argument("--examples", help="folder of job specs to submit (default: configs/examples)")
