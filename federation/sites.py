"""Sites as the federation records them."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from policies.gpus import Inventory
from policies.pricing import Elastic, Pricing


class SiteState(str, Enum):
    READY = "ready"
    CORDONED = "cordoned"     # no new work; running work continues
    DRAINING = "draining"     # no new work; the operator wants it empty


@dataclass(frozen=True)
class DatasetRecord:
    name: str
    classification: str
    path: str = ""
    size: int = 0          # bytes; 0: not said


@dataclass(frozen=True)
class Capacity:
    cpus: float = 0.0
    memory: int = 0
    gpus: float = 0.0

    def __add__(self, other: Capacity) -> Capacity:
        return Capacity(self.cpus + other.cpus, self.memory + other.memory, self.gpus + other.gpus)


@dataclass(frozen=True)
class SiteRecord:
    name: str
    jurisdiction: str
    region: str
    labels: dict[str, str] = field(default_factory=dict)
    datasets: tuple[DatasetRecord, ...] = ()
    capacity: Capacity = Capacity()
    state: SiteState = SiteState.READY
    registered_at: float = 0.0
    last_heartbeat: float = 0.0
    inventory: Inventory = field(default_factory=Inventory)  # GPU topology; empty if none or not said
    autonomous: bool = False             # cut off, it keeps its work: nothing of it is re-placed
    agreement_key: str = ""              # hex X25519 public key, for secure aggregation
    agreement_proof: str = ""            # the key signed by the site (training.bonawitz.agreement_proof)
    pricing: Pricing | None = None       # what it costs; None: priced at zero
    elastic: Elastic | None = None       # the nodes its autoscaler may add, and how many are up

    def connected(self, now: float, timeout_s: float) -> bool:
        return now - self.last_heartbeat <= timeout_s
