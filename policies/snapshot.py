"""What one scheduling cycle reads (`Snapshot`) and returns (`ScheduleResult`)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from policies.fairshare import Queues
from policies.gpu_state import GpuState
from policies.model import (
    BackfillSettings,
    DatasetInfo,
    Decision,
    Nomination,
    Reservation,
    Rules,
    SiteView,
    Unplaced,
)
from policies.preemption import Preemption, Running, Settings


@dataclass(frozen=True, slots=True)
class Snapshot:
    sites: tuple[SiteView, ...]
    catalog: Mapping[str, DatasetInfo]
    rules: Rules
    gpus: GpuState | None = None  # GPU topology with live reservations taken; None: from SiteView totals
    queues: Queues | None = None  # fair-share queues and their usage; None: one queue for everyone
    running: tuple[Running, ...] = ()  # live attempts, for preemption
    preemption: Settings | None = None  # None: never preempt
    backfill: BackfillSettings | None = None  # None: no reservations
    nominated: tuple[Nomination, ...] = ()   # capacity freed by preemption, held for the job it was freed for


@dataclass(frozen=True, slots=True)
class ScheduleResult:
    decisions: tuple[Decision, ...]
    unplaced: tuple[Unplaced, ...]
    deferred: int = 0          # of the unplaced, those behind the cycle's placement limit, not tried
    preemptions: tuple[Preemption, ...] = ()   # running attempts to stop so that waiting jobs can start
    making_room: Mapping[str, str] = field(default_factory=dict)  # waiting job -> site where work stops for it
    reservations: tuple[Reservation, ...] = ()   # where and from when the first blocked jobs start
