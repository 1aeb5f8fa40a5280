"""Many sites' agents played over the wire from one process: each site its own gRPC channel with
its own client certificate (mutual TLS), its own registration, heartbeats at the interval the
federation gives it, and a Connect stream on which it reports each assignment running and then
succeeded at once. One asyncio loop (grpc.aio) plays them all, so a thousand sites cost a
thousand connections and streams, not a thousand threads.

    python -m bench.agents SETTINGS.json     (started by bench.sites, one process per share of sites)

SETTINGS: address, ca, pki (the folder of <site>.pem / <site>.key), sites, ramp (sites started a
second), out (where the results go). It prints a status line (JSON) every half second, and on
`stop` on its standard input writes its results to `out` and exits.
"""
from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from federation.transport import OPTIONS
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc

RPC_TIMEOUT_S = 10.0
REGISTER_TIMEOUT_S = 60.0


@dataclass
class Tally:
    registered: int = 0
    connected: int = 0                                   # streams that got their first response
    open: int = 0                                        # streams open now
    errors: Counter = field(default_factory=Counter)     # "register DEADLINE_EXCEEDED": n
    heartbeats: list[float] = field(default_factory=list)   # round trips, seconds
    assigned: dict[str, float] = field(default_factory=dict)  # job id -> when first assigned (monotonic)
    reported: int = 0

    def error(self, what: str, e: BaseException) -> None:
        code = e.code().name if isinstance(e, grpc.aio.AioRpcError) else type(e).__name__
        self.errors[f"{what} {code}"] += 1

    def status(self) -> dict[str, Any]:
        return {"registered": self.registered, "connected": self.connected, "open": self.open,
                "assigned": len(self.assigned), "errors": sum(self.errors.values())}


async def play(name: str, settings: dict, tally: Tally) -> None:
    pki = Path(settings["pki"])
    creds = grpc.ssl_channel_credentials(root_certificates=Path(settings["ca"]).read_bytes(),
                                         private_key=(pki / f"{name}.key").read_bytes(),
                                         certificate_chain=(pki / f"{name}.pem").read_bytes())
    async with grpc.aio.secure_channel(settings["address"], creds, options=OPTIONS) as channel:
        stub = pb_grpc.SiteServiceStub(channel)
        try:
            registered = await stub.RegisterSite(pb.RegisterSiteRequest(
                name=name, location=pb.Location(jurisdiction="DE", region=name),
                capacity=pb.Resources(cpus=1e6, memory_bytes=2**50)), timeout=REGISTER_TIMEOUT_S)
        except grpc.aio.AioRpcError as e:
            tally.error("register", e)
            return
        tally.registered += 1
        beating = asyncio.create_task(heartbeat(stub, name, registered.heartbeat_interval_s or 2.0, tally))
        try:
            await connect(stub, name, tally)
        finally:
            beating.cancel()


async def heartbeat(stub: pb_grpc.SiteServiceStub, name: str, interval: float, tally: Tally) -> None:
    await asyncio.sleep(random.uniform(0, interval))   # sites that start together do not beat together
    while True:
        started = time.monotonic()
        try:
            await stub.Heartbeat(pb.HeartbeatRequest(name=name), timeout=RPC_TIMEOUT_S)
            tally.heartbeats.append(time.monotonic() - started)
        except grpc.aio.AioRpcError as e:
            tally.error("heartbeat", e)
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


async def connect(stub: pb_grpc.SiteServiceStub, name: str, tally: Tally) -> None:
    call = stub.Connect()
    ended: set[str] = set()
    first = True
    tally.open += 1
    try:
        await call.write(pb.ConnectRequest(site=name))
        while (response := await call.read()) is not grpc.aio.EOF:
            now = time.monotonic()
            if first:
                tally.connected, first = tally.connected + 1, False
            new = [a for a in response.assignments if a.submission_id not in ended]
            for a in new:
                tally.assigned.setdefault(a.job_id, now)
                ended.add(a.submission_id)
            for state in (pb.ATTEMPT_STATE_RUNNING, pb.ATTEMPT_STATE_SUCCEEDED):
                if new:
                    await call.write(pb.ConnectRequest(site=name, statuses=[
                        pb.AttemptStatus(job_id=a.job_id, attempt=a.attempt, state=state) for a in new]))
            tally.reported += len(new)
        tally.errors["connect ended by the federation"] += 1
    except grpc.aio.AioRpcError as e:
        tally.error("connect", e)
    finally:
        tally.open -= 1


async def run(settings: dict) -> Tally:
    tally = Tally()
    sites: list[asyncio.Task] = []
    stop = asyncio.Event()
    asyncio.get_running_loop().add_reader(sys.stdin.fileno(), stop.set)   # `stop`, or the driver gone

    async def report() -> None:
        while not stop.is_set():
            print(json.dumps(tally.status()), flush=True)
            await asyncio.sleep(0.5)

    reporter = asyncio.create_task(report())
    for name in settings["sites"]:
        if stop.is_set():
            break
        sites.append(asyncio.create_task(play(name, settings, tally)))
        await asyncio.sleep(1.0 / settings["ramp"])
    await stop.wait()
    for task in [*sites, reporter]:
        task.cancel()
    await asyncio.gather(*sites, reporter, return_exceptions=True)
    return tally


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the driver, which stops this in order
    settings = json.loads(Path(sys.argv[1]).read_text())
    tally = asyncio.run(run(settings))
    Path(settings["out"]).write_text(json.dumps({
        "registered": tally.registered, "connected": tally.connected, "errors": dict(tally.errors),
        "heartbeats": tally.heartbeats, "assigned": tally.assigned, "reported": tally.reported}))


if __name__ == "__main__":
    main()
