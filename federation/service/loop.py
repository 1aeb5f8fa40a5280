"""The federation's gRPC servers on one asyncio event loop in a thread of its own.

Streams (`Connect`, `WatchJob`, `StreamJobLogs`) are coroutines on the loop: an open stream
holds no thread, only a moment of a pool's while it reads the store. Calls run their synchronous
bodies in bounded pools: the sites' calls in the sites' pool, users' calls in the users' pool (the
server's migration pool), so no number of users' calls or streams can keep a heartbeat waiting."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent import futures
from typing import Any, TypeVar

import grpc

from federation.transport import SERVER_OPTIONS

T = TypeVar("T")


class Pool:
    """A bounded pool that coroutines hand blocking work to."""

    def __init__(self, threads: int, name: str) -> None:
        self.executor = futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    def run(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        return asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class RpcLoop:
    """An event loop in a daemon thread, and the aio servers it serves."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="rpc-loop", daemon=True)
        self._thread.start()
        self._servers: list[grpc.aio.Server] = []

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for its result here."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def server(self, users: Pool, interceptors: list[grpc.aio.ServerInterceptor]) -> grpc.aio.Server:
        """A new aio server on this loop; its synchronous handlers run in `users`."""
        async def make() -> grpc.aio.Server:
            return grpc.aio.server(migration_thread_pool=users.executor, options=SERVER_OPTIONS,
                                   interceptors=interceptors, maximum_concurrent_rpcs=None)
        server = self.call(make())
        self._servers.append(server)
        return server

    def on_loop(self, fn: Callable[[], T]) -> T:
        """`fn()` called on the loop (aio servers are bound and started there)."""
        async def run() -> T:
            return fn()
        return self.call(run())

    def stop(self, grace: float) -> None:
        """Stop the servers, then the loop; a second call does nothing."""
        if self.loop.is_closed() or not self.loop.is_running():
            return

        async def stop_all() -> None:
            await asyncio.gather(*(s.stop(grace) for s in self._servers))
        try:
            self.call(stop_all(), timeout=grace + 10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self.loop.close()
