"""The federation control plane and its Python SDK.

`from federation import Client` is all most users need; the rest is imported lazily
so the SDK stays light.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from federation.client import Client, Job, JobArray
    from federation.results import JobStatus, Placement, SiteInfo
    from federation.spec import JobSpec

__all__ = ["Client", "Job", "JobArray", "JobSpec", "JobStatus", "Placement", "SiteInfo"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "Job", "JobArray"):
        from federation import client
        return getattr(client, name)
    if name in ("JobStatus", "Placement", "SiteInfo"):
        from federation import results
        return getattr(results, name)
    if name == "JobSpec":
        from federation.spec import JobSpec
        return JobSpec
    raise AttributeError(name)
