"""Pure placement policy: no I/O, no clocks, no globals.

`schedule(snapshot, pending, now)` returns where each job goes, and for each
job it could not place, the reason at every site.
"""
from policies.explain import describe, verdicts
from policies.feasible import gpu_request, static_verdict
from policies.gpu_state import GpuState
from policies.gpus import Binding, GpuNode, GpuRequest, Inventory, Slot, check_binding
from policies.model import (
    BackfillSettings,
    ClassificationRule,
    DatasetInfo,
    Decision,
    Nomination,
    PendingJob,
    Reason,
    Reservation,
    Rules,
    SiteView,
    Unplaced,
    Verdict,
)
from policies.placement import schedule
from policies.snapshot import ScheduleResult, Snapshot
from policies.sovereignty import LOGS, expand_jurisdictions, kept_by, may_cross, sovereignty_verdict

__all__ = [
    "LOGS",
    "BackfillSettings",
    "Binding",
    "ClassificationRule",
    "DatasetInfo",
    "Decision",
    "GpuNode",
    "GpuRequest",
    "GpuState",
    "Inventory",
    "Nomination",
    "PendingJob",
    "Reason",
    "Reservation",
    "Rules",
    "ScheduleResult",
    "SiteView",
    "Slot",
    "Snapshot",
    "Unplaced",
    "Verdict",
    "check_binding",
    "describe",
    "expand_jurisdictions",
    "gpu_request",
    "kept_by",
    "may_cross",
    "schedule",
    "sovereignty_verdict",
    "static_verdict",
    "verdicts",
]
