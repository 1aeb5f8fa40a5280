"""A site's own refusal: work its operator forbids, whatever the federation decided."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from federation.spec import JobSpec
from federation.spec.models import Veto


def veto_reason(spec: JobSpec, veto: Veto, held: Mapping[str, str]) -> str | None:
    """Why this site refuses `spec`, or None. `held` maps dataset name -> classification here."""
    body = spec.spec
    tenant = spec.metadata.tenant
    if veto.tenants is not None and tenant not in veto.tenants:
        return f"tenant {tenant} may not run here"
    if veto.max_cpus_per_job is not None and body.resources.cpus > veto.max_cpus_per_job:
        return f"asks {body.resources.cpus:g} cpus; this site allows {veto.max_cpus_per_job:g} per job"
    if veto.max_gpus_per_job is not None and body.resources.gpus > veto.max_gpus_per_job:
        return f"asks {body.resources.gpus:g} gpus; this site allows {veto.max_gpus_per_job:g} per job"
    if veto.classifications is not None:
        for name in body.datasets:
            cls = held.get(name)
            if cls is not None and cls not in veto.classifications:
                return f"dataset {name} is {cls}; this site runs only {', '.join(veto.classifications)} jobs"
    return None


def resolve_runtime_env(runtime_env: Mapping[str, Any], work_dir: Path | None) -> tuple[dict[str, Any], str | None]:
    """Resolve a relative working_dir inside the site's work_dir; refuse anything that escapes it.

    Returns (runtime_env for Ray, refusal reason or None).
    """
    env = dict(runtime_env)
    wd = env.get("working_dir")
    if wd is None:
        return env, None
    if not isinstance(wd, str):
        return env, "runtime_env.working_dir must be a string"
    if "://" in wd:
        return env, "runtime_env.working_dir: remote URIs are not accepted by this site"
    if work_dir is None:
        return env, "runtime_env.working_dir: this site has no work_dir to take code from"
    root = work_dir.resolve()
    target = (root / wd).resolve()
    if target != root and root not in target.parents:
        return env, f"runtime_env.working_dir {wd!r} escapes the site's work_dir"
    if not target.is_dir():
        return env, f"runtime_env.working_dir {wd!r} does not exist at this site"
    env["working_dir"] = str(target)
    return env, None
