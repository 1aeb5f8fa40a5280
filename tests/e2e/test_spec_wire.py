"""A training's local_step.config reaches the step on a real Ray site as the user wrote it."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_a_local_step_gets_its_config_with_integers_still_integers(client):
    run = client.submit_training({
        "apiVersion": "federation/v1", "kind": "FederatedTraining", "metadata": {"name": "typed", "tenant": "e2e"},
        "spec": {"dataset": "patient-records-eu", "sites": {"min": 1}, "rounds": 1, "round_timeout": "90s",
                 "local_step": {"entrypoint": "typed_step:local_step", "runtime_env": {"working_dir": "./jobs"},
                                "config": {"epochs": 2}, "resources": {"cpus": 0.5}},
                 "aggregation": {"resources": {"cpus": 0.5}}}})
    final = run.wait(timeout=180)
    assert final.state == "succeeded", final.message
    assert run.model()["w"].tolist() == [2.0, 2.0, 2.0]
