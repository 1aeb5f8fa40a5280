"""What the jobs of a federated training run at sites.

    python -m training.runner step MODULE:FUNCTION   # a participant's local step
    python -m training.runner aggregate              # the aggregator
    python -m training.runner keys                   # secure: a participant's signed keys for a round
    python -m training.runner reveal                 # secure: a survivor's shares for the aggregator

A local step reads the global model (FEDCTL_INPUT_DIR/model.npz; none in the first round) and
its site's shard (FEDCTL_DATASET_<NAME>, a path that never leaves the site), calls
FUNCTION(model, path, config) -> (model, examples, metrics) (or runs a Flower client there,
`training.flower`), and leaves in FEDCTL_OUTPUT_DIR
only `update.npz` (the trained parameters and the example count) and `metrics.json`. With secure
aggregation it leaves instead the masked vector `masked.npy`, which hides its update, and the
site's signed report. The site agent did the protocol's part before the job started
(`site_agent.secure`): `keys` and `reveal` only hand on what it left in the input folder.

The aggregator reads every `update-<site>.npz` (or `masked-<site>.npy`, the round's signed keys
and the survivors' shares), the global model and the strategy's state, and leaves the next
`model.npz`, `state.npz` and `metrics.json`.
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

from training import flower
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
    if flower.is_flower(fn):
        trained, examples, metrics = flower.local_step(fn, model, data, config)
    else:
        trained, examples, metrics = fn(model, data, config)
    metrics = {**metrics, "examples": int(examples), "compute_s": time.perf_counter() - started}
    weight = float(examples)
    if config.get("privacy"):
        # Clipped and noised here, before anything leaves the site; each site weighs the same, so
        # that one site's whole contribution to the mean is bounded by the clip.
        trained, weight = private(trained, model, config["privacy"]), 1.0
    if config.get("secure"):
        # n * parameters and n, masked: the aggregator learns only the sums, hence the weighted mean.
        from training import secagg  # here: a plain step does not pay for the cryptography's import
        masks = json.loads((inbox / "secrets.json").read_text())
        pairs = {peer: bytes.fromhex(s) for peer, s in masks["pairs"].items()}
        values = np.concatenate([flatten(trained) * weight, [weight]])
        np.save(outbox / "masked.npy", secagg.masked(values, os.environ["FEDCTL_SITE"], pairs,
                                                     bytes.fromhex(masks["seed"])))
        save_npz(outbox / "shape.npz", {k: np.zeros(v.shape) for k, v in trained.items()})
        hand_on(inbox, outbox, "secagg-report.json")
    else:
        save_npz(outbox / "update.npz", {**trained, COUNT: np.array(weight)})
    (outbox / "metrics.json").write_text(json.dumps(metrics))
    print(f"local step at {os.environ.get('FEDCTL_SITE')}: {examples} examples, "
          + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))), flush=True)


def private(trained: Model, model: Model | None, settings: dict) -> Model:
    """The trained model moved from the global one (zeros in the first round) by at most the clip,
    plus this site's share of the round's Gaussian noise (`training.privacy`)."""
    from training.privacy import privatise
    reference = flatten(model) if model is not None else np.zeros_like(flatten(trained))
    moved = privatise(flatten(trained), reference, float(settings["clip"]), float(settings["noise_std"]),
                      np.random.default_rng())
    return unflatten(moved, trained)


def hand_on(inbox: Path, outbox: Path, name: str) -> None:
    """Pass on a file the site agent made for this job (signed by the site, not by the job)."""
    (outbox / name).write_bytes((inbox / name).read_bytes())
    print(f"handed on {name} at {os.environ.get('FEDCTL_SITE')}", flush=True)


def aggregate() -> None:
    inbox, outbox = Path(_env("FEDCTL_INPUT_DIR")), Path(_env("FEDCTL_OUTPUT_DIR"))
    config = json.loads(os.environ.get("FEDCTL_TRAINING_CONFIG", "{}"))
    s = config.get("strategy", {"name": "fedavg"})
    agg = strategy(s["name"], **{k: v for k, v in s.items() if k != "name"})
    if (inbox / "state.npz").exists():
        agg.load(load_npz(inbox / "state.npz"))
    if config.get("secure"):
        from training import bonawitz, secagg
        inputs = {p.stem.removeprefix("masked-"): np.load(p) for p in sorted(inbox.glob("masked-*.npy"))}
        revealed = [json.loads(p.read_text()) for p in sorted(inbox.glob("revealed-*.json"))]
        setups = json.loads((inbox / "round-keys.json").read_text())
        total = secagg.decode(bonawitz.unmask(inputs, setups, revealed, int(config["threshold"])))
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


def main(argv: list[str]) -> int:
    """One job; with FEDCTL_WARM_SOCKET, one per attempt its site hands over (`site_agent.warm`)."""
    warm_key = os.environ.pop("FEDCTL_WARM_SOCKET", "")
    if warm_key:
        from site_agent import warm
        return warm.serve(warm_key, lambda: run(argv))
    return run(argv)


def run(argv: list[str]) -> int:
    if argv[:1] == ["step"] and len(argv) == 2 and ":" in argv[1]:
        step(argv[1])
    elif argv == ["aggregate"]:
        aggregate()
    elif argv == ["keys"]:
        hand_on(Path(_env("FEDCTL_INPUT_DIR")), Path(_env("FEDCTL_OUTPUT_DIR")), "secagg-setup.json")
    elif argv == ["reveal"]:
        hand_on(Path(_env("FEDCTL_INPUT_DIR")), Path(_env("FEDCTL_OUTPUT_DIR")), "secagg-revealed.json")
    else:
        raise SystemExit(__doc__.split("\n\n")[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
