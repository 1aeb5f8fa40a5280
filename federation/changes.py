"""In-process change signal: watchers wait for the generation to move on. Threads wait on a
condition; streams served on the event loop wait on an `asyncio.Event`, holding no thread."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable

_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Event]


class Changes:
    """Every change, and the changes that can alter what a site should run (a submission cannot):
    each site's stream sleeps through a stream of submissions and through placements elsewhere."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)    # threads waiting for any change
        self._generation = 0
        self._assignments = 0                           # changes that may concern every site
        self._of_site: dict[str, int] = {}              # changes that concern one site
        self._any: set[_Waiter] = set()                 # streams waiting for any change
        self._sites: dict[str, set[_Waiter]] = {}      # per site: streams waiting for its assignment changes

    @property
    def generation(self) -> int:
        return self._generation

    def assignments(self, site: str) -> int:
        """A counter that moves whenever the site's desired set may have changed."""
        return self._assignments + self._of_site.get(site, 0)

    def bump(self, assignments: bool = True, sites: Iterable[str] | None = None) -> None:
        """A change; with `sites`, one that alters only those sites' desired sets."""
        with self._lock:
            self._generation += 1
            self._cond.notify_all()
            woken = list(self._any)
            if assignments and sites is None:
                self._assignments += 1
                woken += [w for waiters in self._sites.values() for w in waiters]
            elif assignments:
                for site in sites or ():
                    self._of_site[site] = self._of_site.get(site, 0) + 1
                    woken += self._sites.get(site, ())
        for loop, event in woken:
            loop.call_soon_threadsafe(event.set)

    def wait(self, seen: int, timeout: float) -> int:
        """Block until the generation differs from `seen` or `timeout` passes; return it."""
        with self._cond:
            self._cond.wait_for(lambda: self._generation != seen, timeout=timeout)
            return self._generation

    async def changed(self, seen: int, timeout: float) -> None:
        """Until the generation differs from `seen`, or `timeout` passes."""
        await self._until(self._any, lambda: self._generation != seen, timeout)

    async def assignments_changed(self, site: str, seen: int, timeout: float) -> None:
        """Until the site's desired set may differ from when its counter was `seen`, or `timeout` passes."""
        with self._lock:
            waiters = self._sites.setdefault(site, set())
        await self._until(waiters, lambda: self.assignments(site) != seen, timeout)

    async def _until(self, waiters: set[_Waiter], moved, timeout: float) -> None:
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            if moved():
                return
            waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter[1].wait()
        except TimeoutError:
            pass
        finally:
            with self._lock:
                waiters.discard(waiter)
