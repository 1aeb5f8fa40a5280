"""The digits example's local step written as Flower code: a NumPyClient in a ClientApp, as a team
coming from Flower has it. A federation runs it unchanged (`training.flower`):

    local_step: {entrypoint: "training.examples.digits_flower:app", config: {epochs: 5}}

It reads its site's shard from `node_config["data-path"]`, as a Flower SuperNode would be given it
with `--node-config`. Needs `flwr` (`pip install fedctl[flower]`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Context
from flwr.client import Client, ClientApp, NumPyClient

from training.examples import digits


class DigitsClient(NumPyClient):
    def __init__(self, path: str, epochs: int) -> None:
        self.path, self.epochs = path, epochs

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        model = digits.init()
        return [model["b"], model["w"]]

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        model = {"b": parameters[0], "w": parameters[1]}
        trained, examples, metrics = digits.local_step(model, self.path, {"epochs": self.epochs,
                                                                          "round": int(config.get("round", 0))})
        return [trained["b"], trained["w"]], examples, metrics


def client_fn(context: Context) -> Client:
    return DigitsClient(str(context.node_config["data-path"]), int(context.run_config.get("epochs", 5))).to_client()


app = ClientApp(client_fn=client_fn)
