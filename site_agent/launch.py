"""Handing one attempt to Ray: read its spec, let the site veto it, fetch its inputs, check its GPU
binding, then submit. Any step may settle the attempt with the site's own word instead, or put it
off to the next pass when it is Ray or the federation that does not answer."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.errors import ConfigError, InvalidSpec, RayError
from federation.jobs import AttemptState
from federation.service import wire
from federation.service.spec_wire import spec_from_pb
from federation.spec import JobSpec, SiteConfig
from federation.spec.execution import execution_of
from federation.v1 import federation_pb2 as pb
from site_agent import guard, warm
from site_agent.binding import check, wrap
from site_agent.elastic import label_selector
from site_agent.files import AttemptFiles, Fetch, work_dir
from site_agent.inventory import SiteGpus
from site_agent.isolation import DatasetGrants, JobUsers
from site_agent.lease_file import lease_path
from site_agent.plan import SiteWord
from site_agent.ray_driver import SITE_KEY, RayDriver, Vanished
from site_agent.tenant_heads import Busy
from site_agent.veto import resolve_runtime_env, veto_reason

log = logging.getLogger("site_agent")


@dataclass(frozen=True)
class Submitted:
    """Ray holds the attempt now: `started` it here, or it already held it (adopted)."""

    started: bool


Outcome = Submitted | SiteWord | None   # None: nothing decided; the next pass tries again


@dataclass(frozen=True)
class Launcher:
    config: SiteConfig
    driver: RayDriver
    gpus: SiteGpus
    files: AttemptFiles
    fetch: Fetch | None
    classifications: dict[str, str]   # dataset -> class
    grants: DatasetGrants = field(default_factory=DatasetGrants)

    def launch(self, a: pb.Assignment, *, ray_reachable: bool) -> Outcome:
        sid = a.submission_id
        admitted = self._admit(a)
        if isinstance(admitted, SiteWord):
            return admitted
        spec, runtime_env = admitted
        try:
            user = JobUsers.of_config(self.config).of(spec.metadata.tenant)
        except ConfigError as e:   # no OS user for this tenant here: the site cannot run it apart
            return SiteWord(AttemptState.REJECTED, e.message)
        io_env = self.files.prepare(sid, a, self.fetch, user)
        if not isinstance(io_env, dict):
            return io_env   # refused, or an input could not be fetched
        held = {d.name: Path(d.path) for d in self.config.spec.datasets if d.path}
        self.grants.allow(sid, [held[d] for d in spec.spec.datasets if d in held], user)
        r = spec.spec.resources
        entrypoint, env, gpus = spec.spec.entrypoint, {**job_env(self.config, a, spec), **io_env}, r.gpus
        if a.binding and self.driver.binds_gpus:
            bound = self._bind(a, entrypoint)
            if not isinstance(bound, tuple):
                return bound
            # The placement group holds the GPUs, so the entrypoint itself asks for none.
            entrypoint, env, gpus = bound[0], {**env, **bound[1]}, 0.0
        task = self.driver.runs_tasks and execution_of(spec).path == "task"
        if not (self.config.spec.autonomous or spec.spec.on_site_loss == "wait"):
            lease = lease_path(work_dir(self.config), self.config.metadata.name)
            if task:   # the task guards it itself (site_agent.task)
                env = {**env, **guard.lease_env(lease)}
            else:
                entrypoint, guarded = guard.wrap(entrypoint, lease)
                env = {**env, **guarded}
        variables = {**runtime_env.get("env_vars", {}), **env}
        sealed = self.config.spec.veto.secure_training
        warm_key = warm.key(spec, self.config.metadata.name, entrypoint, runtime_env,
                            sealed.datasets if sealed else ()) if task else ""
        runtime_env["env_vars"] = {**variables, warm.ENV_KEY: warm_key, warm.ENV_SOCKET: ""}
        metadata = {"federation_job": a.job_id, "attempt": str(a.attempt), "tenant": spec.metadata.tenant,
                    SITE_KEY: self.config.metadata.name, "time_limit": f"{spec.spec.time_limit or 0:g}",
                    "nodes": str(nodes_of(spec))}
        where = label_selector(spec.spec, self.config.spec.elastic, a.node_type)
        try:
            started = self.driver.submit(sid, entrypoint, runtime_env, cpus=r.cpus, memory=r.memory, gpus=gpus,
                                         metadata=metadata, task=task, label_selector=where)
        except Busy as e:
            log.debug("%s", e.message)
            return None
        except ConfigError as e:   # this tenant's head cannot start here as its OS user
            return SiteWord(AttemptState.REJECTED, e.message)
        except Vanished as e:   # its retry policy decides, under a new attempt and id
            return SiteWord(AttemptState.LOST, e.message)
        except RayError as e:
            log.warning("%s", e.message)
            return SiteWord(AttemptState.FAILED, e.message) if ray_reachable else None
        if started:
            log.info("started %s (%s)%s", sid, spec.metadata.name, " as a task" if task else "")
        else:
            log.info("adopted %s (%s): Ray already holds it", sid, spec.metadata.name)
        return Submitted(started)

    def _admit(self, a: pb.Assignment) -> tuple[JobSpec, dict[str, Any]] | SiteWord:
        """The spec and the runtime env resolved at this site, or why the site refuses the attempt."""
        try:
            spec = spec_from_pb(a.spec)
        except InvalidSpec as e:  # refuse what this site cannot read, rather than wedge on it
            return SiteWord(AttemptState.REJECTED, f"invalid assignment: {e.message}")
        reason = veto_reason(spec, self.config.spec.veto, self.classifications, [ref.name for ref in a.inputs])
        runtime_env, env_reason = resolve_runtime_env(spec.spec.runtime_env, self.config.spec.work_dir,
                                                      self.config.spec.veto.packages)
        reason = reason or env_reason
        if reason:
            log.info("refused %s: %s", a.submission_id, reason)
            return SiteWord(AttemptState.REJECTED, reason)
        return spec, runtime_env

    def _bind(self, a: pb.Assignment, entrypoint: str) -> tuple[str, dict[str, str]] | SiteWord | None:
        """The entrypoint wrapped to run behind its placement group, with its environment; the
        site's word when it cannot honour the binding; None when Ray does not answer."""
        binding = wire.binding_from_pb(a.binding)
        try:
            mismatch = check(binding, self.gpus.inventory, self.driver.nodes())
        except RayError as e:
            log.warning("%s", e.message)
            return None
        if mismatch:
            log.warning("refused %s: %s", a.submission_id, mismatch)
            return SiteWord(AttemptState.FAILED, f"failed reservation: {mismatch}")
        return wrap(entrypoint, binding, self.gpus.cuda)


