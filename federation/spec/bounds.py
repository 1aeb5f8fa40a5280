"""How much each list and mapping of a job or training spec may hold, so every field is bounded on
its own and not only by the spec's size as a whole (64 KiB on the wire, 1 MiB as a file).

| field | at most |
| --- | --- |
| metadata.labels | 64 (keys of 63 characters, values of 253) |
| spec.datasets, spec.gang.parts and their datasets, each list of spec.dependencies | 64 |
| spec.placement.regions, .sites, .prefer; spec.aggregation.sites, .regions | 64 names of 253 characters |
| spec.resources.gpu_type | 16 models of 128 characters |
| spec.array | 4096 characters |
| runtime_env | 64 keys |
| runtime_env.env_vars | 256 variables, names of 256 characters, values of 32 KiB (1) |
| any list or mapping in runtime_env or local_step.config, at any depth | 256 entries; keys 256, strings 32 KiB |
| local_step.config | 64 keys, 16 KiB as JSON (it reaches each round's job as one variable) |

(1) The FEDCTL_* variables the federation sets for arrays, gangs and trainings are not counted.

Each refusal is one line naming the field, e.g. `spec.runtime_env: env_vars: at most 256 variables (got 300)`.
"""
from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field

MAX_LIST = 64            # names in a spec's own lists, labels, parts
MAX_NAME = 253           # a site or region name
MAX_GPU_TYPES = 16
MAX_ARRAY_TEXT = 4096
MAX_RUNTIME_ENV_KEYS = 64
MAX_ENV_VARS = 256
MAX_KEY = 256            # an environment variable's name, or any key inside runtime_env or config
MAX_VALUE = 32 << 10     # a string inside runtime_env or config, an environment variable's value
MAX_NESTED = 256         # any list or mapping inside runtime_env or config
MAX_CONFIG_KEYS = 64
MAX_CONFIG_BYTES = 16 << 10
FEDERATION_ENV = "FEDCTL_"   # variables the federation sets; not counted against MAX_ENV_VARS

SiteName = Annotated[str, Field(max_length=MAX_NAME)]
GpuType = Annotated[str, Field(max_length=128)]


def check_runtime_env(env: dict[str, Any]) -> None:
    """Raises ValueError naming the key inside runtime_env that is too big (its own keys are counted by
    the field's max_length)."""
    env_vars = env.get("env_vars", {})
    if not isinstance(env_vars, dict):
        raise ValueError("env_vars must be a mapping of names to strings")
    own = sum(1 for name in env_vars if not str(name).startswith(FEDERATION_ENV))
    if own > MAX_ENV_VARS:
        raise ValueError(f"env_vars: at most {MAX_ENV_VARS} variables (got {own})")
    for name, value in env_vars.items():
        if not 1 <= len(str(name)) <= MAX_KEY:
            raise ValueError(f"env_vars: a name of {len(str(name))} characters; 1 to {MAX_KEY}")
        if isinstance(value, (dict, list)):
            raise ValueError(f"env_vars.{name}: must be a string")
        check_nested(value, f"env_vars.{name}")
    check_nested({key: value for key, value in env.items() if key != "env_vars"}, "")


def check_config(config: dict[str, Any]) -> None:
    if len(config) > MAX_CONFIG_KEYS:
        raise ValueError(f"at most {MAX_CONFIG_KEYS} keys (got {len(config)})")
    check_nested(config, "")
    size = len(json.dumps(config, default=str))
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"{size / 1024:.0f} KiB as JSON; at most {MAX_CONFIG_BYTES >> 10} KiB "
                         "(large data belongs in datasets)")


def check_nested(value: Any, path: str) -> None:
    """Every list and mapping inside `value` of at most MAX_NESTED entries, keys of MAX_KEY characters
    and strings of MAX_VALUE; raises ValueError naming the path (dotted keys, [index])."""
    if isinstance(value, str):
        if len(value) > MAX_VALUE:
            raise ValueError(_at(path, f"a string of {len(value) / 1024:.1f} KiB; at most {MAX_VALUE >> 10} KiB"))
        return
    if isinstance(value, dict):
        items: list[tuple[str, Any]] = [(f"{path}.{k}" if path else str(k), v) for k, v in value.items()]
        long = next((k for k in value if len(str(k)) > MAX_KEY), None)
        if long is not None:
            raise ValueError(_at(path, f"a key of {len(str(long))} characters; at most {MAX_KEY}"))
    elif isinstance(value, list):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    else:
        return
    if len(items) > MAX_NESTED:
        raise ValueError(_at(path, f"at most {MAX_NESTED} entries (got {len(items)})"))
    for where, item in items:
        check_nested(item, where)


def _at(path: str, message: str) -> str:
    return f"{path}: {message}" if path else message
