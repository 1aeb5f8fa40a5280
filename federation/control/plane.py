"""The control plane: its parts over one store, policy, clock and change signal. Servicers and the
scheduling loop call the part that does the job (`control.trust.enroll(...)`, `control.cycle.run_once()`)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from federation.audit import Signer
from federation.changes import Changes
from federation.control.admission import Admission
from federation.control.core import Core
from federation.control.cycle import Cycle
from federation.control.refusals import Refusals
from federation.control.reports import Reports
from federation.control.sites import Sites
from federation.control.trust import Trust
from federation.control.views import Views
from federation.observe.audit_watch import AuditWatch
from federation.spec import PolicyConfig
from federation.spec.server import BACKFILL_DEPTH
from federation.store import Store


class ControlPlane:
    def __init__(self, store: Store, policy: PolicyConfig, *, site_timeout_s: float = 30.0,
                 max_placements: int | None = None, backfill_depth: int = BACKFILL_DEPTH, signer: Signer | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.core = Core(store, policy, site_timeout_s=site_timeout_s, signer=signer, clock=clock)
        self.trust = Trust(self.core)            # tokens, enrolment, renewal, revocation
        self.admission = Admission(self.core)    # submit, cancel, drain
        self.sites = Sites(self.core)            # register, heartbeat, state, leases, desired work, inputs
        self.reports = Reports(self.core)        # what sites report about their attempts
        self.views = Views(self.core)            # read views
        self.cycle = Cycle(self.core, self.sites, max_placements, backfill_depth)
        self.audit_watch = AuditWatch(signer)

    def begin_term(self) -> None:
        """This replica leads from now (`federation.replication`): leases count from now, and what
        the last leader changed (revocations, drain) is read again."""
        self.core.begin_term()
        self.trust.reload()
        self.admission.reload()

    @property
    def store(self) -> Store:
        return self.core.store

    @property
    def changes(self) -> Changes:
        return self.core.changes

    @property
    def clock(self) -> Callable[[], float]:
        return self.core.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self.core.clock = clock

    @property
    def refusals(self) -> Refusals:
        return self.core.refusals

    def record(self, actor: str, action: str, subject: str, **detail: Any) -> None:
        self.core.record(actor, action, subject, **detail)

    def refuse(self, actor: str, action: str, subject: str, kind: str, **detail: Any) -> None:
        """Audit a refusal, counted with its like (see `federation.control.refusals`)."""
        self.core.refusals.refuse(actor, action, subject, kind, **detail)
