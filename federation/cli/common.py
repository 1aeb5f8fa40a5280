"""What every fedctl command shares: the connection, the output format, exit codes, how a command is added."""
from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

if TYPE_CHECKING:
    from federation.client import Client

EXIT_JOB_DID_NOT_SUCCEED = 1
EXIT_CHECK_FAILED = 1

Handler: TypeAlias = Callable[[argparse.Namespace], int]
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class AddCommand(Protocol):
    """Adds a subcommand that takes the common options and runs `fn` (None: it only holds subcommands)."""

    def __call__(self, parent: Subcommands, name: str, fn: Handler | None, help: str) -> argparse.ArgumentParser:
        ...


def command_adder(common: argparse.ArgumentParser) -> AddCommand:
    def add(parent: Subcommands, name: str, fn: Handler | None, help: str) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help, parents=[common], description=help)
        sp.set_defaults(fn=fn)
        return sp
    return add


def connect(args: argparse.Namespace) -> Client:
    from federation.client import Client
    return Client.from_env(address=args.address, ca=args.ca, cert=args.cert, key=args.key,
                           insecure=True if args.insecure else None)


def wants_json(args: argparse.Namespace) -> bool:
    return args.format == "json"


def wait_for_signal(stop: Callable[[], None]) -> threading.Event:
    """An event set (after calling `stop`) on SIGINT or SIGTERM."""
    done = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        logging.getLogger("fedctl").info("signal %d: shutting down", signum)
        done.set()
        stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return done
