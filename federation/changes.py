"""In-process change signal: watchers wait for the generation to move on."""
from __future__ import annotations

import threading
from collections.abc import Iterable


class Changes:
    """Every change, and the changes that can alter what a site should run (a submission cannot):
    each site's stream sleeps through a stream of submissions and through placements elsewhere."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)    # waiters for any change
        self._sites: dict[str, threading.Condition] = {}   # per site: waiters for its assignment changes
        self._generation = 0
        self._assignments = 0                           # changes that may concern every site
        self._of_site: dict[str, int] = {}              # changes that concern one site

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
            if not assignments:
                return
            if sites is None:
                self._assignments += 1
                for cond in self._sites.values():
                    cond.notify_all()
                return
            for site in sites:
                self._of_site[site] = self._of_site.get(site, 0) + 1
                if site in self._sites:
                    self._sites[site].notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Block until the generation differs from `seen` or `timeout` passes; return it."""
        with self._cond:
            self._cond.wait_for(lambda: self._generation != seen, timeout=timeout)
            return self._generation

    def wait_assignments(self, site: str, seen: int, timeout: float) -> int:
        with self._lock:
            cond = self._sites.setdefault(site, threading.Condition(self._lock))
            cond.wait_for(lambda: self.assignments(site) != seen, timeout=timeout)
            return self.assignments(site)
