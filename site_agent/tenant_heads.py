"""A local Ray head per tenant, for tenants that must not share one: each started on demand beside
the site's own head, as the tenant's own OS user, with its own ports, folder and Ray token, so one
tenant's jobs can neither read another's files or logs nor list, stop or read its Ray jobs. As
KubeRay's RayJob starts a cluster per job, this starts a head per tenant and stops it when idle.

The site's own head answers for the site (resources, nodes) and holds no tenant's jobs."""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from federation.errors import ConfigError, FederationError, RayError
from federation.spec.site import LocalRay
from site_agent.isolation import JobUsers
from site_agent.local_ray import WORKER_PORTS, LocalRayHead
from site_agent.ray_driver import RayDriver, RayJob, RayJobsDriver, RayNode, RayResources

log = logging.getLogger("site_agent")

SPAN = WORKER_PORTS[1] + 1   # ports one head takes from its base
START_TRIES = 3


class Busy(RayError):
    """Every tenant head is in use: the attempt waits for one to stop."""


class TenantHeads(RayDriver):
    def __init__(self, site: LocalRayHead, driver: RayJobsDriver, users: JobUsers) -> None:
        assert site.settings.tenant_heads is not None, "a site config with spec.ray.local.tenant_heads"
        self.site, self.driver, self.users = site, driver, users
        self.spec = site.settings.tenant_heads
        self.heads: dict[str, tuple[LocalRayHead, RayJobsDriver]] = {}
        self.owner: dict[str, str] = {}          # submission id -> tenant
        self.busy_at: dict[str, float] = {}      # tenant -> when its head last held work
        self.starting: dict[str, LocalRayHead] = {}
        self.failed: dict[str, FederationError] = {}   # why a tenant's head did not start, told once
        self.lock = threading.RLock()
        for slot in range(1, self.spec.max + 1):
            self._adopt(slot)

    def _settings(self, slot: int) -> LocalRay:
        base = self.site.settings
        return base.model_copy(update={"port_base": base.port_base + SPAN * slot, "temp_dir": None,
                                       "tenant_heads": None})

    def _head(self, slot: int, tenant: str) -> LocalRayHead:
        return LocalRayHead(self._settings(slot), name=f"{self.site.name}/{tenant}", labels=self.site.labels,
                            num_gpus=self.site.num_gpus, user=self.users.of(tenant))

    def _adopt(self, slot: int) -> None:
        """Take back a tenant head an earlier agent of this site left running: only from a folder
        that agent made (a job may make one in /tmp too), never failing this agent's start."""
        folder = Path(f"/tmp/fedray-{self._settings(slot).port_base}")
        try:
            if folder.is_symlink() or folder.stat().st_uid != os.geteuid():
                return
            tenant = (folder / "tenant").read_text().strip()
            head = self._head(slot, tenant)
            if head._running_head() is not None:
                self.heads[tenant] = (head, head.start())
                self.busy_at[tenant] = time.monotonic()
        except (OSError, FederationError) as e:
            log.warning("not adopting the tenant head in %s: %s", folder, getattr(e, "message", e))

    def for_tenant(self, tenant: str) -> RayJobsDriver:
        """The tenant's head. One not running is started in the background, and Busy says so
        meanwhile: a start takes seconds, and the agent's other work must not wait for it."""
        with self.lock:
            if tenant in self.heads:
                return self.heads[tenant][1]
            failed = self.failed.pop(tenant, None)
            if failed is not None:
                raise failed
            if tenant not in self.starting:
                taken = {h.settings.port_base for h, _ in self.heads.values()} | {
                    h.settings.port_base for h in self.starting.values()}
                free = [k for k in range(1, self.spec.max + 1) if self._settings(k).port_base not in taken]
                if not free:
                    raise Busy(f"all {self.spec.max} tenant heads are in use; {tenant}'s attempt waits for one")
                head = self._head(free[0], tenant)   # ConfigError: no OS user for this tenant
                self.starting[tenant] = head
                threading.Thread(target=self._start, args=(tenant, head), daemon=True,
                                 name=f"ray-head-{tenant}").start()
        raise Busy(f"the Ray head of tenant {tenant} is starting")

    def _start(self, tenant: str, head: LocalRayHead) -> None:
        """Start the head, trying again twice: what fails here fails the attempt, which its job's retry
        policy covers, never a refusal that would keep the tenant's work from this site for good."""
        for tries in range(1, START_TRIES + 1):
            try:
                driver = head.start()
                (head.temp_dir / "tenant").write_text(tenant)
                break
            except (RayError, ConfigError) as e:
                log.warning("the Ray head of tenant %s (try %d of %d): %s", tenant, tries, START_TRIES, e.message)
                error = e.message
        else:
            with self.lock:
                self.starting.pop(tenant, None)
                self.failed[tenant] = RayError(f"the Ray head of tenant {tenant} did not start: {error}")
            return
        with self.lock:
            self.starting.pop(tenant, None)
            self.heads[tenant] = (head, driver)
            self.busy_at[tenant] = time.monotonic()
        log.info("started a Ray head for tenant %s at %s", tenant, head.dashboard_url)

    def _driver(self, submission_id: str) -> RayJobsDriver:
        with self.lock:
            tenant = self.owner.get(submission_id)
            return self.heads[tenant][1] if tenant in self.heads else self.driver

    def submit(self, submission_id: str, entrypoint: str, runtime_env: dict[str, Any], *, cpus: float,
               memory: int, gpus: float, metadata: dict[str, str], task: bool = False,
               label_selector: dict[str, str] | None = None) -> bool:
        tenant = metadata["tenant"]
        driver = self.for_tenant(tenant)
        with self.lock:
            self.owner[submission_id] = tenant
            self.busy_at[tenant] = time.monotonic()
        return driver.submit(submission_id, entrypoint, runtime_env, cpus=cpus, memory=memory, gpus=gpus,
                             metadata=metadata, label_selector=label_selector)

    def jobs(self) -> dict[str, RayJob]:
        out = dict(self.driver.jobs())
        with self.lock:
            heads = list(self.heads.items())
        for tenant, (head, driver) in heads:
            if not head.alive():
                continue   # its jobs died with it: reported vanished, retried by their policy
            # A head answers only for its own tenant's attempts: a job there could submit others under any id.
            listed = driver.jobs()
            with self.lock:
                found = {sid: j for sid, j in listed.items()
                         if j.tenant == tenant and self.owner.setdefault(sid, tenant) == tenant}
                if any(not j.terminal for j in found.values()):
                    self.busy_at[tenant] = time.monotonic()
            out.update(found)
        return out

    def status(self, submission_id: str) -> str | None:
        return self._driver(submission_id).status(submission_id)

    def stop(self, submission_id: str) -> None:
        self._driver(submission_id).stop(submission_id)

    def logs(self, submission_id: str, offset: int = 0) -> bytes:
        return self._driver(submission_id).logs(submission_id, offset)

    def resources(self) -> RayResources:
        return self.driver.resources()

    def nodes(self) -> list[RayNode]:
        return self.driver.nodes()

    def reap(self) -> None:
        """Stop the heads that died or held no work for idle_stop_s."""
        now = time.monotonic()
        with self.lock:
            done = [t for t, (head, _) in self.heads.items()
                    if not head.alive() or now - self.busy_at.get(t, now) > self.spec.idle_stop_s]
            stopping = [self.heads.pop(t)[0] for t in done]
        for tenant, head in zip(done, stopping, strict=True):
            log.info("stopping the Ray head of tenant %s (%s)", tenant, "idle" if head.alive() else "exited")
            head.stop()

    def stop_all(self) -> None:
        with self.lock:
            heads = [h for h, _ in self.heads.values()] + list(self.starting.values())
            self.heads.clear()
            self.starting.clear()
        for head in heads:
            head.stop()
