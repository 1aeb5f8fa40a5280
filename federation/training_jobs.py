"""The jobs a federated training's rounds are made of, as specs: local steps (a gang across the
participants), and, with secure aggregation, each site's keys and its reveal; then the aggregator."""
from __future__ import annotations

import json
import re
from typing import Any

from federation.spec import JobSpec, job_from_dict
from training.model import Training

FUNCTION_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
SMALL = {"cpus": 0.1}


def step_spec(t: Training, number: int, sites: tuple[str, ...], privacy: dict[str, float] | None = None) -> JobSpec:
    """`privacy`: the clip and the noise each site adds (`training.privacy.site_noise`)."""
    body = t.spec.spec
    step = body.local_step
    config = {**step.config, "dataset": body.dataset, "round": number, "secure": body.aggregation.secure,
              "participants": sorted(sites)}
    if privacy:
        config["privacy"] = privacy
    if body.strategy.name == "fedprox":
        config["mu"] = body.strategy.mu
    entrypoint = (f"python -m training.runner step {step.entrypoint}" if FUNCTION_RE.match(step.entrypoint)
                  else step.entrypoint)
    env = {**step.runtime_env.get("env_vars", {}), "FEDCTL_TRAINING_ID": t.id, "FEDCTL_ROUND": str(number),
           "FEDCTL_TRAINING_CONFIG": json.dumps(config, sort_keys=True)}
    spec: dict[str, Any] = {
        "entrypoint": entrypoint, "runtime_env": {**step.runtime_env, "env_vars": env},
        "datasets": [body.dataset], "resources": step.resources.model_dump(mode="json", exclude_none=True),
        "topology": step.topology.model_dump(mode="json", exclude_none=True), "retry": {"limit": 0},
        "priority": body.priority, "queue": body.queue}
    if len(sites) > 1:
        spec["gang"] = {"parts": [{"name": s, "placement": {"sites": [s]}} for s in sites],
                        "timeout": body.round_timeout, "on_part_end": "continue"}
    else:
        spec["placement"] = {"sites": list(sites)}
    return _job(t, f"r{number}", spec)


def site_spec(t: Training, number: int, phase: str, site: str) -> JobSpec:
    """A secure round's small job at one site: `keys` or `reveal` (the agent does the work)."""
    return _job(t, f"r{number}-{phase}", {"entrypoint": f"python -m training.runner {phase}", "resources": SMALL,
                                         "runtime_env": {"env_vars": {"FEDCTL_TRAINING_ID": t.id}},
                                         "placement": {"sites": [site]}, "retry": {"limit": 0},
                                         "priority": t.spec.spec.priority, "queue": t.spec.spec.queue})


def aggregate_spec(t: Training, number: int, site: str, threshold: int) -> JobSpec:
    body = t.spec.spec
    config = {"strategy": body.strategy.model_dump(mode="json"), "secure": body.aggregation.secure,
              "threshold": threshold}
    return _job(t, f"r{number}-aggregate", {
        "entrypoint": "python -m training.runner aggregate",
        "runtime_env": {"env_vars": {"FEDCTL_TRAINING_ID": t.id, "FEDCTL_ROUND": str(number),
                                     "FEDCTL_TRAINING_CONFIG": json.dumps(config, sort_keys=True)}},
        "resources": body.aggregation.resources.model_dump(mode="json", exclude_none=True),
        "placement": {"sites": [site]}, "retry": {"limit": 0}, "priority": body.priority, "queue": body.queue})


def _job(t: Training, suffix: str, spec: dict[str, Any]) -> JobSpec:
    return job_from_dict({"metadata": {"name": f"{t.spec.metadata.name}-{suffix}", "tenant": t.tenant,
                                       "labels": {"fedctl.io/training": t.id}}, "spec": spec})
