"""A federated training and its rounds, as the federation stores them."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class TrainingState(str, Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self is not TrainingState.RUNNING


class RoundState(str, Enum):
    KEYS = "keys"                  # secure: each site makes and signs its keys for the round
    TRAINING = "training"          # local steps placed or running
    REVEALING = "revealing"        # secure: the survivors reveal their shares of the sites' masks
    AGGREGATING = "aggregating"    # the aggregator job holds the updates
    DONE = "done"
    FAILED = "failed"              # too few sites reported, or aggregation failed: the round starts again


@dataclass(frozen=True)
class Training:
    id: str
    tenant: str
    actor: str
    spec: Any                      # FederatedTrainingSpec
    state: TrainingState = TrainingState.RUNNING
    round: int = 0                 # rounds completed
    model_job: str = ""            # the aggregator job whose model.npz is the current global model
    message: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class Round:
    training_id: str
    number: int
    attempt: int = 1
    state: RoundState = RoundState.TRAINING
    participants: tuple[str, ...] = ()
    aggregator: str = ""
    steps: dict[str, str] = field(default_factory=dict)       # site -> local step job id
    aggregate_job: str = ""
    reveals: dict[str, str] = field(default_factory=dict)     # site -> reveal job id (secure)
    reported: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()
    bytes_moved: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0
    ended_at: float = 0.0
    keys: dict[str, str] = field(default_factory=dict)        # site -> keys job id (secure)
