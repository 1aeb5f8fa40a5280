"""Pure placement policy: no I/O, no clocks, no globals.

`schedule(snapshot, pending, now)` returns where each job goes, and for each
job it could not place, the reason at every site.
"""
from policies.model import (
    ClassificationRule,
    DatasetInfo,
    Decision,
    PendingJob,
    Reason,
    Rules,
    ScheduleResult,
    SiteView,
    Snapshot,
    Unplaced,
    Verdict,
)
from policies.placement import describe, gpu_request, schedule, static_verdict, verdicts
from policies.sovereignty import expand_jurisdictions, sovereignty_verdict
from policies.topology import (
    Binding,
    GpuNode,
    GpuRequest,
    GpuState,
    Inventory,
    Slot,
    check_binding,
)

__all__ = [
    "ClassificationRule", "DatasetInfo", "Decision", "PendingJob", "Reason", "Rules", "ScheduleResult",
    "SiteView", "Snapshot", "Unplaced", "Verdict", "schedule", "sovereignty_verdict", "expand_jurisdictions",
    "describe", "static_verdict", "verdicts", "gpu_request", "Binding", "GpuNode", "GpuRequest", "GpuState",
    "Inventory", "Slot", "check_binding",
]
