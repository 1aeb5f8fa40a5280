"""The federated training loop: rounds of local steps as gangs, then an aggregator job (with
secure aggregation, each site's keys before the steps and the survivors' reveals after them).

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
import secrets
import threading
from dataclasses import replace
from typing import Any

from federation import privacy_budget as budget
from federation import training_jobs as jobs_
from federation.control import ControlPlane
from federation.control.catalog import check_access
from federation.control.snapshot import catalog
from federation.errors import FederationError, InvalidSpec, NotFound, ResourceExhausted
from federation.jobs import Job, JobState
from federation.spec import FederatedTrainingSpec
from training import bonawitz
from training import rounds as plan
from training.model import Round, RoundState, Training, TrainingState
from training.privacy import site_noise as dp_noise

log = logging.getLogger("federation.training")

MAX_ROUND_TRIES = 3


class TrainingLoop:
    def __init__(self, control: ControlPlane) -> None:
        self.control = control
        self.store = control.store
        self._budgets = threading.Lock()

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
        with self._budgets:   # two submissions at once cannot both take the last of a budget
            if body.privacy is not None:
                planned = budget.check_training(training)
                budget.check_budget(body.dataset, self.control.core.policy, self.store.trainings(), planned,
                                    f"{spec.metadata.name}'s {body.rounds} rounds")
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
            self._cancel_jobs([*current.keys.values(), *current.steps.values(), *current.reveals.values(),
                               current.aggregate_job], f"training {t.id} cancelled")
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
        elif r.state is RoundState.KEYS:
            self._watch_keys(t, r)
        elif r.state is RoundState.TRAINING:
            self._watch_steps(t, r)
        elif r.state is RoundState.REVEALING:
            self._watch_reveals(t, r)
        elif r.state is RoundState.AGGREGATING:
            self._watch_aggregate(t, r)

    def _start_round(self, t: Training, number: int, attempt: int) -> None:
        body = t.spec.spec
        if body.privacy is not None and not self._within_budget(t, number):
            return
        now = self.control.clock()
        snapshot = self.control.views.snapshot(now)
        chosen = plan.participants(body.dataset, snapshot.sites, snapshot.catalog, snapshot.rules, body.sites.max)
        least = max(body.sites.min, bonawitz.MIN_SITES) if body.aggregation.secure else body.sites.min
        if len(chosen.chosen) < least:
            why = "; ".join(f"{s}: {w}" for s, w in sorted(chosen.refused.items())) or "no site holds it"
            self._save(t, message=f"waiting: {len(chosen.chosen)} of at least {least} sites can take part "
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
        r = Round(t.id, number, attempt, RoundState.TRAINING, chosen.chosen, aggregators[0], started_at=now)
        if body.aggregation.secure:
            proofs = {s.name: s.agreement_proof for s in self.store.list_sites() if s.name in chosen.chosen}
            missing = sorted(s for s in chosen.chosen if not proofs.get(s))
            if missing:
                self._save(t, message=f"waiting: {', '.join(missing)} published no signed key for secure aggregation")
                return
            peers = json.dumps({"context": self._context(r), "participants": list(chosen.chosen),
                                "threshold": self._threshold(t, r),
                                "keys": {site: json.loads(proof) for site, proof in proofs.items()}},
                               sort_keys=True).encode()
            jobs = {site: self._submit(t, jobs_.site_spec(t, number, "keys", site), {"secagg-peers.json": peers})
                    for site in chosen.chosen}
            self.store.save_round(replace(r, state=RoundState.KEYS, keys=jobs))
            self._save(t, message=f"round {number}: {', '.join(chosen.chosen)} making their keys")
        else:
            self._start_steps(t, r, chosen.chosen, {})
        self.control.record("federation", "training.round", t.id, round=number, attempt=attempt,
                            participants=list(chosen.chosen), aggregator=aggregators[0])

    def _within_budget(self, t: Training, number: int) -> bool:
        """Whether round `number` keeps the dataset within its privacy budget; else the training
        stops before it (the policy's budget was lowered since it was admitted)."""
        others = [o for o in self.store.trainings() if o.id != t.id]
        try:
            budget.check_budget(t.spec.spec.dataset, self.control.core.policy, others, budget.spent(t, number),
                                f"round {number} of training {t.id}")
        except ResourceExhausted as e:
            self._save(t, state=TrainingState.FAILED, message=f"stopped before round {number}: {e.message}")
            self.control.record("federation", "training.fail", t.id, round=number, reason="privacy budget")
            return False
        return True

    def _privacy(self, t: Training, r: Round) -> dict[str, float] | None:
        body = t.spec.spec
        if body.privacy is None:
            return None
        fewest = max(body.sites.min, self._threshold(t, r)) if body.aggregation.secure else 1
        z = budget.noise_multiplier(body.privacy, body.rounds)
        return {"clip": body.privacy.clip,
                "noise_std": dp_noise(z, body.privacy.clip, body.aggregation.secure, fewest)}

    def _start_steps(self, t: Training, r: Round, sites: tuple[str, ...], given: dict[str, bytes]) -> None:
        model = self._output(self.store.get_job(t.model_job), "model.npz") if t.model_job else None
        if model:
            given = {**given, "model.npz": model}
        jobs = self.control.admission.submit(jobs_.step_spec(t, r.number, sites, self._privacy(t, r)), t.actor,
                                             inputs={(site if len(sites) > 1 else ""): given for site in sites})
        self.store.save_round(replace(r, state=RoundState.TRAINING, participants=sites,
                                      steps={site: job.id for site, job in zip(sites, jobs)},
                                      bytes_moved=len(model or b"") * len(sites)))
        self._save(t, message=f"round {r.number}: local steps at {', '.join(sites)}")

    def _submit(self, t: Training, spec: Any, inputs: dict[str, bytes]) -> str:
        (job,) = self.control.admission.submit(spec, t.actor, inputs={"": inputs})
        return job.id

    @staticmethod
    def _context(r: Round) -> str:
        """A secure round's context: a new attempt of a round is a new context (sites use each once)."""
        return f"{r.training_id}/{r.number}/{r.attempt}"

    @staticmethod
    def _threshold(t: Training, r: Round) -> int:
        return bonawitz.threshold(len(r.keys or r.participants), t.spec.spec.aggregation.threshold)

    def _watch_keys(self, t: Training, r: Round) -> None:
        """Secure: once the sites' keys are in (or the round's time is up), the local steps at the
        sites that made them, each given every one's signed keys."""
        jobs = self._jobs(r.keys)
        ready = tuple(s for s, j in jobs.items() if j.state is JobState.SUCCEEDED)
        if not self._phase_over(t, r, jobs, ready, "made their keys", bonawitz.MIN_SITES):
            return
        setups = {site: json.loads(self._output(jobs[site], "secagg-setup.json")) for site in ready}
        given = {"secagg-setups.json": json.dumps({"context": self._context(r), "setups": setups},
                                                  sort_keys=True).encode()}
        self._start_steps(t, r, ready, given)

    def _phase_over(self, t: Training, r: Round, jobs: dict[str, Job], done: tuple[str, ...], what: str,
                    least: int = 0) -> bool:
        """Whether a secure round's phase has ended with enough sites (`least` at the fewest); when
        it ended with too few, the round fails (and starts again)."""
        body = t.spec.spec
        now = self.control.clock()
        failed = tuple(s for s, j in jobs.items() if j.state in (JobState.FAILED, JobState.CANCELLED))
        need = max(body.sites.min, self._threshold(t, r), least)
        state = plan.round_state(jobs, done, failed, now - r.started_at > body.round_timeout, need)
        if state is plan.RoundState.WAIT:
            return False
        self._cancel_jobs([j.id for j in jobs.values() if not j.state.terminal], f"round {r.number} of {t.id} went on")
        if state is plan.RoundState.FAIL:
            self._end_round(replace(r, state=RoundState.FAILED, ended_at=now))
            why = "; ".join(f"{s}: {jobs[s].message}" for s in failed)
            self._save(t, message=f"round {r.number}: only {len(done)} of at least {need} sites {what}"
                                  + (f" ({why})" if why else "") + "; starting it again")
            return False
        return True

    def _watch_steps(self, t: Training, r: Round) -> None:
        body = t.spec.spec
        now = self.control.clock()
        jobs = self._steps(r)
        reported = tuple(s for s, j in jobs.items() if j.state is JobState.SUCCEEDED)
        lost = tuple(s for s, j in jobs.items() if j.state in (JobState.FAILED, JobState.CANCELLED))
        need = max(body.sites.min, self._threshold(t, r)) if body.aggregation.secure else body.sites.min
        state = plan.round_state(r.participants, reported, lost, now - r.started_at > body.round_timeout, need)
        if state is plan.RoundState.WAIT:
            return
        late = [j.id for s, j in jobs.items() if not j.state.terminal]
        self._cancel_jobs(late, f"round {r.number} of {t.id} went on without it")
        if state is plan.RoundState.FAIL:
            self._end_round(replace(r, state=RoundState.FAILED, reported=reported, lost=lost, ended_at=now))
            self._save(t, message=f"round {r.number}: only {len(reported)} of at least {need} sites "
                                  f"reported (lost: {', '.join(lost) or 'none'}); starting it again")
            return
        left_out = tuple(sorted(set(lost) | {s for s, j in jobs.items() if not j.state.terminal}))
        if body.aggregation.secure:
            # Every survivor reveals its shares: of the self masks of those that reported, and of
            # the masking keys of those that did not, each told who did by their signed reports.
            request = json.dumps({"context": self._context(r), "dropped": list(left_out), "reported": {
                site: json.loads(self._output(jobs[site], "secagg-report.json")) for site in reported}},
                sort_keys=True).encode()
            reveals = {site: self._submit(t, jobs_.site_spec(t, r.number, "reveal", site),
                                          {"secagg-reveal.json": request}) for site in reported}
            self.store.save_round(replace(r, state=RoundState.REVEALING, reported=reported, lost=left_out,
                                          reveals=reveals))
            self._save(t, message=f"round {r.number}: {', '.join(reported)} revealing their shares"
                                  + (f" ({', '.join(left_out)} left out)" if left_out else ""))
            return
        self._aggregate(t, r, jobs, reported, left_out, {})

    def _watch_reveals(self, t: Training, r: Round) -> None:
        jobs = self._jobs(r.reveals)
        revealed = tuple(s for s, j in jobs.items() if j.state is JobState.SUCCEEDED)
        if not self._phase_over(t, r, jobs, revealed, "revealed their shares"):
            return
        shares = {f"revealed-{site}.json": self._output(jobs[site], "secagg-revealed.json") for site in revealed}
        keys = self._jobs(r.keys)
        shares["round-keys.json"] = json.dumps({site: json.loads(self._output(keys[site], "secagg-setup.json"))
                                                for site in r.participants}, sort_keys=True).encode()
        self._aggregate(t, r, self._steps(r), r.reported, r.lost, shares)

    def _aggregate(self, t: Training, r: Round, jobs: dict[str, Job], reported: tuple[str, ...],
                   left_out: tuple[str, ...], secure: dict[str, bytes]) -> None:
        body = t.spec.spec
        inputs: dict[str, bytes] = dict(secure)
        stem, ext = ("masked", "npy") if body.aggregation.secure else ("update", "npz")
        for site in reported:
            inputs[f"{stem}-{site}.{ext}"] = self._output(jobs[site], f"{stem}.{ext}")
        if body.aggregation.secure:
            inputs["shape.npz"] = self._output(jobs[reported[0]], "shape.npz")
        if t.model_job:
            model_job = self.store.get_job(t.model_job)
            inputs["model.npz"] = self._output(model_job, "model.npz")
            inputs["state.npz"] = self._output(model_job, "state.npz")
        (job,) = self.control.admission.submit(jobs_.aggregate_spec(t, r.number, r.aggregator, self._threshold(t, r)),
                                               t.actor, inputs={"": inputs})
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
        if t.spec.spec.privacy is not None:
            metrics["epsilon"] = round(budget.spent(t, r.number).epsilon, 4)
        self._end_round(replace(r, state=RoundState.DONE, ended_at=now, metrics=metrics,
                                bytes_moved=r.bytes_moved + len(model)))
        done = r.number >= t.spec.spec.rounds
        t = self._save(t, round=r.number, model_job=job.id,
                       state=TrainingState.SUCCEEDED if done else TrainingState.RUNNING,
                       message=f"{'done' if done else 'round'} {r.number} of {t.spec.spec.rounds}"
                               + (f": local accuracy {metrics['accuracy']:.3f}" if "accuracy" in metrics else "")
                               + (f", epsilon {metrics['epsilon']:.3g} spent" if "epsilon" in metrics else ""))
        self.control.record("federation", "training.round.done", t.id, round=r.number, reported=list(r.reported),
                            lost=list(r.lost), bytes_moved=r.bytes_moved + len(model))

    # ------------------------------------------------------------ helpers

    def _steps(self, r: Round) -> dict[str, Job]:
        """The round's local step jobs by site, in one read."""
        return self._jobs(r.steps)

    def _jobs(self, ids: dict[str, str]) -> dict[str, Job]:
        by_id = {j.id: j for j in self.store.jobs_by_id(list(ids.values()))}
        return {site: by_id[job_id] for site, job_id in ids.items()}

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
