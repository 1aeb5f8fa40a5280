"""The control plane, one job a module: trust, admission, site lifecycle, site reports, read views,
and the scheduling cycle. `ControlPlane` is the facade the servicers hold."""
from __future__ import annotations

from federation.control.plane import ControlPlane
from federation.control.reports import AttemptReport, LogChunk, Output
from federation.control.views import QueuedJob, QueueState, SiteStatus

__all__ = ["AttemptReport", "ControlPlane", "LogChunk", "Output", "QueueState", "QueuedJob", "SiteStatus"]
