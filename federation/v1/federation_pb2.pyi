from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_PENDING: _ClassVar[JobState]
    JOB_STATE_PLACED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class AttemptState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTEMPT_STATE_UNSPECIFIED: _ClassVar[AttemptState]
    ATTEMPT_STATE_ASSIGNED: _ClassVar[AttemptState]
    ATTEMPT_STATE_RUNNING: _ClassVar[AttemptState]
    ATTEMPT_STATE_SUCCEEDED: _ClassVar[AttemptState]
    ATTEMPT_STATE_FAILED: _ClassVar[AttemptState]
    ATTEMPT_STATE_STOPPED: _ClassVar[AttemptState]
    ATTEMPT_STATE_REJECTED: _ClassVar[AttemptState]
    ATTEMPT_STATE_PREEMPTED: _ClassVar[AttemptState]
    ATTEMPT_STATE_LOST: _ClassVar[AttemptState]

class SiteState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SITE_STATE_UNSPECIFIED: _ClassVar[SiteState]
    SITE_STATE_READY: _ClassVar[SiteState]
    SITE_STATE_CORDONED: _ClassVar[SiteState]
    SITE_STATE_DRAINING: _ClassVar[SiteState]

class TrainingState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINING_STATE_UNSPECIFIED: _ClassVar[TrainingState]
    TRAINING_STATE_RUNNING: _ClassVar[TrainingState]
    TRAINING_STATE_SUCCEEDED: _ClassVar[TrainingState]
    TRAINING_STATE_FAILED: _ClassVar[TrainingState]
    TRAINING_STATE_CANCELLED: _ClassVar[TrainingState]

class RoundState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUND_STATE_UNSPECIFIED: _ClassVar[RoundState]
    ROUND_STATE_TRAINING: _ClassVar[RoundState]
    ROUND_STATE_AGGREGATING: _ClassVar[RoundState]
    ROUND_STATE_DONE: _ClassVar[RoundState]
    ROUND_STATE_FAILED: _ClassVar[RoundState]
    ROUND_STATE_REVEALING: _ClassVar[RoundState]
    ROUND_STATE_KEYS: _ClassVar[RoundState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_PENDING: JobState
JOB_STATE_PLACED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
ATTEMPT_STATE_UNSPECIFIED: AttemptState
ATTEMPT_STATE_ASSIGNED: AttemptState
ATTEMPT_STATE_RUNNING: AttemptState
ATTEMPT_STATE_SUCCEEDED: AttemptState
ATTEMPT_STATE_FAILED: AttemptState
ATTEMPT_STATE_STOPPED: AttemptState
ATTEMPT_STATE_REJECTED: AttemptState
ATTEMPT_STATE_PREEMPTED: AttemptState
ATTEMPT_STATE_LOST: AttemptState
SITE_STATE_UNSPECIFIED: SiteState
SITE_STATE_READY: SiteState
SITE_STATE_CORDONED: SiteState
SITE_STATE_DRAINING: SiteState
TRAINING_STATE_UNSPECIFIED: TrainingState
TRAINING_STATE_RUNNING: TrainingState
TRAINING_STATE_SUCCEEDED: TrainingState
TRAINING_STATE_FAILED: TrainingState
TRAINING_STATE_CANCELLED: TrainingState
ROUND_STATE_UNSPECIFIED: RoundState
ROUND_STATE_TRAINING: RoundState
ROUND_STATE_AGGREGATING: RoundState
ROUND_STATE_DONE: RoundState
ROUND_STATE_FAILED: RoundState
ROUND_STATE_REVEALING: RoundState
ROUND_STATE_KEYS: RoundState

class Resources(_message.Message):
    __slots__ = ("cpus", "memory_bytes", "gpus")
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    cpus: float
    memory_bytes: int
    gpus: float
    def __init__(self, cpus: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., gpus: _Optional[float] = ...) -> None: ...

class GpuNode(_message.Message):
    __slots__ = ("name", "model", "memory_bytes", "domains", "rack", "block", "spot")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    SPOT_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    memory_bytes: int
    domains: _containers.RepeatedScalarFieldContainer[str]
    rack: str
    block: str
    spot: bool
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., domains: _Optional[_Iterable[str]] = ..., rack: _Optional[str] = ..., block: _Optional[str] = ..., spot: bool = ...) -> None: ...

