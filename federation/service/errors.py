"""The one translator between typed errors and gRPC status codes."""
from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import TypeVar, cast

import grpc

from federation.errors import ErrorCode, FederationError, from_code
from federation.identity import auth_properties

log = logging.getLogger("federation.service")

TO_GRPC: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_SPEC: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNKNOWN_DATASET: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNSATISFIABLE: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.CONFIG: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.INVALID_TRANSITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.RAY: grpc.StatusCode.INTERNAL,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}
CODE_KEY = "federation-error-code"

F = TypeVar("F", bound=Callable)


def caller(context: grpc.ServicerContext) -> str:
    """The name on the caller's client certificate; 'anonymous' on a plain-text development channel."""
    names = auth_properties(context).get("x509_common_name", [])
    return names[0].decode() if names else "anonymous"


def denied(self, context: grpc.ServicerContext, method: str, e: FederationError) -> None:
    """Refused calls go to the audit log, counted with their like (`federation.control.refusals`)."""
    if e.code is ErrorCode.PERMISSION_DENIED:
        self.control.refuse(caller(context), "call.denied", method, f"{method}: permission denied", reason=e.message)


def _observe(self, method: str, started: float, code: grpc.StatusCode) -> None:
    self.control.core.metrics.rpc_seconds.labels(method, code.name).observe(time.perf_counter() - started)


def translate(method: F) -> F:
    """Servicer decorator: FederationError -> status with the code in trailing metadata."""

    @functools.wraps(method)
    def unary(self, request, context: grpc.ServicerContext):
        started, code = time.perf_counter(), grpc.StatusCode.INTERNAL
        try:
            response = method(self, request, context)
            code = grpc.StatusCode.OK
            return response
        except FederationError as e:
            code = TO_GRPC[e.code]
            denied(self, context, method.__name__, e)
            _abort(context, e)
        except Exception:
            log.exception("unexpected error in %s", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the federation log")
        finally:
            _observe(self, method.__name__, started, code)

    return unary  # type: ignore[return-value]


def offload(admit: Callable[[grpc.aio.ServicerContext], None] | None = None) -> Callable[[F], F]:
    """Servicer decorator for a call served on the event loop: `admit` checks the caller there
    (cheaply: who may not call this never takes a pool's thread), the synchronous body runs in the
    servicer's pool (`self.pool`), and errors are translated as `translate` does."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        async def unary(self, request, context: grpc.aio.ServicerContext):
            started, code = time.perf_counter(), grpc.StatusCode.OK
            try:
                if admit is not None:
                    admit(context)
                return await self.pool.run(method, self, request, context)
            except Exception as e:
                code = TO_GRPC[e.code] if isinstance(e, FederationError) else grpc.StatusCode.INTERNAL
                await _abort_async(self, context, method.__name__, e)
            finally:
                _observe(self, method.__name__, started, code)

        return unary  # type: ignore[return-value]

    return decorate


def translate_stream(method: F) -> F:
    """Servicer decorator for a stream served on the event loop (an async generator)."""

    @functools.wraps(method)
    async def stream(self, request, context: grpc.aio.ServicerContext):
        try:
            async with contextlib.aclosing(method(self, request, context)) as responses:
                async for response in responses:
                    yield response
        except Exception as e:
            await _abort_async(self, context, method.__name__, e)

    return stream  # type: ignore[return-value]


async def _abort_async(self, context: grpc.aio.ServicerContext, method: str, e: Exception) -> None:
    """End the call with the status of what its body raised: a typed error's, else INTERNAL (logged)."""
    if not isinstance(e, FederationError):
        log.exception("unexpected error in %s", method)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the federation log")
        return
    if e.code is ErrorCode.PERMISSION_DENIED:
        await self.pool.run(denied, self, context, method, e)
    context.set_trailing_metadata(((CODE_KEY, e.code.value),))
    await context.abort(TO_GRPC[e.code], e.message)


def _abort(context: grpc.ServicerContext, e: FederationError) -> None:
    context.set_trailing_metadata(((CODE_KEY, e.code.value),))
    context.abort(TO_GRPC[e.code], e.message)


def from_rpc_error(e: grpc.RpcError) -> FederationError:
    """Client side: rebuild the typed error from a failed call."""
    code = None
    # Each item is a (key, value) named tuple; grpc's stubs type it as an opaque _Metadatum.
    for key, value in cast("Iterable[tuple[str, str]]", e.trailing_metadata() or ()):
        if key == CODE_KEY:
            code = value
    status = e.code()
    if code is None:
        if status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            # CANCELLED without our code: the server went away mid-stream (a restart), so retry-able.
            return from_code(ErrorCode.UNAVAILABLE.value, f"federation unreachable: {e.details()}")
        if status is grpc.StatusCode.DEADLINE_EXCEEDED:
            return from_code(ErrorCode.TIMEOUT.value, f"federation did not answer in time: {e.details()}")
        if status is grpc.StatusCode.UNAUTHENTICATED:
            return from_code(ErrorCode.PERMISSION_DENIED.value, f"not authenticated: {e.details()}")
        return from_code(ErrorCode.INTERNAL.value, f"{status.name}: {e.details()}")
    return from_code(code, e.details() or "")
