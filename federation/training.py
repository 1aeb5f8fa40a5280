"""The federated training loop: rounds of local steps as gangs, then an aggregator job.

Level-triggered like the scheduler, and driven by it each cycle: every decision is a function of
the store (trainings, rounds, jobs, their files), so a federation restarted mid-round carries on
from the last completed round, with the round in flight picked up where it stood. Which sites
take part and where the aggregator may run are the pure answers of `training.rounds`.

What crosses between sites goes through the federation's store as files of jobs: the global
model to each participant, each participant's update (or its masked vector) to the aggregator,
and the new model back. Raw records never do: a local step's dataset path is only known at its
site, and a step leaves only its update and metrics.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
from dataclasses import replace
from typing import Any

from federation.control import ControlPlane
from federation.control.catalog import check_access
from federation.control.snapshot import catalog
from federation.errors import FederationError, InvalidSpec, NotFound
from federation.jobs import Job, JobState
from federation.spec import FederatedTrainingSpec, job_from_dict
from training import rounds as plan
from training.model import Round, RoundState, Training, TrainingState

log = logging.getLogger("federation.training")

MAX_ROUND_TRIES = 3
FUNCTION_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class TrainingLoop:
    def __init__(self, control: ControlPlane) -> None:
        self.control = control
        self.store = control.store

    # ------------------------------------------------------------ requests

    def submit(self, spec: FederatedTrainingSpec, actor: str) -> Training:
        body = spec.spec
        records = self.store.list_sites()
        info = catalog(records, self.control.core.policy).get(body.dataset)
        if info is None:
            raise InvalidSpec(f"spec.dataset: no site holds a dataset named '{body.dataset}'")
        if info.classification not in self.control.core.rules.classifications:
            raise InvalidSpec(f"spec.dataset: classification {info.classification} of {body.dataset} has no rule "
                              "in the policy")
        check_access(spec.metadata.tenant, {"spec.dataset": body.dataset}, self.control.core.policy)
        if len(info.sites) < body.sites.min:
            raise InvalidSpec(f"spec.sites.min: {body.sites.min} sites wanted, but only {len(info.sites)} hold "
                              f"{body.dataset} ({', '.join(sorted(info.sites))})")
        now = self.control.clock()
        training = Training(id=f"t-{secrets.token_hex(6)}", tenant=spec.metadata.tenant, actor=actor, spec=spec,
                            message="waiting for its first round", created_at=now, updated_at=now)
        self.store.save_training(training)
        self.control.record(actor, "training.submit", training.id, tenant=training.tenant, dataset=body.dataset,
                            rounds=body.rounds, secure=body.aggregation.secure)
        self.control.changes.bump()
        return training

    def cancel(self, training_id: str, actor: str) -> Training:
        t = self.store.get_training(training_id)
        if t.state.terminal:
            return t
        current = self._current(t)
        if current is not None:
            self._cancel_jobs(list(current.steps.values()) + [current.aggregate_job], f"training {t.id} cancelled")
        t = self._save(t, state=TrainingState.CANCELLED, message=f"cancelled by {actor or 'an admin'}")
        self.control.record(actor, "training.cancel", t.id)
        return t

    def model(self, training_id: str) -> tuple[bytes, int]:
        t = self.store.get_training(training_id)
        if not t.model_job:
            raise NotFound(f"training {t.id} has no model yet: no round has completed")
        return self._output(self.store.get_job(t.model_job), "model.npz"), t.round

    # ------------------------------------------------------------ the loop

    def advance(self) -> None:
        """One pass over every running training."""
        for t in self.store.trainings(active=True):
            try:
                self._advance(t)
            except FederationError as e:
                log.warning("training %s: %s", t.id, e.message)
                self._save(t, message=f"waiting: {e.message}")

    def _current(self, t: Training) -> Round | None:
        rounds = [r for r in self.store.rounds(t.id) if r.number == t.round + 1]
        return rounds[-1] if rounds else None

    def _advance(self, t: Training) -> None:
        r = self._current(t)
        if r is None or r.state is RoundState.FAILED:
            attempt = r.attempt + 1 if r else 1
            if attempt > MAX_ROUND_TRIES:
                self._save(t, state=TrainingState.FAILED,
                           message=f"round {t.round + 1} failed {MAX_ROUND_TRIES} times; last: {t.message}")
                self.control.record("federation", "training.fail", t.id, round=t.round + 1)
                return
            self._start_round(t, t.round + 1, attempt)
        elif r.state is RoundState.TRAINING:
            self._watch_steps(t, r)
        elif r.state is RoundState.REVEALING:
            self._watch_reveals(t, r)
        elif r.state is RoundState.AGGREGATING:
            self._watch_aggregate(t, r)

    def _start_round(self, t: Training, number: int, attempt: int) -> None:
        body = t.spec.spec
        now = self.control.clock()
        snapshot = self.control.views.snapshot(now)
        chosen = plan.participants(body.dataset, snapshot.sites, snapshot.catalog, snapshot.rules, body.sites.max)
        if len(chosen.chosen) < body.sites.min:
            why = "; ".join(f"{s}: {w}" for s, w in sorted(chosen.refused.items())) or "no site holds it"
            self._save(t, message=f"waiting: {len(chosen.chosen)} of at least {body.sites.min} sites can take part "
                                  f"in round {number} ({why})")
            return
        views = {s.name: s for s in snapshot.sites}
        classification = snapshot.catalog[body.dataset].classification
        aggregators, refused = plan.aggregator_sites(
            snapshot.sites, [views[s] for s in chosen.chosen], classification, snapshot.rules,
            body.aggregation.sites, body.aggregation.regions)
        if not aggregators:
            why = "; ".join(f"{s}: {w}" for s, w in sorted(refused.items()))
            self._save(t, message=f"waiting: no site may aggregate round {number} ({why})")
            return
        model = self._output(self.store.get_job(t.model_job), "model.npz") if t.model_job else None
        given = {"model.npz": model} if model else {}
        if body.aggregation.secure:
            keys = {s.name: s.agreement_key for s in self.store.list_sites() if s.name in chosen.chosen}
            missing = sorted(s for s in chosen.chosen if not keys.get(s))
            if missing:
                self._save(t, message=f"waiting: {', '.join(missing)} published no key for secure aggregation")
                return
            given["peers.json"] = self._peers(t, number, attempt, keys)
        jobs = self.control.admission.submit(self._step_spec(t, number, chosen.chosen), t.actor,
                                   inputs={(site if len(chosen.chosen) > 1 else ""): given for site in chosen.chosen})
        steps = {site: job.id for site, job in zip(chosen.chosen, jobs)}
        r = Round(t.id, number, attempt, RoundState.TRAINING, chosen.chosen, aggregators[0], steps, started_at=now,
                  bytes_moved=len(model or b"") * len(chosen.chosen))
        self.store.save_round(r)
        self._save(t, message=f"round {number}: local steps at {', '.join(chosen.chosen)}")
        self.control.record("federation", "training.round", t.id, round=number, attempt=attempt,
                            participants=list(chosen.chosen), aggregator=aggregators[0])

    def _step_spec(self, t: Training, number: int, sites: tuple[str, ...]):
        body = t.spec.spec
        step = body.local_step
        config = {**step.config, "dataset": body.dataset, "round": number, "secure": body.aggregation.secure}
        if body.strategy.name == "fedprox":
            config["mu"] = body.strategy.mu
        entrypoint = (f"python -m training.runner step {step.entrypoint}" if FUNCTION_RE.match(step.entrypoint)
                      else step.entrypoint)
        env = {**step.runtime_env.get("env_vars", {}), "FEDCTL_TRAINING_ID": t.id, "FEDCTL_ROUND": str(number),
               "FEDCTL_TRAINING_CONFIG": json.dumps(config, sort_keys=True)}
        spec: dict[str, Any] = {
            "entrypoint": entrypoint, "runtime_env": {**step.runtime_env, "env_vars": env},
            "datasets": [body.dataset], "resources": step.resources.model_dump(mode="json", exclude_none=True),
            "topology": step.topology.model_dump(mode="json", exclude_none=True), "retry": {"limit": 0},
            "priority": body.priority, "queue": body.queue}
        if len(sites) > 1:
            spec["gang"] = {"parts": [{"name": s, "placement": {"sites": [s]}} for s in sites],
                            "timeout": body.round_timeout, "on_part_end": "continue"}
        else:
            spec["placement"] = {"sites": list(sites)}
        return job_from_dict({"metadata": {"name": f"{t.spec.metadata.name}-r{number}", "tenant": t.tenant,
                                           "labels": {"fedctl.io/training": t.id}}, "spec": spec})

    @staticmethod
    def _peers(t: Training, number: int, attempt: int, keys: dict[str, str]) -> bytes:
        """The round's masking context and every participant's public key; each agent derives its
        pairwise secrets from it and its own private key. A new attempt of a round gets new masks."""
        return json.dumps({"context": f"{t.id}/{number}/{attempt}", "keys": keys}, sort_keys=True).encode()

    def _watch_steps(self, t: Training, r: Round) -> None:
        body = t.spec.spec
        now = self.control.clock()
        jobs = self._steps(r)
        reported = tuple(s for s, j in jobs.items() if j.state is JobState.SUCCEEDED)
        lost = tuple(s for s, j in jobs.items() if j.state in (JobState.FAILED, JobState.CANCELLED))
        state = plan.round_state(r.participants, reported, lost, now - r.started_at > body.round_timeout,
                                 body.sites.min)
        if state is plan.RoundState.WAIT:
            return
        late = [j.id for s, j in jobs.items() if not j.state.terminal]
        self._cancel_jobs(late, f"round {r.number} of {t.id} went on without it")
        if state is plan.RoundState.FAIL:
            self._end_round(replace(r, state=RoundState.FAILED, reported=reported, lost=lost, ended_at=now))
            self._save(t, message=f"round {r.number}: only {len(reported)} of at least {body.sites.min} sites "
                                  f"reported (lost: {', '.join(lost) or 'none'}); starting it again")
            return
        left_out = tuple(sorted(set(lost) | {s for s, j in jobs.items() if not j.state.terminal}))
        if body.aggregation.secure and left_out:
            # Their masks are in the survivors' inputs: each survivor reveals what it shared with them.
            peers = self.store.get_artifact(jobs[reported[0]].id, 0, "peers.json")[0]
            reveals = {}
            for site in reported:
                (job,) = self.control.admission.submit(self._reveal_spec(t, r, site), t.actor, inputs={"": {
                    "peers.json": peers, "lost.json": json.dumps(list(left_out)).encode()}})
                reveals[site] = job.id
            self.store.save_round(replace(r, state=RoundState.REVEALING, reported=reported, lost=left_out,
                                          reveals=reveals))
            self._save(t, message=f"round {r.number}: {', '.join(reported)} revealing the masks shared with "
                                  f"{', '.join(left_out)}")
            return
        self._aggregate(t, r, jobs, reported, left_out, None)

    def _reveal_spec(self, t: Training, r: Round, site: str):
        return job_from_dict({"metadata": {"name": f"{t.spec.metadata.name}-r{r.number}-reveal", "tenant": t.tenant,
                                           "labels": {"fedctl.io/training": t.id}},
                              "spec": {"entrypoint": "python -m training.runner reveal", "resources": {"cpus": 0.1},
                                       "placement": {"sites": [site]}, "retry": {"limit": 0},
                                       "priority": t.spec.spec.priority, "queue": t.spec.spec.queue}})

    def _watch_reveals(self, t: Training, r: Round) -> None:
        jobs = self.store.jobs_by_id(list(r.reveals.values()))
        if any(j.state in (JobState.FAILED, JobState.CANCELLED) for j in jobs):
            self._cancel_jobs([j.id for j in jobs], f"round {r.number} of {t.id} starts again")
            self._end_round(replace(r, state=RoundState.FAILED, ended_at=self.control.clock()))
            self._save(t, message=f"round {r.number}: a survivor was lost while revealing; starting it again")
            return
        if not all(j.state is JobState.SUCCEEDED for j in jobs):
            return
        revealed: dict[str, str] = {}
        for job in jobs:
            revealed.update(json.loads(self._output(job, "revealed.json")))
        self._aggregate(t, r, self._steps(r), r.reported, r.lost, json.dumps(revealed, sort_keys=True).encode())

    def _aggregate(self, t: Training, r: Round, jobs: dict[str, Job], reported: tuple[str, ...],
                   left_out: tuple[str, ...], revealed: bytes | None) -> None:
        body = t.spec.spec
        inputs: dict[str, bytes] = {}
        stem, ext = ("masked", "npy") if body.aggregation.secure else ("update", "npz")
        for site in reported:
            inputs[f"{stem}-{site}.{ext}"] = self._output(jobs[site], f"{stem}.{ext}")
        if body.aggregation.secure:
            inputs["shape.npz"] = self._output(jobs[reported[0]], "shape.npz")
            if revealed is not None:
                inputs["revealed.json"] = revealed
        if t.model_job:
            model_job = self.store.get_job(t.model_job)
            inputs["model.npz"] = self._output(model_job, "model.npz")
            inputs["state.npz"] = self._output(model_job, "state.npz")
        spec = job_from_dict({"metadata": {"name": f"{t.spec.metadata.name}-r{r.number}-aggregate", "tenant": t.tenant,
                                           "labels": {"fedctl.io/training": t.id}},
                              "spec": {"entrypoint": "python -m training.runner aggregate",
                                       "runtime_env": {"env_vars": {
                                           "FEDCTL_TRAINING_ID": t.id, "FEDCTL_ROUND": str(r.number),
                                           "FEDCTL_TRAINING_CONFIG": json.dumps({
                                               "strategy": body.strategy.model_dump(mode="json"),
                                               "secure": body.aggregation.secure}, sort_keys=True)}},
                                       "resources": body.aggregation.resources.model_dump(mode="json",
                                                                                          exclude_none=True),
                                       "placement": {"sites": [r.aggregator]}, "retry": {"limit": 0},
                                       "priority": body.priority, "queue": body.queue}})
        (job,) = self.control.admission.submit(spec, t.actor, inputs={"": inputs})
        moved = sum(len(v) for k, v in inputs.items() if k.startswith(("update-", "masked-")))
        metrics = {site: self._metrics(jobs[site]) for site in reported}
        self.store.save_round(replace(r, state=RoundState.AGGREGATING, reported=reported, lost=left_out,
                                      aggregate_job=job.id, bytes_moved=r.bytes_moved + moved,
                                      metrics={"sites": metrics}))
        self._save(t, message=f"round {r.number}: aggregating {len(reported)} updates at {r.aggregator}"
                              + (f" ({', '.join(left_out)} left out)" if left_out else ""))

    def _watch_aggregate(self, t: Training, r: Round) -> None:
        job = self.store.get_job(r.aggregate_job)
        now = self.control.clock()
        if job.state in (JobState.FAILED, JobState.CANCELLED):
            self._end_round(replace(r, state=RoundState.FAILED, ended_at=now))
            self._save(t, message=f"round {r.number}: aggregation {job.state.value}: {job.message}; starting it again")
            return
        if job.state is not JobState.SUCCEEDED:
            return
        model = self._output(job, "model.npz")
        metrics = dict(r.metrics, aggregate=self._metrics(job), seconds=round(now - r.started_at, 3))
        sites = metrics.get("sites", {})
        examples = sum(m.get("examples", 0) for m in sites.values())
        for name in ("accuracy", "loss"):   # the sites' own, weighted by their examples
            if examples and any(name in m for m in sites.values()):
                metrics[name] = sum(m.get(name, 0.0) * m.get("examples", 0) for m in sites.values()) / examples
        self._end_round(replace(r, state=RoundState.DONE, ended_at=now, metrics=metrics,
                                bytes_moved=r.bytes_moved + len(model)))
        done = r.number >= t.spec.spec.rounds
        t = self._save(t, round=r.number, model_job=job.id,
                       state=TrainingState.SUCCEEDED if done else TrainingState.RUNNING,
                       message=f"{'done' if done else 'round'} {r.number} of {t.spec.spec.rounds}"
                               + (f": local accuracy {metrics['accuracy']:.3f}" if "accuracy" in metrics else ""))
        self.control.record("federation", "training.round.done", t.id, round=r.number, reported=list(r.reported),
                            lost=list(r.lost), bytes_moved=r.bytes_moved + len(model))

    # ------------------------------------------------------------ helpers

    def _steps(self, r: Round) -> dict[str, Job]:
        """The round's local step jobs by site, in one read."""
        by_id = {j.id: j for j in self.store.jobs_by_id(list(r.steps.values()))}
        return {site: by_id[job_id] for site, job_id in r.steps.items()}

    def _output(self, job: Job, name: str) -> bytes:
        attempt = job.attempts[-1].number if job.attempts else 0
        return self.store.get_artifact(job.id, attempt, name)[0]

    def _metrics(self, job: Job) -> dict:
        try:
            return json.loads(self._output(job, "metrics.json"))
        except (NotFound, ValueError):
            return {}

    def _cancel_jobs(self, job_ids: list[str], why: str) -> None:
        now = self.control.clock()
        for job in self.store.jobs_by_id([j for j in job_ids if j]):
            if not job.state.terminal:
                self.store.cancel_job(job.id, now, f"cancelled: {why}")
                self.control.record("federation", "job.cancel", job.id, reason=why)
        self.control.changes.bump()

    def _end_round(self, r: Round) -> None:
        self.store.save_round(r)
        metrics = self.control.core.metrics
        metrics.rounds.labels(r.state.name.lower()).inc()
        metrics.round_seconds.observe(max(0.0, r.ended_at - r.started_at))

    def _save(self, t: Training, **changes: Any) -> Training:
        t = replace(t, **changes, updated_at=self.control.clock())
        self.store.save_training(t)
        return t
