"""A site that lets a dataset out only as secure-aggregated training updates (`veto.secure_training`):
whatever a hostile federation asks, its agent runs nothing else on that dataset."""
from __future__ import annotations

import pytest

from federation.spec.site import Veto
from federation.v1 import federation_pb2 as pb
from site_agent.reconciler import Reconciler
from site_agent.veto import veto_reason
from tests.conftest import make_spec
from tests.unit.test_reconciler import MemoryRay, assignment, site_config

STEP = "python -m training.runner step training.examples.digits:local_step"
SECURE_ONLY = {"secure_training": {"datasets": ["patients"], "steps": ["training.examples.digits:local_step"]}}



@pytest.mark.parametrize("spec, reason", [
    # a dataset let out only as secure-aggregated updates, whatever a hostile federation asks
    ({"datasets": ["patients"], "entrypoint": "cat $FEDCTL_DATASET_PATIENTS"},
     "dataset patients leaves this site only as a secure-aggregated training update: entrypoint 'cat"),
    ({"datasets": ["patients"], "entrypoint": "python -m training.runner step os:system"},
     "entrypoint 'python -m training.runner step os:system' is not one of its allowed steps"),
    ({"datasets": ["patients"], "entrypoint": STEP, "runtime_env": {"working_dir": "."}},
     "a step brings no runtime_env of its own"),
    ({"datasets": ["patients"], "entrypoint": STEP, "runtime_env": {"env_vars": {"PYTHONPATH": "/tmp"}}},
     "a step brings no runtime_env of its own"),
    ({"datasets": ["patients"], "entrypoint": STEP, "runtime_env": {"env_vars": {
        "FEDCTL_TRAINING_CONFIG": '{"secure": false}'}}}, "the step is not masked by secure aggregation"),
    ({"datasets": ["patients"], "entrypoint": STEP, "runtime_env": {"env_vars": {
        "FEDCTL_TRAINING_CONFIG": '{"secure": true}'}}}, "the step is not masked by secure aggregation"),
])
def test_anything_but_a_secure_step_on_the_dataset_is_refused_and_never_submitted(tmp_path, spec, reason):
    ray = MemoryRay()
    r = Reconciler(site_config(tmp_path, **SECURE_ONLY), ray)
    r.set_desired([assignment(**spec)])
    (status,) = r.reconcile().statuses
    assert status.state == pb.ATTEMPT_STATE_REJECTED and reason in status.message
    assert ray.submitted == []


def test_a_secure_step_by_an_allowed_function_passes_a_secure_only_dataset():
    spec = make_spec(datasets=["patients"], entrypoint=STEP, runtime_env={"env_vars": {
        "FEDCTL_TRAINING_ID": "t-1", "FEDCTL_ROUND": "2", "FEDCTL_TRAINING_CONFIG": '{"secure": true, "round": 2}',
        "FEDCTL_GANG_ID": "j-1", "FEDCTL_GANG_PART": "eu-west", "FEDCTL_GANG_SIZE": "3"}})
    veto = Veto(**SECURE_ONLY)
    assert veto_reason(spec, veto, {"patients": "gdpr-personal"}, ["model.npz", "secagg-setups.json"]) is None
    assert "not masked" in veto_reason(spec, veto, {"patients": "gdpr-personal"}, ["model.npz"])
    other = make_spec(datasets=["open-weather"], entrypoint="cat x")
    assert veto_reason(other, veto, {"patients": "gdpr-personal"}) is None, "other datasets are not held to it"