class Inventory(_message.Message):
    __slots__ = ("nodes", "digest")
    NODES_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[GpuNode]
    digest: str
    def __init__(self, nodes: _Optional[_Iterable[_Union[GpuNode, _Mapping]]] = ..., digest: _Optional[str] = ...) -> None: ...

class Rates(_message.Message):
    __slots__ = ("cpu_hour", "memory_gib_hour", "gpu_hour")
    class GpuHourEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CPU_HOUR_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GIB_HOUR_FIELD_NUMBER: _ClassVar[int]
    GPU_HOUR_FIELD_NUMBER: _ClassVar[int]
    cpu_hour: float
    memory_gib_hour: float
    gpu_hour: _containers.ScalarMap[str, float]
    def __init__(self, cpu_hour: _Optional[float] = ..., memory_gib_hour: _Optional[float] = ..., gpu_hour: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Pricing(_message.Message):
    __slots__ = ("currency", "on_demand", "spot", "egress_gb")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ON_DEMAND_FIELD_NUMBER: _ClassVar[int]
    SPOT_FIELD_NUMBER: _ClassVar[int]
    EGRESS_GB_FIELD_NUMBER: _ClassVar[int]
    currency: str
    on_demand: Rates
    spot: Rates
    egress_gb: float
    def __init__(self, currency: _Optional[str] = ..., on_demand: _Optional[_Union[Rates, _Mapping]] = ..., spot: _Optional[_Union[Rates, _Mapping]] = ..., egress_gb: _Optional[float] = ...) -> None: ...

class NodeType(_message.Message):
    __slots__ = ("name", "cpus", "memory_bytes", "min", "max", "gpu_model", "gpu_count", "gpu_memory_bytes", "spot", "start_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    SPOT_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    cpus: float
    memory_bytes: int
    min: int
    max: int
    gpu_model: str
    gpu_count: int
    gpu_memory_bytes: int
    spot: bool
    start_s: float
    def __init__(self, name: _Optional[str] = ..., cpus: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., min: _Optional[int] = ..., max: _Optional[int] = ..., gpu_model: _Optional[str] = ..., gpu_count: _Optional[int] = ..., gpu_memory_bytes: _Optional[int] = ..., spot: bool = ..., start_s: _Optional[float] = ...) -> None: ...

class Elastic(_message.Message):
    __slots__ = ("node_types", "idle_timeout_s", "up")
    class UpEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_TYPES_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    node_types: _containers.RepeatedCompositeFieldContainer[NodeType]
    idle_timeout_s: float
    up: _containers.ScalarMap[str, int]
    def __init__(self, node_types: _Optional[_Iterable[_Union[NodeType, _Mapping]]] = ..., idle_timeout_s: _Optional[float] = ..., up: _Optional[_Mapping[str, int]] = ...) -> None: ...

class GpuSlot(_message.Message):
    __slots__ = ("node", "gpus", "milli")
    NODE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    MILLI_FIELD_NUMBER: _ClassVar[int]
    node: str
    gpus: _containers.RepeatedScalarFieldContainer[int]
    milli: int
    def __init__(self, node: _Optional[str] = ..., gpus: _Optional[_Iterable[int]] = ..., milli: _Optional[int] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("number", "site", "state", "submission_id", "message", "created_at", "started_at", "ended_at", "binding")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    BINDING_FIELD_NUMBER: _ClassVar[int]
    number: int
    site: str
    state: AttemptState
    submission_id: str
    message: str
    created_at: float
    started_at: float
    ended_at: float
    binding: _containers.RepeatedCompositeFieldContainer[GpuSlot]
    def __init__(self, number: _Optional[int] = ..., site: _Optional[str] = ..., state: _Optional[_Union[AttemptState, str]] = ..., submission_id: _Optional[str] = ..., message: _Optional[str] = ..., created_at: _Optional[float] = ..., started_at: _Optional[float] = ..., ended_at: _Optional[float] = ..., binding: _Optional[_Iterable[_Union[GpuSlot, _Mapping]]] = ...) -> None: ...

class SiteVerdict(_message.Message):
    __slots__ = ("site", "eligible", "reason_code", "reason")
    SITE_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    site: str
    eligible: bool
    reason_code: str
    reason: str
    def __init__(self, site: _Optional[str] = ..., eligible: bool = ..., reason_code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "spec", "state", "site", "message", "created_at", "updated_at", "attempts", "queue", "array_id", "array_index", "gang_id", "submitter")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    ARRAY_ID_FIELD_NUMBER: _ClassVar[int]
    ARRAY_INDEX_FIELD_NUMBER: _ClassVar[int]
    GANG_ID_FIELD_NUMBER: _ClassVar[int]
    SUBMITTER_FIELD_NUMBER: _ClassVar[int]
    id: str
    spec: JobSpec
    state: JobState
    site: str
    message: str
    created_at: float
    updated_at: float
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    queue: str
    array_id: str
    array_index: int
    gang_id: str
    submitter: str
    def __init__(self, id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., site: _Optional[str] = ..., message: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., queue: _Optional[str] = ..., array_id: _Optional[str] = ..., array_index: _Optional[int] = ..., gang_id: _Optional[str] = ..., submitter: _Optional[str] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("name", "classification", "path", "size_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    classification: str
    path: str
    size_bytes: int
    def __init__(self, name: _Optional[str] = ..., classification: _Optional[str] = ..., path: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class Location(_message.Message):
    __slots__ = ("jurisdiction", "region")
    JURISDICTION_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    jurisdiction: str
    region: str
    def __init__(self, jurisdiction: _Optional[str] = ..., region: _Optional[str] = ...) -> None: ...

class Site(_message.Message):
    __slots__ = ("name", "location", "labels", "datasets", "state", "connected", "capacity", "allocated", "running_attempts", "last_heartbeat", "inventory", "autonomous", "lost", "pricing", "elastic")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    AUTONOMOUS_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    PRICING_FIELD_NUMBER: _ClassVar[int]
    ELASTIC_FIELD_NUMBER: _ClassVar[int]
    name: str
    location: Location
    labels: _containers.ScalarMap[str, str]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    state: SiteState
    connected: bool
    capacity: Resources
    allocated: Resources
    running_attempts: int
    last_heartbeat: float
    inventory: Inventory
    autonomous: bool
    lost: bool
    pricing: Pricing
    elastic: Elastic
    def __init__(self, name: _Optional[str] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ..., state: _Optional[_Union[SiteState, str]] = ..., connected: bool = ..., capacity: _Optional[_Union[Resources, _Mapping]] = ..., allocated: _Optional[_Union[Resources, _Mapping]] = ..., running_attempts: _Optional[int] = ..., last_heartbeat: _Optional[float] = ..., inventory: _Optional[_Union[Inventory, _Mapping]] = ..., autonomous: bool = ..., lost: bool = ..., pricing: _Optional[_Union[Pricing, _Mapping]] = ..., elastic: _Optional[_Union[Elastic, _Mapping]] = ...) -> None: ...

class TrainingSpec(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class TrainingRound(_message.Message):
    __slots__ = ("number", "attempt", "state", "participants", "aggregator", "reported", "lost", "bytes_moved", "metrics", "started_at", "ended_at")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    REPORTED_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    BYTES_MOVED_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    number: int
    attempt: int
    state: RoundState
    participants: _containers.RepeatedScalarFieldContainer[str]
    aggregator: str
    reported: _containers.RepeatedScalarFieldContainer[str]
    lost: _containers.RepeatedScalarFieldContainer[str]
    bytes_moved: int
    metrics: _struct_pb2.Struct
    started_at: float
    ended_at: float
    def __init__(self, number: _Optional[int] = ..., attempt: _Optional[int] = ..., state: _Optional[_Union[RoundState, str]] = ..., participants: _Optional[_Iterable[str]] = ..., aggregator: _Optional[str] = ..., reported: _Optional[_Iterable[str]] = ..., lost: _Optional[_Iterable[str]] = ..., bytes_moved: _Optional[int] = ..., metrics: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., started_at: _Optional[float] = ..., ended_at: _Optional[float] = ...) -> None: ...

class Training(_message.Message):
    __slots__ = ("id", "spec", "state", "round", "message", "created_at", "updated_at", "rounds")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    spec: TrainingSpec
    state: TrainingState
    round: int
    message: str
    created_at: float
    updated_at: float
    rounds: _containers.RepeatedCompositeFieldContainer[TrainingRound]
    def __init__(self, id: _Optional[str] = ..., spec: _Optional[_Union[TrainingSpec, _Mapping]] = ..., state: _Optional[_Union[TrainingState, str]] = ..., round: _Optional[int] = ..., message: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., rounds: _Optional[_Iterable[_Union[TrainingRound, _Mapping]]] = ...) -> None: ...

class SubmitTrainingRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: TrainingSpec
    def __init__(self, spec: _Optional[_Union[TrainingSpec, _Mapping]] = ...) -> None: ...

class SubmitTrainingResponse(_message.Message):
    __slots__ = ("training",)
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    training: Training
    def __init__(self, training: _Optional[_Union[Training, _Mapping]] = ...) -> None: ...

class GetTrainingRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetTrainingResponse(_message.Message):
    __slots__ = ("training",)
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    training: Training
    def __init__(self, training: _Optional[_Union[Training, _Mapping]] = ...) -> None: ...

class ListTrainingsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListTrainingsResponse(_message.Message):
    __slots__ = ("trainings",)
    TRAININGS_FIELD_NUMBER: _ClassVar[int]
    trainings: _containers.RepeatedCompositeFieldContainer[Training]
    def __init__(self, trainings: _Optional[_Iterable[_Union[Training, _Mapping]]] = ...) -> None: ...

class CancelTrainingRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelTrainingResponse(_message.Message):
    __slots__ = ("training",)
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    training: Training
    def __init__(self, training: _Optional[_Union[Training, _Mapping]] = ...) -> None: ...

class GetTrainingModelRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetTrainingModelResponse(_message.Message):
    __slots__ = ("model", "round")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    model: bytes
    round: int
    def __init__(self, model: _Optional[bytes] = ..., round: _Optional[int] = ...) -> None: ...

class DrainFederationRequest(_message.Message):
    __slots__ = ("drain",)
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    drain: bool
    def __init__(self, drain: bool = ...) -> None: ...

class DrainFederationResponse(_message.Message):
    __slots__ = ("draining", "pending", "live")
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    draining: bool
    pending: int
    live: int
    def __init__(self, draining: bool = ..., pending: _Optional[int] = ..., live: _Optional[int] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec", "request_id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    request_id: str
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job", "elements")
    JOB_FIELD_NUMBER: _ClassVar[int]
    ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    job: Job
    elements: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., elements: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class SubmitJobsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SubmitJobRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[SubmitJobRequest, _Mapping]]] = ...) -> None: ...

class SubmitJobsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SubmitJobsResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SubmitJobsResult, _Mapping]]] = ...) -> None: ...

class SubmitJobsResult(_message.Message):
    __slots__ = ("submitted", "error_code", "error_message")
    SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    submitted: SubmitJobResponse
    error_code: str
    error_message: str
    def __init__(self, submitted: _Optional[_Union[SubmitJobResponse, _Mapping]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("tenant", "states", "limit", "page_token", "submitter")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SUBMITTER_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    states: _containers.RepeatedScalarFieldContainer[JobState]
    limit: int
    page_token: str
    submitter: str
    def __init__(self, tenant: _Optional[str] = ..., states: _Optional[_Iterable[_Union[JobState, str]]] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ..., submitter: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class StreamJobLogsRequest(_message.Message):
    __slots__ = ("id", "follow", "offset")
    ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    id: str
    follow: bool
    offset: int
    def __init__(self, id: _Optional[str] = ..., follow: bool = ..., offset: _Optional[int] = ...) -> None: ...

class StreamJobLogsResponse(_message.Message):
    __slots__ = ("data", "offset", "attempt", "kept_at_site")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    KEPT_AT_SITE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    attempt: int
    kept_at_site: str
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., attempt: _Optional[int] = ..., kept_at_site: _Optional[str] = ...) -> None: ...

class ExplainJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ExplainJobResponse(_message.Message):
    __slots__ = ("job", "summary", "verdicts", "evaluated_at", "execution")
    JOB_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    job: Job
    summary: str
    verdicts: _containers.RepeatedCompositeFieldContainer[SiteVerdict]
    evaluated_at: float
    execution: str
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., summary: _Optional[str] = ..., verdicts: _Optional[_Iterable[_Union[SiteVerdict, _Mapping]]] = ..., evaluated_at: _Optional[float] = ..., execution: _Optional[str] = ...) -> None: ...

class ListSitesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSitesResponse(_message.Message):
    __slots__ = ("sites",)
    SITES_FIELD_NUMBER: _ClassVar[int]
    sites: _containers.RepeatedCompositeFieldContainer[Site]
    def __init__(self, sites: _Optional[_Iterable[_Union[Site, _Mapping]]] = ...) -> None: ...

class GetSiteRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetSiteResponse(_message.Message):
    __slots__ = ("site",)
    SITE_FIELD_NUMBER: _ClassVar[int]
    site: Site
    def __init__(self, site: _Optional[_Union[Site, _Mapping]] = ...) -> None: ...

class SetSiteStateRequest(_message.Message):
    __slots__ = ("name", "state", "handover")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HANDOVER_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: SiteState
    handover: bool
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[SiteState, str]] = ..., handover: bool = ...) -> None: ...

