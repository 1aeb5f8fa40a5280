"""`kind: Federation`: the federation server's listener, store, policy, TLS and enrolment."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from federation.spec.common import API_VERSION, Strict
from federation.spec.metrics import MetricsSettings


class ServerTLS(Strict):
    cert: Path
    key: Path
    client_ca: Path | None = Field(default=None, description="require client certificates from this CA")


class HttpSettings(Strict):
    listen: str = Field(pattern=r"^\[?[A-Za-z0-9.:-]+\]?:\d{1,5}$", description="host:port; port 0 picks one")


# Blocked jobs that reserve each cycle unless configured: deep enough that a large job reaches a
# reservation while the small ones ahead of it wait too (Slurm's bf_max_job_test defaults to 500).
BACKFILL_DEPTH = 32


class SchedulerSettings(Strict):
    interval_s: float = Field(default=0.5, gt=0, le=60)
    max_placements_per_cycle: int = Field(
        default=5000, ge=1, le=1_000_000,
        description="jobs placed in one cycle at most; the rest are deferred and the next cycle starts at once")
    backfill_depth: int = Field(
        default=BACKFILL_DEPTH, ge=0, le=1000,
        description="jobs that cannot start which reserve where and when they will (by the time limits of the work "
                    "running), tried each cycle, as Slurm's bf_max_job_test; 0: no reservations")


class Enrolment(Strict):
    """Sites join with a one-time token (`fedctl site token create`, `fedctl site join`): they
    reach this listener over TLS without a client certificate and leave with one."""

    listen: str = "127.0.0.1:50052"
    ca_cert: Path
    ca_key: Path = Field(description="the CA's key: the federation signs site certificates with it")
    cert_days: int = Field(default=30, ge=1, le=825)


class AuditSettings(Strict):
    key: Path | None = Field(
        default=None, description="the audit signing key (EC P-256 PEM, made there 0600 if absent; its folder must "
                                  "exist); default: beside the store. Keep it where the store's writers cannot write")
    refusal_window_s: float = Field(
        default=60.0, gt=0, le=3600,
        description="refused calls, bad enrolment tokens and stale reports are audited once per actor, action and "
                    "kind this often, with their count")


class Replication(Strict):
    """Several replicas over one store: one leads (schedules and writes) while its lease on the
    store lasts, the others take over when it lapses. A witness never leads: it only tells sites
    whether some replica does, so that a site that cannot reach the leader keeps its work running
    through an outage of the whole federation and fences it only when cut off from a live one."""

    role: Literal["replica", "witness"] = "replica"
    advertise: str | None = Field(default=None, description="where sites and users reach this replica "
                                                            "(default: listen)")
    lease_s: float | None = Field(default=None, gt=0, le=60,
                                  description="the leadership lease; default: a quarter of site_timeout_s, "
                                              "at most 4 s")


class FederationBody(Strict):
    listen: str = "127.0.0.1:50051"
    store: Path = Path(".fedctl/federation.db")
    database: str | None = Field(default=None, pattern=r"^postgres(ql)?://",
                                 description="a PostgreSQL URL (postgresql://user@host/db): the store the "
                                             "federation's replicas share, instead of the SQLite file at store; "
                                             "needs audit.key")
    policy: Path
    tls: ServerTLS | None = None
    insecure: bool = False
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    enrolment: Enrolment | None = None
    site_timeout_s: float = Field(default=30.0, gt=0)
    heartbeat_interval_s: float = Field(default=2.0, gt=0)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    metrics: MetricsSettings | None = Field(default=None, description="serve Prometheus metrics at /metrics")
    http: HttpSettings | None = Field(default=None, description="serve the HTTP/JSON API (needs tls with a client_ca)")
    replication: Replication = Field(default_factory=Replication)
    threads: int = Field(default=64, ge=8, le=8192,
                         description="threads that serve users' calls; sites' calls have a quarter as many (at least "
                                     "8) of their own. Open streams hold none: they wait on the event loop")

    @field_validator("insecure")
    @classmethod
    def _not_beside_tls(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("tls") is not None:
            raise ValueError("plain text is never served beside tls: remove insecure (or, for development only, tls)")
        return v

    @field_validator("enrolment")
    @classmethod
    def _enrolment_over_tls(cls, v: Enrolment | None, info: ValidationInfo) -> Enrolment | None:
        if v is not None and info.data.get("tls") is None:
            raise ValueError("needs tls (sites must be able to check they talk to this federation)")
        return v

    @model_validator(mode="after")
    def _tls_or_insecure(self) -> FederationBody:
        if self.tls is None and not self.insecure:
            raise ValueError("set tls (cert, key, client_ca) or, for development only, insecure: true")
        if self.database and self.audit.key is None:
            raise ValueError("audit.key: required with database (the audit key is kept beside a SQLite store, "
                             "and a database has no folder beside it)")
        return self


class FederationMetadata(Strict):
    name: str = "federation"


class FederationConfig(Strict):
    apiVersion: Literal["federation/v1"] = API_VERSION
    kind: Literal["Federation"] = "Federation"
    metadata: FederationMetadata = Field(default_factory=FederationMetadata)
    spec: FederationBody
