"""A dataset's privacy budget over the real API: trainings charge it at submission, what is
spent and held is reported, a training past it is refused, and one whose next round would take
the dataset past a budget lowered since is stopped before that round (a real gRPC server with
mTLS and a SQLite file; the site by hand)."""
from __future__ import annotations

import json

import pytest
import yaml

from federation.cli.main import main
from federation.client import Client, Training
from federation.errors import InvalidSpec, ResourceExhausted
from federation.identity import scopes
from federation.pki import issue
from federation.v1 import federation_pb2 as pb
from tests.integration.harness import CONFIGS, admin_client, register, site_stub, start
from tests.waiting import wait_for


def policy(tmp_path, epsilon: float):
    data = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    data["spec"]["datasets"]["patient-records-eu"]["privacy_budget"] = {"epsilon": epsilon, "delta": 1e-3}
    path = tmp_path / f"policy-{epsilon:g}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def private(name: str, epsilon: float, rounds: int = 3, **privacy) -> dict:
    return {"apiVersion": "federation/v1", "kind": "FederatedTraining",
            "metadata": {"name": name, "tenant": "research"},
            "spec": {"dataset": "patient-records-eu", "sites": {"min": 1}, "rounds": rounds,
                     "local_step": {"entrypoint": "training.examples.digits:local_step"},
                     "privacy": {"epsilon": epsilon, "clip": 1.0, **privacy}}}


def test_trainings_charge_the_datasets_budget_and_one_past_it_is_refused(tmp_path, capsys):
    server = start(tmp_path, policy(tmp_path, 10.0))
    stub, channel = site_stub(server)
    register(stub)
    try:
        with admin_client(server) as client:
            first = client.submit_training(private("first", 6.0))
            (row,) = client.privacy()
            assert (row["dataset"], row["budget_epsilon"], row["trainings"]) == ("patient-records-eu", 10.0, 1)
            assert row["spent_epsilon"] == 0.0 and 5.9 < row["held_epsilon"] <= 6.0, row
            with pytest.raises(ResourceExhausted, match=r"privacy budget of dataset patient-records-eu: second's 3 "
                                                        r"rounds needs epsilon 5.99 .* but 5.99 of 10 .* held by 1"):
                client.submit_training(private("second", 6.0))
            with pytest.raises(InvalidSpec, match=r"spec.privacy: 3 rounds at noise multiplier 0.5 spend epsilon "
                                                  r"\d+(\.\d+)?, above the 6 this training may spend"):
                client.submit_training(private("too-little-noise", 6.0, noise_multiplier=0.5))
            with pytest.raises(InvalidSpec, match="spec.privacy.epsilon: no noise multiplier up to 1000"):
                client.submit_training(private("impossible", 1e-4, rounds=100_000))
            assert [t.name for t in client.trainings()] == ["first"], "nothing stored of the refused"
            pki = server.pki
            flags = ["--address", server.address, "--ca", str(pki["ca"].cert), "--cert", str(pki["admin"].cert),
                     "--key", str(pki["admin"].key)]
            assert main(["usage", "--privacy", *flags]) == 0
            lines = capsys.readouterr().out.splitlines()
            assert lines[0].split() == ["DATASET", "BUDGET-EPSILON", "SPENT", "HELD", "LEFT", "TRAININGS"]
            assert lines[1].split() == ["patient-records-eu", "10", "0", "5.99", "4.01", "1"], lines
            assert main(["usage", "--privacy", "--format", "json", *flags]) == 0
            assert json.loads(capsys.readouterr().out)["privacy"] == client.privacy()
            first.cancel()   # it ran no round: it spent nothing, and holds nothing now
            (row,) = client.privacy()
            assert (row["spent_epsilon"], row["held_epsilon"]) == (0.0, 0.0)
            client.submit_training(private("second", 6.0))
        bob = issue(server.pki["ca"], tmp_path, "bob", units=tuple(scopes("submitter", ("billing",))))
        with Client(server.address, ca=server.pki["ca"].cert, cert=bob.cert, key=bob.key, timeout=5) as other:
            assert other.privacy() == [], "a tenant that may not use the dataset does not see its budget"
    finally:
        channel.close()
        server.stop(grace=0)


def test_a_training_is_stopped_before_the_round_that_would_exceed_a_lowered_budget(tmp_path):
    server = start(tmp_path, policy(tmp_path, 10.0))
    stub, channel = site_stub(server)
    register(stub)
    with admin_client(server) as client:
        client.cordon("eu-west")   # no round starts before the restart
        run = client.submit_training(private("lowered", 6.0))
        wait_for(lambda: "0 of at least 1 sites can take part" in Training(client, run.id).status().message, 10,
                 "the training to wait for a site")
    channel.close()
    server.stop(grace=0)
    # The operator lowers the budget below what one round spends, and restarts the federation.
    server = start(tmp_path, policy(tmp_path, 2.0), pki=server.pki)
    try:
        stub, channel = site_stub(server)
        register(stub)
        stub.Heartbeat(pb.HeartbeatRequest(name="eu-west"), timeout=5)
        with admin_client(server) as client:
            status = wait_for(lambda: (s := Training(client, run.id).status()).state == "failed" and s, 10,
                              "the training to stop")
            assert "stopped before round 1: privacy budget of dataset patient-records-eu: round 1" in status.message
            assert not status.history, "no round started"
            assert client.jobs(tenant="research") == [], "no job of it ran"
        channel.close()
    finally:
        server.stop(grace=0)
