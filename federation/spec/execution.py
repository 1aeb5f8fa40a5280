"""How a job's attempts start at a site: as a task of the site's long-lived runner (milliseconds),
or as a Ray job with a driver of its own (seconds, but Ray's whole Jobs API for work that uses Ray).
`spec.execution` says which; `auto` decides from the spec alone, so the federation (`fedctl explain`)
and the site agree without asking each other."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from federation.spec.job import JobSpec

TRAINING_LABEL = "fedctl.io/training"
NAMES_RAY = re.compile(r"(?<![\w.-])ray(?![\w-])", re.IGNORECASE)   # `ray job`, `import ray`, `ray.init()`


@dataclass(frozen=True)
class Execution:
    path: Literal["task", "driver"]
    why: str

    def __str__(self) -> str:
        return f"{self.path} ({self.why})"


def execution_of(spec: JobSpec) -> Execution:
    body = spec.spec
    if body.execution != "auto":
        return Execution(body.execution, "spec.execution")
    if NAMES_RAY.search(body.entrypoint):
        return Execution("driver", "its entrypoint names Ray: a Ray job with a driver of its own")
    if "FEDCTL_ARRAY_INDEX" in body.runtime_env.get("env_vars", {}):
        return Execution("task", "an array element, started as a task of the site's runner")
    if TRAINING_LABEL in spec.metadata.labels:
        return Execution("task", "a training's step, started as a task of the site's runner and run by a worker kept "
                                 "warm across rounds")
    return Execution("driver", "a single job runs as a Ray job; spec.execution: task starts it in milliseconds")
