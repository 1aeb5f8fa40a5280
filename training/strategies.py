"""Server-side aggregation of the sites' models: FedAvg, FedProx and FedAdam.

A model is a dict of named NumPy arrays. Every strategy turns the global model of a round and
the participants' models (with their example counts) into the next global model; FedAdam also
keeps optimizer state between rounds, which the aggregator stores beside the model.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np

Model = dict[str, np.ndarray]


def weighted_mean(updates: list[tuple[Model, float]]) -> Model:
    """The example-weighted mean of the participants' models (McMahan et al., 2017)."""
    if not updates:
        raise ValueError("no updates to aggregate")
    total = float(sum(n for _, n in updates))
    if total <= 0:
        raise ValueError("the participants reported no examples")
    names = updates[0][0].keys()
    for model, _ in updates[1:]:
        if model.keys() != names:
            raise ValueError(f"models disagree on their parameters: {sorted(names)} vs {sorted(model)}")
    first = updates[0][0]
    return {k: sum((m[k].astype(np.float64) * (n / total) for m, n in updates), np.zeros(first[k].shape))
            for k in names}


@dataclass
class FedAvg:
    name = "fedavg"

    def aggregate(self, global_model: Model, mean: Model) -> Model:
        return mean

    def state(self) -> Model:
        return {}

    def load(self, state: Mapping[str, np.ndarray]) -> None:
        pass


@dataclass
class FedProx(FedAvg):
    """FedAvg on the server; each site's local objective adds mu/2 * ||w - w_global||^2
    (Li et al., 2020), which `proximal_gradient` gives the local step."""

    mu: float = 0.01
    name = "fedprox"


def proximal_gradient(model: Model, global_model: Model, mu: float) -> Model:
    """The gradient of mu/2 * ||w - w_global||^2: added to the local loss's gradient."""
    return {k: mu * (model[k] - global_model[k]) for k in model}


@dataclass
class FedAdam:
    """Adam on the server over the pseudo-gradient (mean of the sites' models minus the global
    model), as in Reddi et al., "Adaptive Federated Optimization" (2021)."""

    lr: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    m: Model = field(default_factory=dict)
    v: Model = field(default_factory=dict)
    name = "fedadam"

    def aggregate(self, global_model: Model, mean: Model) -> Model:
        out = {}
        for k, w in global_model.items():
            delta = mean[k] - w
            m = self.beta1 * self.m.get(k, np.zeros_like(delta)) + (1 - self.beta1) * delta
            v = self.beta2 * self.v.get(k, np.zeros_like(delta)) + (1 - self.beta2) * delta * delta
            self.m[k], self.v[k] = m, v
            out[k] = w + self.lr * m / (np.sqrt(v) + self.tau)
        return out

    def state(self) -> Model:
        return {**{f"m/{k}": a for k, a in self.m.items()}, **{f"v/{k}": a for k, a in self.v.items()}}

    def load(self, state: Mapping[str, np.ndarray]) -> None:
        self.m = {k[2:]: np.asarray(a) for k, a in state.items() if k.startswith("m/")}
        self.v = {k[2:]: np.asarray(a) for k, a in state.items() if k.startswith("v/")}


STRATEGIES = {"fedavg": FedAvg, "fedprox": FedProx, "fedadam": FedAdam}


def strategy(name: str, **options: float) -> FedAvg | FedProx | FedAdam:
    """The named strategy with those of `options` it takes (a spec carries every strategy's)."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"strategy {name!r}: expected one of {', '.join(sorted(STRATEGIES))}") from None
    takes = {f.name for f in fields(cls) if isinstance(options.get(f.name), (int, float))}
    return cls(**{k: float(options[k]) for k in takes})
