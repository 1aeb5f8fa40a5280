"""A federated training's local step that needs its config as the user wrote it: `range` of a
float fails, so `epochs: 2` must arrive as the integer 2."""
from __future__ import annotations

from typing import Any

import numpy as np


def local_step(model: dict[str, np.ndarray] | None, data: str, config: dict[str, Any]) -> tuple[dict, int, dict]:
    assert isinstance(config["epochs"], int), f"epochs arrived as {config['epochs']!r}"
    with open(data) as f:
        rows = sum(1 for _ in f)
    weights = np.zeros(3) if model is None else model["w"]
    for _ in range(config["epochs"]):
        weights = weights + 1.0
    return {"w": weights}, rows, {"epochs": config["epochs"]}
