"""Every list and mapping of a job or training spec is bounded on its own (federation.spec.bounds), and
a spec past a bound is refused in one line naming the field."""
from __future__ import annotations

import pytest

from federation.errors import InvalidSpec
from federation.spec import job_from_dict, training_from_dict
from tests.conftest import make_spec


def job(metadata=None, **body):
    body.setdefault("entrypoint", "echo hi")
    return job_from_dict({"metadata": {"name": "j", **(metadata or {})}, "spec": body})


def training(**step):
    step.setdefault("entrypoint", "training.examples:step")
    return training_from_dict({"metadata": {"name": "t"}, "spec": {"dataset": "d", "rounds": 1, "local_step": step}})


def env(n: int, prefix: str = "V") -> dict[str, str]:
    return {f"{prefix}{i}": "1" for i in range(n)}


TOO_BIG = [
    (lambda: job({"labels": {f"k{i}": "v" for i in range(65)}}), "metadata.labels: at most 64 entries (got 65)"),
    (lambda: job(datasets=[f"d{i}" for i in range(65)]), "spec.datasets: at most 64 entries (got 65)"),
    (lambda: job(placement={"regions": ["eu"] * 65}), "spec.placement.regions: at most 64 entries (got 65)"),
    (lambda: job(placement={"sites": ["s"] * 65}), "spec.placement.sites: at most 64 entries"),
    (lambda: job(placement={"prefer": ["s"] * 65}), "spec.placement.prefer: at most 64 entries"),
    (lambda: job(placement={"sites": ["s" * 254]}), "spec.placement.sites[0]: String should have at most 253"),
    (lambda: job(resources={"gpus": 1, "gpu_type": ["H100"] * 17}), "spec.resources.gpu_type: at most 16 entries"),
    (lambda: job(dependencies={"after_any": ["j-1a2b3c4d"] * 65}), "spec.dependencies.after_any: at most 64 entries"),
    (lambda: job(gang={"parts": [{"name": f"p{i}"} for i in range(65)]}), "spec.gang.parts: at most 64 entries"),
    (lambda: job(gang={"parts": [{"name": "a", "datasets": ["d"] * 65}, {"name": "b"}]}),
     "spec.gang.parts[0].datasets: at most 64 entries"),
    (lambda: job(array="1," * 2100), "spec.array: String should have at most 4096 characters"),
    (lambda: job(runtime_env=env(65)), "spec.runtime_env: at most 64 entries (got 65)"),
    (lambda: job(runtime_env={"env_vars": env(257)}), "spec.runtime_env: env_vars: at most 256 variables (got 257)"),
    (lambda: job(runtime_env={"env_vars": {"N" * 257: "1"}}), "spec.runtime_env: env_vars: a name of 257 characters"),
    (lambda: job(runtime_env={"env_vars": {"BLOB": "x" * (32 * 1024 + 1)}}),
     "spec.runtime_env: env_vars.BLOB: a string of 32.0 KiB; at most 32 KiB"),
    (lambda: job(runtime_env={"env_vars": {"LIST": ["a"]}}), "spec.runtime_env: env_vars.LIST: must be a string"),
    (lambda: job(runtime_env={"pip": ["numpy"] * 257}), "spec.runtime_env: pip: at most 256 entries (got 257)"),
    (lambda: job(runtime_env={"config": {"deep": {"list": list(range(300))}}}),
     "spec.runtime_env: config.deep.list: at most 256 entries (got 300)"),
    (lambda: job(runtime_env={"config": {"k" * 257: 1}}), "spec.runtime_env: config: a key of 257 characters"),
    (lambda: training(runtime_env={"env_vars": env(257)}),
     "spec.local_step.runtime_env: env_vars: at most 256 variables"),
    (lambda: training(config=env(65)), "spec.local_step.config: at most 64 entries (got 65)"),
    (lambda: training(config={"blob": "x" * 20_000}), "spec.local_step.config: 20 KiB as JSON; at most 16 KiB"),
    (lambda: training(config={"l": list(range(257))}), "spec.local_step.config: l: at most 256 entries (got 257)"),
]


@pytest.mark.parametrize("make, message", TOO_BIG, ids=[m for _, m in TOO_BIG])
def test_a_spec_past_a_bound_is_refused_naming_the_field(make, message):
    with pytest.raises(InvalidSpec) as e:
        make()
    assert e.value.message.startswith(f"<spec>: {message}"), e.value.message
    assert "\n" not in e.value.message


def test_specs_at_the_bounds_are_accepted():
    spec = job({"labels": {f"k{i}": "v" for i in range(64)}}, datasets=[f"d{i}" for i in range(64)],
               placement={"regions": ["eu"] * 64}, runtime_env={"env_vars": env(256), "pip": ["numpy"] * 256})
    assert len(spec.spec.runtime_env["env_vars"]) == 256
    assert job(runtime_env={"env_vars": {"BLOB": "x" * (32 * 1024)}})
    assert training(config={"blob": "x" * 16_000}).spec.local_step.config


def test_the_federations_own_variables_are_not_counted():
    """An array element, a gang part or a training round adds FEDCTL_* variables to the job's own 256."""
    spec = make_spec(runtime_env={"env_vars": {**env(256), **env(8, "FEDCTL_X")}})
    assert len(spec.spec.runtime_env["env_vars"]) == 264