class SetSiteStateResponse(_message.Message):
    __slots__ = ("site",)
    SITE_FIELD_NUMBER: _ClassVar[int]
    site: Site
    def __init__(self, site: _Optional[_Union[Site, _Mapping]] = ...) -> None: ...

class LeaderRequest(_message.Message):
    __slots__ = ("site",)
    SITE_FIELD_NUMBER: _ClassVar[int]
    site: str
    def __init__(self, site: _Optional[str] = ...) -> None: ...

class LeaderResponse(_message.Message):
    __slots__ = ("live", "address", "term", "answered_by", "hears_sites")
    LIVE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_BY_FIELD_NUMBER: _ClassVar[int]
    HEARS_SITES_FIELD_NUMBER: _ClassVar[int]
    live: bool
    address: str
    term: int
    answered_by: str
    hears_sites: bool
    def __init__(self, live: bool = ..., address: _Optional[str] = ..., term: _Optional[int] = ..., answered_by: _Optional[str] = ..., hears_sites: bool = ...) -> None: ...

class GetInputRequest(_message.Message):
    __slots__ = ("site", "job_id", "attempt", "name")
    SITE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    site: str
    job_id: str
    attempt: int
    name: str
    def __init__(self, site: _Optional[str] = ..., job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class GetInputResponse(_message.Message):
    __slots__ = ("data", "sha256")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    sha256: str
    def __init__(self, data: _Optional[bytes] = ..., sha256: _Optional[str] = ...) -> None: ...

class RenewCertificateRequest(_message.Message):
    __slots__ = ("csr_pem",)
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    csr_pem: bytes
    def __init__(self, csr_pem: _Optional[bytes] = ...) -> None: ...

class RenewCertificateResponse(_message.Message):
    __slots__ = ("cert_pem",)
    CERT_PEM_FIELD_NUMBER: _ClassVar[int]
    cert_pem: bytes
    def __init__(self, cert_pem: _Optional[bytes] = ...) -> None: ...

class RegisterSiteRequest(_message.Message):
    __slots__ = ("name", "location", "labels", "datasets", "capacity", "agent_version", "inventory", "autonomous", "agreement_key", "pricing", "elastic", "agreement_proof")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    AUTONOMOUS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_KEY_FIELD_NUMBER: _ClassVar[int]
    PRICING_FIELD_NUMBER: _ClassVar[int]
    ELASTIC_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_PROOF_FIELD_NUMBER: _ClassVar[int]
    name: str
    location: Location
    labels: _containers.ScalarMap[str, str]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    capacity: Resources
    agent_version: str
    inventory: Inventory
    autonomous: bool
    agreement_key: bytes
    pricing: Pricing
    elastic: Elastic
    agreement_proof: str
    def __init__(self, name: _Optional[str] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ..., capacity: _Optional[_Union[Resources, _Mapping]] = ..., agent_version: _Optional[str] = ..., inventory: _Optional[_Union[Inventory, _Mapping]] = ..., autonomous: bool = ..., agreement_key: _Optional[bytes] = ..., pricing: _Optional[_Union[Pricing, _Mapping]] = ..., elastic: _Optional[_Union[Elastic, _Mapping]] = ..., agreement_proof: _Optional[str] = ...) -> None: ...

class RegisterSiteResponse(_message.Message):
    __slots__ = ("heartbeat_interval_s", "lease_s", "datasets")
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_s: float
    lease_s: float
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    def __init__(self, heartbeat_interval_s: _Optional[float] = ..., lease_s: _Optional[float] = ..., datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("name", "capacity", "inventory", "nodes_up")
    class NodesUpEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    NODES_UP_FIELD_NUMBER: _ClassVar[int]
    name: str
    capacity: Resources
    inventory: Inventory
    nodes_up: _containers.ScalarMap[str, int]
    def __init__(self, name: _Optional[str] = ..., capacity: _Optional[_Union[Resources, _Mapping]] = ..., inventory: _Optional[_Union[Inventory, _Mapping]] = ..., nodes_up: _Optional[_Mapping[str, int]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("state", "audit_head")
    STATE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HEAD_FIELD_NUMBER: _ClassVar[int]
    state: SiteState
    audit_head: AuditHead
    def __init__(self, state: _Optional[_Union[SiteState, str]] = ..., audit_head: _Optional[_Union[AuditHead, _Mapping]] = ...) -> None: ...

class AuditHead(_message.Message):
    __slots__ = ("seq", "hash")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    hash: str
    def __init__(self, seq: _Optional[int] = ..., hash: _Optional[str] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("job_id", "attempt", "submission_id", "spec", "binding", "inputs", "may_cross_border", "node_type")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    BINDING_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    MAY_CROSS_BORDER_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    submission_id: str
    spec: JobSpec
    binding: _containers.RepeatedCompositeFieldContainer[GpuSlot]
    inputs: _containers.RepeatedCompositeFieldContainer[ArtifactRef]
    may_cross_border: _containers.RepeatedScalarFieldContainer[str]
    node_type: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., submission_id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., binding: _Optional[_Iterable[_Union[GpuSlot, _Mapping]]] = ..., inputs: _Optional[_Iterable[_Union[ArtifactRef, _Mapping]]] = ..., may_cross_border: _Optional[_Iterable[str]] = ..., node_type: _Optional[str] = ...) -> None: ...

class ArtifactRef(_message.Message):
    __slots__ = ("name", "sha256", "size")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    size: int
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("job_id", "attempt", "name", "data")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    name: str
    data: bytes
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., name: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class AttemptStatus(_message.Message):
    __slots__ = ("job_id", "attempt", "state", "message")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    state: AttemptState
    message: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., state: _Optional[_Union[AttemptState, str]] = ..., message: _Optional[str] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("job_id", "attempt", "offset", "data")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    offset: int
    data: bytes
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ConnectRequest(_message.Message):
    __slots__ = ("site", "statuses", "logs", "complete", "outputs")
    SITE_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    site: str
    statuses: _containers.RepeatedCompositeFieldContainer[AttemptStatus]
    logs: _containers.RepeatedCompositeFieldContainer[LogChunk]
    complete: bool
    outputs: _containers.RepeatedCompositeFieldContainer[Output]
    def __init__(self, site: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[AttemptStatus, _Mapping]]] = ..., logs: _Optional[_Iterable[_Union[LogChunk, _Mapping]]] = ..., complete: bool = ..., outputs: _Optional[_Iterable[_Union[Output, _Mapping]]] = ...) -> None: ...

class ConnectResponse(_message.Message):
    __slots__ = ("generation", "assignments")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    generation: int
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    def __init__(self, generation: _Optional[int] = ..., assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ...) -> None: ...

class ListQueueRequest(_message.Message):
    __slots__ = ("queue", "tenant", "limit")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    queue: str
    tenant: str
    limit: int
    def __init__(self, queue: _Optional[str] = ..., tenant: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class QueueEntry(_message.Message):
    __slots__ = ("position", "job", "tier", "share", "held", "reserved_site", "reserved_at")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    RESERVED_SITE_FIELD_NUMBER: _ClassVar[int]
    RESERVED_AT_FIELD_NUMBER: _ClassVar[int]
    position: int
    job: Job
    tier: int
    share: float
    held: str
    reserved_site: str
    reserved_at: float
    def __init__(self, position: _Optional[int] = ..., job: _Optional[_Union[Job, _Mapping]] = ..., tier: _Optional[int] = ..., share: _Optional[float] = ..., held: _Optional[str] = ..., reserved_site: _Optional[str] = ..., reserved_at: _Optional[float] = ...) -> None: ...

class QueueStatus(_message.Message):
    __slots__ = ("name", "parent", "deserved", "limit", "over_quota_weight", "running", "history", "tier", "share", "pending")
    class DeservedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LimitEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class RunningEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class HistoryEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    DESERVED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OVER_QUOTA_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    name: str
    parent: str
    deserved: _containers.ScalarMap[str, float]
    limit: _containers.ScalarMap[str, float]
    over_quota_weight: float
    running: _containers.ScalarMap[str, float]
    history: _containers.ScalarMap[str, float]
    tier: int
    share: float
    pending: int
    def __init__(self, name: _Optional[str] = ..., parent: _Optional[str] = ..., deserved: _Optional[_Mapping[str, float]] = ..., limit: _Optional[_Mapping[str, float]] = ..., over_quota_weight: _Optional[float] = ..., running: _Optional[_Mapping[str, float]] = ..., history: _Optional[_Mapping[str, float]] = ..., tier: _Optional[int] = ..., share: _Optional[float] = ..., pending: _Optional[int] = ...) -> None: ...

class ListQueueResponse(_message.Message):
    __slots__ = ("entries", "queues")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[QueueEntry]
    queues: _containers.RepeatedCompositeFieldContainer[QueueStatus]
    def __init__(self, entries: _Optional[_Iterable[_Union[QueueEntry, _Mapping]]] = ..., queues: _Optional[_Iterable[_Union[QueueStatus, _Mapping]]] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("group_by", "since", "until")
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    group_by: _containers.RepeatedScalarFieldContainer[str]
    since: float
    until: float
    def __init__(self, group_by: _Optional[_Iterable[str]] = ..., since: _Optional[float] = ..., until: _Optional[float] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("tenant", "queue", "site", "gpu_model", "attempts", "cpu_seconds", "memory_gib_seconds", "gpu_seconds", "cost")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GIB_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    queue: str
    site: str
    gpu_model: str
    attempts: int
    cpu_seconds: float
    memory_gib_seconds: float
    gpu_seconds: float
    cost: float
    def __init__(self, tenant: _Optional[str] = ..., queue: _Optional[str] = ..., site: _Optional[str] = ..., gpu_model: _Optional[str] = ..., attempts: _Optional[int] = ..., cpu_seconds: _Optional[float] = ..., memory_gib_seconds: _Optional[float] = ..., gpu_seconds: _Optional[float] = ..., cost: _Optional[float] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("rows", "since", "until", "privacy")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    since: float
    until: float
    privacy: _containers.RepeatedCompositeFieldContainer[PrivacyUsage]
    def __init__(self, rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ..., since: _Optional[float] = ..., until: _Optional[float] = ..., privacy: _Optional[_Iterable[_Union[PrivacyUsage, _Mapping]]] = ...) -> None: ...

class PrivacyUsage(_message.Message):
    __slots__ = ("dataset", "budget_epsilon", "budget_delta", "spent_epsilon", "held_epsilon", "trainings")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    BUDGET_EPSILON_FIELD_NUMBER: _ClassVar[int]
    BUDGET_DELTA_FIELD_NUMBER: _ClassVar[int]
    SPENT_EPSILON_FIELD_NUMBER: _ClassVar[int]
    HELD_EPSILON_FIELD_NUMBER: _ClassVar[int]
    TRAININGS_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    budget_epsilon: float
    budget_delta: float
    spent_epsilon: float
    held_epsilon: float
    trainings: int
    def __init__(self, dataset: _Optional[str] = ..., budget_epsilon: _Optional[float] = ..., budget_delta: _Optional[float] = ..., spent_epsilon: _Optional[float] = ..., held_epsilon: _Optional[float] = ..., trainings: _Optional[int] = ...) -> None: ...

class RevokeCertificatesRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RevokeCertificatesResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: int
    def __init__(self, revoked: _Optional[int] = ...) -> None: ...

class CreateJoinTokenRequest(_message.Message):
    __slots__ = ("name", "location", "labels", "ttl_s")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    location: Location
    labels: _containers.ScalarMap[str, str]
    ttl_s: float
    def __init__(self, name: _Optional[str] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., ttl_s: _Optional[float] = ...) -> None: ...

class CreateJoinTokenResponse(_message.Message):
    __slots__ = ("token", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at: float
    def __init__(self, token: _Optional[str] = ..., expires_at: _Optional[float] = ...) -> None: ...

class EnrollSiteRequest(_message.Message):
    __slots__ = ("token", "csr_pem")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    token: str
    csr_pem: bytes
    def __init__(self, token: _Optional[str] = ..., csr_pem: _Optional[bytes] = ...) -> None: ...

class EnrollSiteResponse(_message.Message):
    __slots__ = ("cert_pem", "ca_pem")
    CERT_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_PEM_FIELD_NUMBER: _ClassVar[int]
    cert_pem: bytes
    ca_pem: bytes
    def __init__(self, cert_pem: _Optional[bytes] = ..., ca_pem: _Optional[bytes] = ...) -> None: ...