def job_env(config: SiteConfig, a: pb.Assignment, spec: JobSpec) -> dict[str, str]:
    """What the attempt learns from its environment: who it is, where its datasets and checkpoint are."""
    env = {"FEDCTL_JOB_ID": a.job_id, "FEDCTL_ATTEMPT": str(a.attempt), "FEDCTL_SITE": config.metadata.name}
    r = spec.spec.resources
    if not r.gpus and r.gpu_memory is None:
        env["CUDA_VISIBLE_DEVICES"] = ""   # Ray leaves a job that asks for no GPU every GPU to see
    for d in config.spec.datasets:
        if d.name in spec.spec.datasets:
            env["FEDCTL_DATASET_" + d.name.upper().replace("-", "_")] = d.path
    if spec.spec.checkpoint is not None:
        env["FEDCTL_CHECKPOINT_PATH"] = spec.spec.checkpoint.path.replace("{job_id}", a.job_id)
        if a.attempt > 1:   # an earlier attempt was lost, failed or preempted: carry on from its checkpoint
            env["FEDCTL_RESUME"] = "1"
    return env


def nodes_of(spec: JobSpec) -> int:
    """How many nodes the job spans: its GPUs over `topology.gpus_per_node`, else one."""
    per_node, gpus = spec.spec.topology.gpus_per_node, int(spec.spec.resources.gpus)
    return gpus // per_node if per_node and gpus > per_node else 1
