"""Replicas of one federation over one store: which one leads, and what the others answer.

One replica leads while its lease on the store's leadership record lasts: it schedules, and every
write it makes is fenced to its term (`Store.fence`), so a deposed leader writes nothing. The
others try to take the lease as it lapses and meanwhile answer only `SiteService.Leader`; a
witness never leads. Sites ask `Leader` when they cannot reach the leader, to tell an outage of
the federation, when nobody can re-place their work and they keep it running, from their own
partition, when they must fence it.

A leader counts sites' leases from the start of its term (`Core.begin_term`), never from
before: a site could not renew while nobody led.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from federation.control import ControlPlane
from federation.errors import ErrorCode, FederationError
from federation.service.errors import CODE_KEY
from federation.service.loop import Pool
from federation.store import Leadership

log = logging.getLogger("federation.replication")

ALWAYS_SERVED = frozenset({"/federation.v1.SiteService/Leader"})


def lease_for(site_timeout_s: float) -> float:
    """The leadership lease: short beside the sites' lease, so that a site that asks when its
    own lease is two thirds gone hears that a dead leader no longer leads; and a few seconds at
    most, since a replica takes over once it lapses."""
    return min(4.0, site_timeout_s / 4)


class Elector:
    """Takes and renews the lease every third of it, judged by the store's clock (`Store.clock`):
    no replica's wall clock decides who leads.

    `leading` from taking a term until another replica is seen to hold one. A lease that lapses
    under load (this thread starved of the interpreter) deposes nobody by itself: the store
    refuses this replica's writes until it takes a new term (`Store.fence`), while its sites'
    streams and reads go on, rather than every site reconnecting at once to an overloaded leader."""

    def __init__(self, control: ControlPlane, name: str, address: str, lease_s: float) -> None:
        self.control = control
        self.holder = f"{name}/{uuid.uuid4().hex[:8]}"   # a restarted replica is a new holder: a new term
        self.address = address
        self.lease_s = lease_s
        self.term: int | None = None
        self.last: Leadership | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="elector", daemon=True)

    @property
    def leading(self) -> bool:
        return self.term is not None

    def start(self) -> None:
        self.step()
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing, and hand a lease held back by renewing it to end now."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self.term is not None:
            self.term = None
            try:
                store = self.control.store
                store.acquire_leadership(self.holder, self.address, store.clock(), 0.0)
            except Exception as e:
                log.warning("leadership: could not hand the lease back (it lapses by itself): %s", e)

    def step(self) -> None:
        store = self.control.store
        try:
            lead = store.acquire_leadership(self.holder, self.address, store.clock(), self.lease_s)
        except Exception as e:  # the store unreachable: lead no longer than the lease already held
            log.warning("leadership: cannot reach the store: %s", e)
            return
        self.last = lead
        if lead.holder != self.holder:
            if self.term is not None:
                log.warning("stepped down: %s leads in term %d", lead.holder, lead.term)
            self.term = None
            store.fence(0)
            return
        if lead.term != self.term:
            self.control.begin_term()
            store.fence(lead.term)
            self.term = lead.term
            log.info("leading the federation (term %d, from %s)", lead.term, self.address)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            self.step()


class Gate(grpc.aio.ServerInterceptor):
    """A replica that does not lead answers only `Leader`; every other call is UNAVAILABLE, naming
    the leader when there is one, so clients with several addresses go there."""

    def __init__(self, leading: Callable[[], bool], refusal: Callable[[], str], pool: Pool) -> None:
        self.leading = leading
        self.refusal = refusal
        self.pool = pool   # the refusal reads the store: never on the event loop

    async def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or details.method in ALWAYS_SERVED or self.leading():
            return handler

        async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
            message = await self.pool.run(self.refusal)
            context.set_trailing_metadata(((CODE_KEY, ErrorCode.UNAVAILABLE.value),))
            await context.abort(grpc.StatusCode.UNAVAILABLE, message)

        kind = {(False, False): grpc.unary_unary_rpc_method_handler,
                (False, True): grpc.unary_stream_rpc_method_handler,
                (True, False): grpc.stream_unary_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler}[
            (handler.request_streaming, handler.response_streaming)]
        return kind(refuse, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)


class Refusal:
    """Why this replica does not serve a call, and where to go instead; read from the store at
    most once a second, however many calls are refused."""

    def __init__(self, control: ControlPlane, witness: bool) -> None:
        self.control, self.witness = control, witness
        self._message, self._at = "", -1.0

    def __call__(self) -> str:
        if time.monotonic() - self._at >= 1.0:
            self._message, self._at = self._read(), time.monotonic()
        return self._message

    def _read(self) -> str:
        store = self.control.store
        try:
            lead = store.leadership()
            if lead is not None and lead.live(store.clock()):
                return f"not the leader: the federation is led from {lead.address}"
        except FederationError as e:
            return f"this replica cannot read the store: {e.message}"
        what = "a witness" if self.witness else "a replica waiting to lead"
        return f"no replica leads the federation now ({what} answered); retry shortly"
