"""The user's spec on the wire: one pydantic-written JSON document, read back exactly."""
from __future__ import annotations

import json
from typing import Any

import pytest

from federation import results
from federation.errors import InvalidSpec
from federation.service import wire
from federation.service.spec_wire import (
    spec_from_pb,
    spec_to_pb,
    training_spec_from_pb,
    training_spec_to_pb,
)
from federation.spec import job_from_dict, training_from_dict
from federation.v1 import federation_pb2 as pb

RUNTIME_ENV = {"env_vars": {"A": "1"}, "pip": ["numpy==2.1"],
               "config": {"setup_timeout_seconds": 600, "eager_install": True, "ratio": 0.5, "none": None,
                          "nested": {"levels": [1, 2.0, False, "x", {"deep": 3}]}}}


def typed(value: Any) -> Any:
    """The value with every leaf paired with its type: 2, 2.0 and True compare apart."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def test_a_job_spec_crosses_the_wire_unchanged_types_included():
    spec = job_from_dict({"metadata": {"name": "j", "tenant": "research", "labels": {"team": "nlp", "n": "3"}},
                          "spec": {"entrypoint": "python x.py", "runtime_env": RUNTIME_ENV,
                                   "resources": {"cpus": 2, "memory": "4Gi", "gpus": 1, "gpu_type": ["H100"]},
                                   "gang": {"timeout": "30s", "parts": [{"name": "a", "datasets": []}, {"name": "b"}]},
                                   "retry": {"limit": 2, "backoff": "10s"}, "checkpoint": {"path": "/c/{job_id}"},
                                   "dependencies": {"after_ok": ["j-000000000001"]}}})
    back = spec_from_pb(pb.JobSpec.FromString(spec_to_pb(spec).SerializeToString()))
    assert back == spec
    assert typed(back.spec.runtime_env) == typed(RUNTIME_ENV)
    assert back.metadata.labels == {"team": "nlp", "n": "3"}


def test_a_training_spec_crosses_the_wire_unchanged_types_included():
    config = {"epochs": 2, "batch_size": 32, "lr": 0.1, "shuffle": True, "layers": [64, 32]}
    spec = training_from_dict({"apiVersion": "federation/v1", "kind": "FederatedTraining",
                               "metadata": {"name": "t", "labels": {"k": "v"}},
                               "spec": {"dataset": "d", "rounds": 3, "sites": {"min": 1, "max": 4},
                                        "local_step": {"entrypoint": "m:f", "runtime_env": RUNTIME_ENV,
                                                       "config": config},
                                        "strategy": {"name": "fedprox", "mu": 0.2}, "round_timeout": "2m"}})
    back = training_spec_from_pb(pb.TrainingSpec.FromString(training_spec_to_pb(spec).SerializeToString()))
    assert back == spec
    assert typed(back.spec.local_step.config) == typed(config)
    assert typed(back.spec.local_step.runtime_env) == typed(RUNTIME_ENV)


@pytest.mark.parametrize(("document", "error"), [
    ("", "request: metadata: required field is missing"),
    ("{not json", "request: the spec is not a JSON document"),
    ("[1, 2]", "request: expected a mapping"),
    ('{"kind": "FederatedTraining", "metadata": {"name": "x"}, "spec": {"entrypoint": "e"}}',
     "request: kind: expected 'Job'"),
    ('{"metadata": {"name": "x"}, "spec": {"entrypoint": "e", "runtim_env": {}}}',
     "request: spec.runtim_env: unknown field 'runtim_env' (did you mean 'runtime_env'?)"),
    # what JSON can say but a stored spec cannot hold
    ('{"metadata": {"name": "x"}, "spec": {"entrypoint": "e", "runtime_env": {"config": {"a": NaN}}}}',
     "request: the spec is not a JSON document: NaN is not a number a spec may hold"),
    ('{"metadata": {"name": "x"}, "spec": {"entrypoint": "e", "retry": {"backoff": Infinity}}}',
     "request: the spec is not a JSON document: Infinity is not a number a spec may hold"),
    ('{"metadata": {"name": "x"}, "spec": {"entrypoint": "e", "resources": {"cpus": 1e400}}}',
     "request: the spec is not a JSON document: 1e400 is out of range"),
    ('{"metadata": {"name": "x"}, "spec": {"entrypoint": "e", "resources": {"memory": 1' + "0" * 30 + '}}}',
     "request: spec.resources.memory: 1000000000000000000000000000000... does not fit in 64 bits"),
    ('{"metadata": {"name": "x"}, "spec": {"entrypoint": "e", "runtime_env": {"config": ' + '{"a": ' * 40
     + "1" + "}" * 40 + "}}}", "request: spec.runtime_env.config.a.a."),
    ('{"metadata": {"name": "x"}, "spec": {"entrypoint": "e", "resources": {"memory": "' + "9" * 400 + 'Gi"}}}',
     "request: spec.resources.memory: '9999"),
])
def test_a_bad_spec_from_the_wire_is_refused_naming_where(document, error):
    with pytest.raises(InvalidSpec) as e:
        spec_from_pb(pb.JobSpec(json=document))
    assert e.value.message.startswith(error)


def test_the_sdk_reads_states_as_the_domain_names_them():
    for sdk, domain in ((results.JOB_STATES, wire.JOB_STATE_TO_PB), (results.ATTEMPT_STATES, wire.ATTEMPT_STATE_TO_PB),
                        (results.SITE_STATES, wire.SITE_STATE_TO_PB),
                        (results.TRAINING_STATES, wire.TRAINING_STATE_TO_PB),
                        (results.ROUND_STATES, wire.ROUND_STATE_TO_PB)):
        assert {sdk[number]: state.value for state, number in domain.items()} == {s.value: s.value for s in domain}


def test_a_spec_nested_too_deep_is_refused_at_the_level_it_crosses():
    nested: dict[str, Any] = {}
    for _ in range(40):
        nested = {"a": nested}
    doc = {"metadata": {"name": "x"}, "spec": {"entrypoint": "e", "runtime_env": {"config": nested}}}
    with pytest.raises(InvalidSpec, match=r"^request: spec\.runtime_env\.config(\.a){30}: nested more than 32 levels"):
        spec_from_pb(pb.JobSpec(json=json.dumps(doc)))
