"""Flower clients as local steps (`training.flower`), called as a SuperNode calls them: a client_fn
ClientApp gives the same update as the native step it wraps; a Message API app gets the global
model as an ArrayRecord and must say how many examples it used; through `training.runner` the
update leaves the step as a native one does."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from training import flower, runner
from training.examples import digits, digits_flower


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    return str(digits.write_shards(tmp_path_factory.mktemp("digits"), ["eu-west", "eu-north"])["eu-west"])


def test_only_flowers_own_objects_are_run_as_flower_apps():
    assert flower.is_flower(digits_flower.app)
    assert flower.is_flower(digits_flower.DigitsClient("x", 1))
    assert not flower.is_flower(digits.local_step)
    assert not flower.is_flower(digits_flower.DigitsClient)   # a class, not a client


def test_a_client_fn_app_gives_the_update_the_native_step_gives(shard, monkeypatch):
    monkeypatch.setenv("FEDCTL_SITE", "eu-west")
    config = {"epochs": 3, "round": 2, "participants": ["eu-north", "eu-west"]}
    first, n, _ = flower.local_step(digits_flower.app, None, shard, config)   # asks the app for its parameters
    native, m, _ = digits.local_step(None, shard, config)
    assert n == m and sorted(first) == ["p000", "p001"]
    assert np.allclose(first["p000"], native["b"]) and np.allclose(first["p001"], native["w"])
    model = {"b": native["b"], "w": native["w"]}
    again, _, got = flower.local_step(digits_flower.app, model, shard, config)
    expected, _, want = digits.local_step(model, shard, config)
    assert sorted(again) == ["b", "w"] and np.allclose(again["w"], expected["w"])
    assert got["accuracy"] == pytest.approx(want["accuracy"])


def test_a_numpy_client_instance_runs_as_its_app_would(shard):
    client = digits_flower.DigitsClient(shard, 1)
    trained, n, _ = flower.local_step(client, {"b": np.zeros(10), "w": np.zeros((64, 10))}, "unused", {"round": 1})
    assert trained["w"].shape == (64, 10) and n > 0


def message_api_app(seen: list) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context) -> Message:
        seen.append((dict(context.node_config), "arrays" in msg.content, dict(msg.content["config"])))
        arrays = msg.content["arrays"].to_numpy_ndarrays() if "arrays" in msg.content else [np.zeros(3)]
        content = RecordDict({"arrays": ArrayRecord([a + 1 for a in arrays]),
                              "metrics": MetricRecord({"num-examples": 7, "loss": 0.5})})
        return Message(content=content, reply_to=msg)
    return app


def test_a_message_api_app_gets_the_model_as_arrays_and_its_place_among_the_participants(monkeypatch):
    monkeypatch.setenv("FEDCTL_SITE", "eu-west")
    seen: list = []
    app = message_api_app(seen)
    config = {"round": 1, "epochs": 2, "participants": ["eu-north", "eu-west"], "nested": {"not": "sent"}}
    first, n, metrics = flower.local_step(app, None, "/data/eu-west.npz", config)
    assert n == 7 and metrics == {"loss": 0.5} and first["p000"].tolist() == [1, 1, 1]
    second, _, _ = flower.local_step(app, first, "/data/eu-west.npz", {**config, "round": 2})
    assert second["p000"].tolist() == [2, 2, 2]
    node, had_arrays, sent = seen[0]
    assert node == {"partition-id": 1, "num-partitions": 2, "data-path": "/data/eu-west.npz"}
    assert not had_arrays and seen[1][1]
    assert sent["epochs"] == 2 and "nested" not in sent


def test_a_message_api_app_that_does_not_say_its_examples_is_refused_with_why():
    app = ClientApp()

    @app.train()
    def train(msg: Message, context) -> Message:
        return Message(content=RecordDict({"arrays": ArrayRecord([np.zeros(2)])}), reply_to=msg)

    with pytest.raises(ValueError, match="num-examples"):
        flower.local_step(app, None, "x", {"round": 1})


def test_a_client_that_cannot_give_a_first_model_fails_the_step_with_why():
    class NoInit(NumPyClient):
        def fit(self, parameters, config):
            return parameters, 1, {}

    with pytest.raises(ValueError, match="get_parameters gave no arrays"):
        flower.local_step(NoInit(), None, "x", {"round": 1})
    with pytest.raises(ValueError, match="fit returned no parameters"):
        flower.local_step(NoInit(), {"w": np.zeros(0)}, "x", {"round": 2}) if False else \
            flower.local_step(type("Empty", (NumPyClient,), {"fit": lambda self, p, c: ([], 1, {})})(),
                              {"w": np.zeros(2)}, "x", {"round": 2})


def test_through_the_runner_a_flower_step_leaves_its_update_and_metrics(shard, tmp_path, monkeypatch):
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    outbox.mkdir()
    runner.save_npz(inbox / "model.npz", {"b": np.zeros(10), "w": np.zeros((64, 10))})
    monkeypatch.setattr(sys, "argv", ["runner"])
    monkeypatch.setenv("FEDCTL_INPUT_DIR", str(inbox))
    monkeypatch.setenv("FEDCTL_OUTPUT_DIR", str(outbox))
    monkeypatch.setenv("FEDCTL_DATASET_DIGITS", shard)
    monkeypatch.setenv("FEDCTL_TRAINING_CONFIG", json.dumps({"dataset": "digits", "round": 1, "epochs": 1}))
    assert runner.main(["step", "training.examples.digits_flower:app"]) == 0
    update = runner.load_npz(outbox / "update.npz")
    assert set(update) == {"b", "w", runner.COUNT} and update[runner.COUNT] > 0
    assert json.loads((outbox / "metrics.json").read_text())["examples"] == int(update[runner.COUNT])
