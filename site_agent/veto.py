"""A site's own refusal: work its operator forbids, whatever the federation decided."""
from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from federation.spec import JobSpec
from federation.spec.site import SecureTraining, Veto
from site_agent.files import PRIVATE


def veto_reason(spec: JobSpec, veto: Veto, held: Mapping[str, str], inputs: Collection[str] = ()) -> str | None:
    """Why this site refuses `spec`, or None. `held` maps dataset name -> classification here;
    `inputs` names the attempt's input files."""
    body = spec.spec
    if veto.secure_training is not None:
        kept = sorted(set(body.datasets) & set(veto.secure_training.datasets))
        why = kept and not_secure_step(spec, veto.secure_training, inputs)
        if why:
            return f"dataset {kept[0]} leaves this site only as a secure-aggregated training update: {why}"
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


# A local step's own variables: the training's, and those of the gang its round is (the agent sets
# the paths, FEDCTL_INPUT_DIR and the datasets', over whatever a spec says).
STEP_ENV = frozenset({"FEDCTL_TRAINING_ID", "FEDCTL_ROUND", "FEDCTL_TRAINING_CONFIG", "FEDCTL_GANG_ID",
                      "FEDCTL_GANG_PART", "FEDCTL_GANG_SIZE"})


def not_secure_step(spec: JobSpec, allowed: SecureTraining, inputs: Collection[str]) -> str | None:
    """What keeps `spec` from being a secure training's local step by an allowed step function,
    run by this site's own runner with nothing that could replace it (no code, no paths, no
    environment of its own), or None."""
    body = spec.spec
    step = body.entrypoint.removeprefix("python -m training.runner step ")
    if step == body.entrypoint or step not in allowed.steps:
        return f"entrypoint {body.entrypoint[:120]!r} is not one of its allowed steps"
    env = dict(body.runtime_env)
    variables = env.pop("env_vars", {})
    if env or set(variables) - STEP_ENV:
        return "a step brings no runtime_env of its own beyond the training's FEDCTL_ variables"
    try:
        secure = json.loads(variables.get("FEDCTL_TRAINING_CONFIG", "{}")).get("secure") is True
    except (ValueError, AttributeError):
        secure = False
    if not secure or "secagg-setups.json" not in inputs:
        return "the step is not masked by secure aggregation"
    return None


# runtime_env keys a site accepts. Anything else (container images, plugins, file-based
# conda or pip specs) is refused: each is a way to run or read what the operator did not allow.
ACCEPTED_RUNTIME_ENV = {"working_dir", "py_modules", "env_vars", "pip", "uv", "excludes", "config"}


def resolve_runtime_env(runtime_env: Mapping[str, Any], work_dir: Path | None,
                        packages: list[str] | None = None) -> tuple[dict[str, Any], str | None]:
    """Resolve local paths (working_dir, py_modules) inside the site's work_dir; refuse
    anything that escapes it, remote URIs, keys this site does not accept, and packages outside
    its allow-list (`packages`, names; None: any plain requirement).

    Returns (runtime_env for Ray, refusal reason or None).
    """
    env = dict(runtime_env)
    for key in sorted(env):
        if key not in ACCEPTED_RUNTIME_ENV:
            return env, f"runtime_env.{key} is not accepted by this site"
    for key in ("pip", "uv"):
        if key in env:
            reason = _packages_reason(env[key], f"runtime_env.{key}", packages)
            if reason:
                return env, reason
    if "working_dir" in env:
        env["working_dir"], reason = _inside(env["working_dir"], work_dir, "runtime_env.working_dir")
        if reason:
            return env, reason
    if "py_modules" in env:
        if not isinstance(env["py_modules"], list):
            return env, "runtime_env.py_modules must be a list"
        resolved = []
        for i, module in enumerate(env["py_modules"]):
            path, reason = _inside(module, work_dir, f"runtime_env.py_modules[{i}]")
            if reason:
                return env, reason
            resolved.append(path)
        env["py_modules"] = resolved
    return env, None


def _packages_reason(packages: Any, field: str, allowed: list[str] | None = None) -> str | None:
    """Only plain requirement specifiers (`numpy==2.1`, `ray[default]>=2`): an option (`-r FILE`,
    `--index-url=...`), a VCS or file URL, or a direct reference (`pkg @ https://...`) would install or
    read what the operator did not allow; and, with an allow-list, only the packages it names."""
    if not (isinstance(packages, list) and all(isinstance(p, str) for p in packages)):
        return f"{field} must be a list of package names"
    for i, entry in enumerate(packages):
        try:
            requirement = Requirement(entry)
        except InvalidRequirement:
            requirement = None
        if requirement is None or requirement.url or entry.lstrip().startswith("-"):
            return f"{field}[{i}] {entry[:80]!r} is not a plain requirement (a name and version, e.g. numpy==2.1)"
        if allowed is not None and canonicalize_name(requirement.name) not in {canonicalize_name(a) for a in allowed}:
            return f"{field}[{i}] {requirement.name!r} is not in this site's allowed packages (spec.veto.packages)"
    return None


def _inside(value: Any, work_dir: Path | None, field: str) -> tuple[str, str | None]:
    if not isinstance(value, str):
        return "", f"{field} must be a string"
    if "://" in value:
        return value, f"{field}: remote URIs are not accepted by this site"
    if work_dir is None:
        return value, f"{field}: this site has no work_dir to take code from"
    root = work_dir.resolve()
    try:
        target = (root / value).resolve()
    except (ValueError, OSError) as e:  # a NUL byte, a symlink loop
        return value, f"{field} {value!r} is not a usable path ({e})"
    if target != root and root not in target.parents:
        return value, f"{field} {value!r} escapes the site's work_dir"
    private = root / PRIVATE   # the agent packs this folder as root: never its keys or other attempts' files
    if target == private or private in target.parents or target in private.parents:
        return value, f"{field} {value!r} holds the site's own folder {PRIVATE}; name a folder beside it"
    if not target.exists():
        return value, f"{field} {value!r} does not exist at this site"
    return str(target), None
