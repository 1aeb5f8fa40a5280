"""The federation's Prometheus metrics: events counted where they happen, state read at scrape.

Each control plane has a registry of its own (tests run several in one process). Counting an
event is a dictionary lookup and an addition under a lock: cheap enough for the submission path
(`bench/metrics.py` measures it). State that is already in the store (jobs by state, sites,
queues) is not mirrored in the process: `federation.observe.state` reads it when scraped."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from federation.errors import ErrorCode

SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DECISIONS = (0, 1, 5, 10, 50, 100, 500, 1000, 5000, 10000)
ROUND_SECONDS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)


class FederationMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.submissions = Counter("fedctl_submissions", "Jobs accepted, by tenant (an array's elements each count)",
                                   ["tenant"], registry=r)
        self.refused = Counter("fedctl_submissions_refused", "Submissions admission refused, by the error's code "
                               "(a spec that cannot be read is a gRPC INVALID_ARGUMENT)", ["code"], registry=r)
        self.denied = Counter("fedctl_refusals", "Calls and reports refused for who made them (audited), by kind",
                              ["kind"], registry=r)
        self.cycle_seconds = Histogram("fedctl_scheduling_cycle_seconds", "One scheduling cycle: observe, decide, "
                                       "apply", buckets=SECONDS, registry=r)
        self.cycle_decisions = Histogram("fedctl_scheduling_cycle_placements", "Jobs placed by one cycle",
                                         buckets=DECISIONS, registry=r)
        self.last_cycle = Gauge("fedctl_scheduling_last_cycle_timestamp_seconds", "When the last cycle ended "
                                "(0: none yet; only the leading replica schedules)", registry=r)
        self.placements = Counter("fedctl_placements", "Jobs placed, by queue", ["queue"], registry=r)
        self.preemptions = Counter("fedctl_preemptions", "Attempts stopped to make room, by site", ["site"],
                                   registry=r)
        self.attempts_ended = Counter("fedctl_attempts_ended", "Attempts that ended, by site and state (lost: its "
                                      "site went silent or its work vanished)", ["site", "state"], registry=r)
        self.rpc_seconds = Histogram("fedctl_grpc_server_handling_seconds", "gRPC calls served, by method and "
                                     "status code", ["method", "code"], buckets=SECONDS, registry=r)
        self.rounds = Counter("fedctl_training_rounds", "Federated training rounds that ended, by state",
                              ["state"], registry=r)
        self.round_seconds = Histogram("fedctl_training_round_seconds", "A federated training round, start to end",
                                       buckets=ROUND_SECONDS, registry=r)
        for code in ErrorCode:   # every refusal code is a series from the start, so rates work at once
            self.refused.labels(code.value)

    def attempt_ended(self, site: str, state: str) -> None:
        self.attempts_ended.labels(site, state).inc()

    def cycle_ended(self, seconds: float, placed: int, at: float) -> None:
        self.cycle_seconds.observe(seconds)
        self.cycle_decisions.observe(placed)
        self.last_cycle.set(at)

