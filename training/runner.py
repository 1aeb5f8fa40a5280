"""What the jobs of a federated training run at sites.

    python -m training.runner step MODULE:FUNCTION   # a participant's local step
    python -m training.runner aggregate              # the aggregator
    python -m training.runner reveal                 # secure, after losses: a survivor's part of recovery

A local step reads the global model (FEDCTL_INPUT_DIR/model.npz; none in the first round) and
its site's shard (FEDCTL_DATASET_<NAME>, a path that never leaves the site), calls
FUNCTION(model, path, config) -> (model, examples, metrics), and leaves in FEDCTL_OUTPUT_DIR
only `update.npz` (the trained parameters and the example count) and `metrics.json`. With secure
aggregation it leaves instead the masked vector `masked.npy`, which hides its update.

The aggregator reads every `update-<site>.npz` (or `masked-<site>.npy`, and the secrets the
survivors revealed for lost peers), the global model and the strategy's state, and leaves the
next `model.npz`, `state.npz` and `metrics.json`.
"""
from __future__ import annotations

import importlib
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from training import secagg
from training.strategies import Model, strategy, weighted_mean

COUNT = "__examples__"


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    path.write_bytes(buffer.getvalue())


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def flatten(model: Model) -> np.ndarray:
    return np.concatenate([model[k].ravel() for k in sorted(model)])


def unflatten(vector: np.ndarray, like: Model) -> Model:
    out, at = {}, 0
    for k in sorted(like):
        size = like[k].size
        out[k] = vector[at:at + size].reshape(like[k].shape)
        at += size
    return out


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"error: {name} is not set: run this as a job of a federated training")
    return value


def step(target: str) -> None:
    module, _, function = target.partition(":")
    fn = getattr(importlib.import_module(module), function)
    inbox, outbox = Path(_env("FEDCTL_INPUT_DIR")), Path(_env("FEDCTL_OUTPUT_DIR"))
    config = json.loads(os.environ.get("FEDCTL_TRAINING_CONFIG", "{}"))
    data = _env("FEDCTL_DATASET_" + config["dataset"].upper().replace("-", "_"))
    model = load_npz(inbox / "model.npz") if (inbox / "model.npz").exists() else None
    started = time.perf_counter()
    trained, examples, metrics = fn(model, data, config)
    metrics = {**metrics, "examples": int(examples), "compute_s": time.perf_counter() - started}
    if config.get("secure"):
        # n * parameters and n, masked: the aggregator learns only the sums, hence the weighted mean.
        secrets = {peer: bytes.fromhex(s) for peer, s in json.loads((inbox / "secrets.json").read_text()).items()}
        values = np.concatenate([flatten(trained) * examples, [float(examples)]])
        np.save(outbox / "masked.npy", secagg.masked(values, os.environ["FEDCTL_SITE"], secrets))
        save_npz(outbox / "shape.npz", {k: np.zeros(v.shape) for k, v in trained.items()})
    else:
        save_npz(outbox / "update.npz", {**trained, COUNT: np.array(float(examples))})
    (outbox / "metrics.json").write_text(json.dumps(metrics))
    print(f"local step at {os.environ.get('FEDCTL_SITE')}: {examples} examples, "
          + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))), flush=True)


def reveal() -> None:
    """Leave `revealed.json`: the secrets this site shares with each lost peer (lost.json), and no
    other. The lost peers' updates are not in the sum, so these reveal nothing of them."""
    inbox, outbox = Path(_env("FEDCTL_INPUT_DIR")), Path(_env("FEDCTL_OUTPUT_DIR"))
    me = _env("FEDCTL_SITE")
    lost = set(json.loads((inbox / "lost.json").read_text()))
    shared = json.loads((inbox / "secrets.json").read_text())
    revealed = {f"{me}|{peer}": secret for peer, secret in shared.items() if peer in lost and peer != me}
    (outbox / "revealed.json").write_text(json.dumps(revealed, sort_keys=True))
    print(f"revealed the masks {me} shared with {', '.join(sorted(lost)) or 'nobody'}", flush=True)


def aggregate() -> None:
    inbox, outbox = Path(_env("FEDCTL_INPUT_DIR")), Path(_env("FEDCTL_OUTPUT_DIR"))
    config = json.loads(os.environ.get("FEDCTL_TRAINING_CONFIG", "{}"))
    s = config.get("strategy", {"name": "fedavg"})
    agg = strategy(s["name"], **{k: v for k, v in s.items() if k != "name"})
    if (inbox / "state.npz").exists():
        agg.load(load_npz(inbox / "state.npz"))
    if config.get("secure"):
        inputs = {p.stem.removeprefix("masked-"): np.load(p) for p in sorted(inbox.glob("masked-*.npy"))}
        revealed = {tuple(k.split("|")): bytes.fromhex(v)
                    for k, v in json.loads((inbox / "revealed.json").read_text()).items()} \
            if (inbox / "revealed.json").exists() else {}
        total = secagg.unmasked_sum(inputs, revealed)
        shape = load_npz(inbox / "shape.npz")
        mean = unflatten(total[:-1] / total[-1], shape)
        sites, examples = sorted(inputs), float(total[-1])
    else:
        updates = {p.stem.removeprefix("update-"): load_npz(p) for p in sorted(inbox.glob("update-*.npz"))}
        pairs = [({k: v for k, v in u.items() if k != COUNT}, float(u[COUNT])) for u in updates.values()]
        mean = weighted_mean(pairs)
        sites, examples = sorted(updates), sum(n for _, n in pairs)
    current = load_npz(inbox / "model.npz") if (inbox / "model.npz").exists() else mean
    model = agg.aggregate(current, mean)
    save_npz(outbox / "model.npz", model)
    save_npz(outbox / "state.npz", agg.state() or {"none": np.zeros(0)})
    (outbox / "metrics.json").write_text(json.dumps({"sites": sites, "examples": examples}))
    print(f"aggregated {len(sites)} updates ({', '.join(sites)}) with {agg.name}", flush=True)


def main(argv: list[str]) -> None:
    if argv[:1] == ["step"] and len(argv) == 2 and ":" in argv[1]:
        step(argv[1])
    elif argv == ["aggregate"]:
        aggregate()
    elif argv == ["reveal"]:
        reveal()
    else:
        raise SystemExit(__doc__.split("\n\n")[1])


if __name__ == "__main__":
    main(sys.argv[1:])
