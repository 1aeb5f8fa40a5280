"""`fedctl site start`: a site agent process, optionally with its own Ray head."""
from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from federation.errors import ConfigError, RayError
from federation.gpus import inventory_of
from federation.spec import SiteConfig
from federation.spec.site import FederationEndpoint
from federation.transport import open_channel
from site_agent.agent import SiteAgent
from site_agent.binding import NODE_LABEL
from site_agent.elastic import MARKET, market
from site_agent.files import work_dir
from site_agent.isolation import DatasetGrants, JobUsers
from site_agent.local_ray import LocalRayHead
from site_agent.metrics import agent_metrics
from site_agent.ray_driver import RayJobsDriver
from site_agent.slurm import SlurmDriver
from site_agent.tasks import Executions, TaskRunner, runner_path
from site_agent.tenant_heads import TenantHeads

log = logging.getLogger("site_agent")


def run_site(config: SiteConfig, *, local_ray: bool,
             on_stop: Callable[[Callable[[], None]], threading.Event]) -> int:
    """Run until `on_stop`'s event fires; a local Ray head is always stopped on the way out."""
    body = config.spec
    fed = body.federation
    if body.backend == "slurm":
        return _run_slurm_site(config, local_ray=local_ray, on_stop=on_stop)
    users = JobUsers.of_config(config)
    head = _local_head(config, users) if local_ray else None
    if users.run_as or users.tenant_user:
        DatasetGrants().clear([Path(d.path) for d in body.datasets if d.path], users)
    _check_ray(config, local_ray=head is not None)
    pool: TenantHeads | None = None
    metrics: Any = None   # federation.observe.serve.MetricsServer, with spec.metrics
    agent: SiteAgent | None = None

    def stop() -> None:
        if agent is not None:
            agent.stop()

    done = on_stop(stop)
    _stop_with_parent()
    _use_token(head.token_path if head is not None else body.ray.auth_token_path)
    try:
        if head is not None:
            driver = _start_head(head, done)
            if driver is None:
                return 0
            if body.ray.local.tenant_heads is not None:
                pool = TenantHeads(head, driver, users)
        else:
            assert body.ray.address, "a site config names spec.ray.local or spec.ray.address"
            driver = RayJobsDriver(body.ray.address)
            driver.wait_ready(30)
        if done.is_set():
            return 0

        if head is not None:
            threading.Thread(target=_supervise, args=(head, driver, pool, done), daemon=True,
                             name="ray-head").start()
        runner = TaskRunner(driver, config.metadata.name, runner_path(work_dir(config), config.metadata.name))
        # Tenants kept on heads of their own run every attempt as a Ray job there: one runner per head is to come.
        agent = SiteAgent(config, pool or Executions(driver, runner), functools.partial(_channel, fed))
        log.info("site %s (%s, %s) joining %s", config.metadata.name, body.location.jurisdiction,
                 body.location.region, fed.address)
        if body.metrics is not None:
            watched = agent
            agent.metrics.watch(lambda: bool(watched.reconciler.fenced), lambda: watched.lease_left(time.monotonic()))
            metrics = agent_metrics(agent.metrics, agent.name, body.metrics)
            metrics.start()
        agent.run()
        return 0
    finally:
        if metrics is not None:
            metrics.stop()
        if pool is not None:
            pool.stop_all()
        if head is not None:
            head.stop()


def _run_slurm_site(config: SiteConfig, *, local_ray: bool,
                    on_stop: Callable[[Callable[[], None]], threading.Event]) -> int:
    """A site whose work Slurm runs (`site_agent.slurm`): no Ray cluster of its own to start."""
    if local_ray:
        raise ConfigError(f"site {config.metadata.name}: spec.backend is slurm; Ray starts inside each Slurm job, "
                          "so --local-ray has no meaning")
    driver = SlurmDriver(config.metadata.name, config.spec.slurm, work_dir(config) / "slurm")
    driver.resources()   # Slurm answers, or the agent says why not now
    if config.spec.slurm.users:   # what an earlier agent granted, taken back: live attempts are granted again
        DatasetGrants().clear([Path(d.path) for d in config.spec.datasets if d.path], JobUsers.of_config(config))
    agent = SiteAgent(config, driver, functools.partial(_channel, config.spec.federation))
    on_stop(agent.stop)
    _stop_with_parent()
    log.info("site %s (Slurm) joining %s", config.metadata.name, config.spec.federation.address)
    agent.run()
    return 0


def _use_token(token: Path | None) -> None:
    if token is not None:
        # This process talks to one Ray cluster; Ray's clients read the token from the environment.
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
        os.environ.pop("RAY_AUTH_TOKEN", None)


def _start_head(head: LocalRayHead, done: threading.Event) -> RayJobsDriver | None:
    """The head's driver; None when the agent was told to stop first or while it came up (it is stopped)."""
    if done.is_set():
        return None
    try:
        return head.start(cancel=done)
    except RayError:
        if done.is_set():
            return None
        raise


def _check_ray(config: SiteConfig, *, local_ray: bool) -> None:
    ray = config.spec.ray
    if not local_ray and not ray.address:
        raise ConfigError(f"site {config.metadata.name}: spec.ray.address is not set; give it or use --local-ray")
    if not local_ray and (ray.local.tenant_heads or ray.local.run_as):
        raise ConfigError(f"site {config.metadata.name}: spec.ray.local.run_as and tenant_heads need --local-ray")


def _channel(fed: FederationEndpoint, address: str) -> grpc.Channel:
    tls = fed.tls
    return open_channel(address, ca=tls.ca if tls else None, cert=tls.cert if tls else None,
                        key=tls.key if tls else None, insecure=fed.insecure)


def _local_head(config: SiteConfig, users: JobUsers) -> LocalRayHead:
    body = config.spec
    head = LocalRayHead(body.ray.local, name=config.metadata.name, user=users.base(), elastic=body.elastic)
    if body.gpu_nodes:
        # A local head stands for the first declared GPU node (one machine, one raylet).
        first = inventory_of(body.gpu_nodes[:1]).nodes[0]
        head.labels, head.num_gpus = {NODE_LABEL: first.name}, first.gpus
    else:
        # Ray finds this host's GPUs itself; NVML discovery names the node after the host.
        head.labels = {NODE_LABEL: socket.gethostname()}
    if body.elastic is not None:   # the head is no spot node: a job that refuses spot may run on it
        head.labels = {**head.labels, MARKET: market(False)}
    return head


def _supervise(head: LocalRayHead, driver, pool: TenantHeads | None, done: threading.Event) -> None:
    """Start the local Ray head again when it dies, and stop tenant heads that died or idle. Their
    jobs died with them: the agent's next full report says they vanished, and the federation
    retries them by their policy."""
    while not done.wait(1.0):
        if pool is not None:
            pool.reap()
        if head.alive():
            continue
        log.warning("the local Ray head of %s exited; starting it again", head.name)
        head.stop()   # whatever of it is left
        try:
            head.start()
            driver.wait_ready(30)
        except RayError as e:
            log.error("could not restart the local Ray head: %s", e.message)


def _stop_with_parent() -> None:
    """With FEDCTL_PARENT_PID set (a demo or test started this agent), get SIGTERM when that
    parent dies, so a parent killed with SIGKILL leaves no agent or Ray head behind (Linux)."""
    parent = os.environ.get("FEDCTL_PARENT_PID")
    if not parent:
        return
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)

