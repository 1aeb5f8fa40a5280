"""Plain data the placement function reads and returns: sites, jobs, reasons, decisions."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from policies.gpus import Binding, GpuRequest
from policies.pricing import NEVER, Elastic, Pricing


class Reason(IntEnum):
    """Why a site can or cannot take a job, in the order the filters run."""

    OK = 0
    NOT_IN_SITES = 1          # the job's placement.sites excludes this site
    NOT_IN_REGIONS = 2        # the job's placement.regions excludes this site
    UNKNOWN_DATASET = 3
    NO_RULE = 4               # the dataset's classification has no rule in the policy
    JURISDICTION = 5          # the data may not be processed in this jurisdiction
    MISSING_LABEL = 6         # the site lacks a label the classification requires
    DATA_ELSEWHERE = 7        # data is not here and the policy forbids staging a copy
    NEVER_FITS = 8            # the request exceeds the site's whole capacity
    VETOED = 9                # the site refused this job before
    OFFLINE = 10              # no heartbeat within the timeout
    DRAINING = 11
    CORDONED = 12
    NO_FREE_CAPACITY = 13     # it would fit, but not now
    GPU_TYPE = 14             # no GPU of the wanted type (or memory) at the site; checked after NEVER_FITS
    TOPOLOGY = 15             # enough GPUs, but never in the wanted shape (NVLink domain, per node, rack)
    FRAGMENTED = 16           # enough free GPUs now, but not in the wanted shape
    DEFERRED = 17             # not considered: the cycle's placement limit went to earlier jobs
    QUEUE_LIMIT = 18          # the job's queue (or a parent) would exceed its hard limit
    DEPENDENCY = 19           # a job it depends on has not ended the way it needs
    SINGLETON = 20            # another job of its name and tenant is active or older
    ARRAY_LIMIT = 21          # its array already runs as many elements as it may
    GANG = 22                 # another part of its gang cannot be placed now; none is
    PRICE = 23                # the site costs more per hour than the job's max_price
    RESERVED = 24             # it would fit, but delay a job ahead of it that reserved the site (backfill)

    @property
    def slug(self) -> str:
        return self.name.lower().replace("_", "-")

    @property
    def transient(self) -> bool:
        return self in (Reason.OFFLINE, Reason.NO_FREE_CAPACITY, Reason.CORDONED, Reason.DRAINING,
                        Reason.FRAGMENTED, Reason.DEFERRED, Reason.QUEUE_LIMIT, Reason.DEPENDENCY,
                        Reason.SINGLETON, Reason.ARRAY_LIMIT, Reason.GANG)


@dataclass(frozen=True, slots=True)
class ClassificationRule:
    # None means any jurisdiction.
    allowed_jurisdictions: frozenset[str] | None
    required_labels: Mapping[str, str] = field(default_factory=dict)
    allow_staging: bool = False
    may_cross_border: frozenset[str] = frozenset({"results"})   # results, model-updates, logs


@dataclass(frozen=True, slots=True)
class Rules:
    classifications: Mapping[str, ClassificationRule]
    version: str = "1"


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    name: str
    classification: str
    sites: frozenset[str]
    size: float = 0.0        # bytes, as its holders say: what staging a copy moves


@dataclass(frozen=True, slots=True)
class SiteView:
    name: str
    jurisdiction: str
    region: str
    labels: Mapping[str, str]
    cpus: float
    memory: float
    gpus: float
    used_cpus: float = 0.0
    used_memory: float = 0.0
    used_gpus: float = 0.0
    running: int = 0
    connected: bool = True
    cordoned: bool = False
    draining: bool = False
    pricing: Pricing | None = None    # None: priced at zero
    elastic: Elastic | None = None    # None: a fixed site; else the nodes its autoscaler may add


@dataclass(frozen=True, slots=True)
class PendingJob:
    id: str
    tenant: str
    datasets: tuple[str, ...] = ()
    cpus: float = 1.0
    memory: float = 0.0
    gpus: float = 0.0
    regions: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    prefer: tuple[str, ...] = ()
    priority: int = 0            # higher goes first
    submitted_at: float = 0.0
    vetoed_by: frozenset[str] = frozenset()
    gpu: GpuRequest | None = None  # the GPU shape; None: `gpus` whole GPUs (or a share below 1), any type
    queue: str = "default"         # the fair-share queue it is charged to
    gang: str = ""                 # parts of one gang are placed all together or not at all
    gang_size: int = 0
    optimize_cost: bool = False    # placement.optimize: cost (else time)
    max_price: float = 0.0         # per hour; 0: no cap
    spot: int = NEVER              # pricing.NEVER, ALLOW or PREFER
    time_limit: float = 0.0        # seconds it may run (ended past them); 0: unknown


@dataclass(frozen=True, slots=True)
class BackfillSettings:
    depth: int = 0                 # blocked jobs that may reserve each cycle (Slurm's bf_max_job_test); 0: none


@dataclass(frozen=True, slots=True)
class Reservation:
    """Where and from when a job that cannot start now is to start (`policies.backfill`)."""

    job_id: str
    site: str
    start: float                   # when what it needs is free there, by the running work's time limits


@dataclass(frozen=True, slots=True)
class Nomination:
    """Capacity that work stopped for a waiting job freed: held for that job, which alone may use it
    (until it starts, or the hold runs out)."""

    job_id: str                    # the job the work was stopped for
    site: str
    cpus: float
    memory: float
    binding: Binding = ()          # the GPUs the stopped work held


@dataclass(frozen=True, slots=True)
class Verdict:
    site: str
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Decision:
    job_id: str
    site: str
    score: float
    reasons: tuple[str, ...]
    candidates: int              # sites that could have taken it
    binding: Binding = ()        # the GPUs reserved at the site
    gpu_model: str = ""          # their model
    price: float = 0.0           # per hour, at the site's prices
    node_type: str = ""          # "" : on capacity the site has now; else a node its autoscaler is to add
    spot: bool = False           # on a spot node
    start_s: float = 0.0         # the expected delay before it starts (a new node's start)
    site_codes: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def reasons_by_site(self) -> bytes:
        """A Reason code per site in snapshot order, OK where the job was eligible; computed on use."""
        return self.site_codes() if self.site_codes is not None else b""


class Unplaced:
    """A job left pending: one Reason code per site (snapshot order) and a one-line summary.

    Both are materialised on first use from the parts the scheduler already holds, so a cycle
    over a large backlog decides every job without building a per-site array for each."""

    __slots__ = ("_parts", "_reasons", "_summary", "job_id")

    def __init__(self, job_id: str, summary: str | None = None, reasons: bytes | None = None,
                 parts: Callable[[], tuple[str, bytes]] | None = None) -> None:
        self.job_id = job_id
        self._summary, self._reasons, self._parts = summary, reasons, parts

    def _materialise(self) -> None:
        if self._reasons is None:
            assert self._parts is not None, "an Unplaced is made with its reasons or a way to make them"
            self._summary, self._reasons = self._parts()
            self._parts = None

    @property
    def summary(self) -> str:
        self._materialise()
        assert self._summary is not None
        return self._summary

    @property
    def reasons(self) -> bytes:
        self._materialise()
        assert self._reasons is not None
        return self._reasons

    def reason_at(self, index: int) -> Reason:
        return Reason(self.reasons[index])

    def __repr__(self) -> str:
        return f"Unplaced({self.job_id!r}, {self.summary!r})"
