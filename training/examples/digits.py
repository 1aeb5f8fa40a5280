"""Handwritten digits (scikit-learn's copy of the UCI set), split non-IID across sites, and a
softmax regression in NumPy trained on them: the local step of `configs/examples/digits-fedavg.yaml`.

    python -m training.examples.digits shards DIR SITE [SITE ...]   # write each site's shard and a test set
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

FEATURES, CLASSES = 64, 10


def load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    digits = load_digits()
    return digits.data.astype(np.float64) / 16.0, digits.target.astype(np.int64)


def split(sites: list[str], seed: int = 0, test_fraction: float = 0.2, skew: float = 0.8):
    """Per site (x, y), and a held-out (x, y). Non-IID: each site draws `skew` of its examples
    from its own few classes and the rest from all of them."""
    x, y = load()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    owner = {c: i % len(sites) for i, c in enumerate(range(CLASSES))}
    buckets: list[list[int]] = [[] for _ in sites]
    for i in train:
        home = owner[int(y[i])]
        buckets[home if rng.random() < skew else int(rng.integers(len(sites)))].append(int(i))
    shards = {s: (x[b], y[b]) for s, b in zip(sites, buckets)}
    return shards, (x[test], y[test])


def init() -> dict[str, np.ndarray]:
    return {"w": np.zeros((FEATURES, CLASSES)), "b": np.zeros(CLASSES)}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict(model: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return np.argmax(x @ model["w"] + model["b"], axis=1)


def accuracy(model: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(predict(model, x) == y))


def train(model: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, epochs: int = 5, lr: float = 0.5,
          batch: int = 32, mu: float = 0.0, seed: int = 0) -> tuple[dict[str, np.ndarray], float]:
    """Minibatch gradient descent on cross-entropy (+ mu/2 ||w - w0||^2 for FedProx); (model, loss)."""
    w, b = model["w"].copy(), model["b"].copy()
    w0, b0 = model["w"], model["b"]
    rng = np.random.default_rng(seed)
    onehot = np.eye(CLASSES)[y]
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            i = order[start:start + batch]
            p = _softmax(x[i] @ w + b)
            g = (p - onehot[i]) / len(i)
            w -= lr * (x[i].T @ g + mu * (w - w0))
            b -= lr * (g.sum(axis=0) + mu * (b - b0))
    p = _softmax(x @ w + b)
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
    return {"w": w, "b": b}, loss


def local_step(model: dict[str, np.ndarray] | None, data: str, config: dict) -> tuple[dict, int, dict]:
    """The federated local step: this site's shard (an .npz of x and y) trained from the global model."""
    with np.load(data) as shard:
        x, y = shard["x"], shard["y"]
    model = model or init()
    trained, loss = train(model, x, y, epochs=int(config.get("epochs", 5)), lr=float(config.get("lr", 0.5)),
                          mu=float(config.get("mu", 0.0)), seed=int(config.get("round", 0)))
    return trained, len(y), {"loss": loss, "accuracy": accuracy(trained, x, y)}


def write_shards(directory: Path, sites: list[str]) -> dict[str, Path]:
    """Each site's shard as DIR/SITE/digits.npz and the held-out set as DIR/test.npz."""
    shards, (tx, ty) = split(sites)
    paths = {}
    for site, (x, y) in shards.items():
        path = directory / site / "digits.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=x, y=y)
        paths[site] = path
    np.savez(directory / "test.npz", x=tx, y=ty)
    return paths


if __name__ == "__main__" and len(sys.argv) > 3 and sys.argv[1] == "shards":
    for site, path in write_shards(Path(sys.argv[2]), sys.argv[3:]).items():
        print(site, path)
