"""The site agent's plan step on its own: desired, observed and records in, actions out."""
from __future__ import annotations

import pytest

from federation.jobs import AttemptState
from federation.service.spec_wire import spec_to_pb
from federation.v1 import federation_pb2 as pb
from site_agent.plan import (
    Records,
    Ref,
    Settle,
    SiteWord,
    Start,
    Status,
    Stop,
    Wanted,
    fence_reason,
    keep_folder,
    ours,
    plan,
    plan_fence,
    plan_report,
    starting,
)
from site_agent.ray_driver import RayJob
from site_agent.reconciler import waits_for_site
from tests.conftest import make_spec

A1, B1 = "fed-a-1", "fed-b-1"
WANT = {A1: Wanted("a", 1)}


def jobs(**statuses: str) -> dict[str, RayJob]:
    """jobs(a_1="RUNNING") -> {"fed-a-1": RayJob(...)}"""
    return {f"fed-{k.replace('_', '-')}": RayJob(f"fed-{k.replace('_', '-')}", v) for k, v in statuses.items()}


def records(*, local: dict[str, SiteWord] | None = None, submitted: set[str] | None = None,
            ran: set[str] | None = None, epochs: dict[str, int] | None = None, synced: bool = True,
            fenced: str = "") -> Records:
    return Records(local or {}, submitted or set(), ran or set(), epochs or {}, synced, fenced)


REJECTED = SiteWord(AttemptState.REJECTED, "tenant billing may not run here")


@pytest.mark.parametrize("case, desired, observed, recs, actions", [
    ("nothing changes before the federation speaks on a stream",
     {}, jobs(a_1="RUNNING"), records(synced=False), []),
    ("a fenced site starts nothing, not even what it is told to",
     WANT, {}, records(fenced="lease expired"), []),
    ("a fenced site leaves the stopping to the fence itself",
     {}, jobs(b_1="RUNNING"), records(fenced="lease expired"), []),
    ("a new assignment starts before Ray is listed, where a Ray error cannot fail it",
     WANT, None, records(), [Start(A1, ray_reachable=False)]),
    ("adoption after a restart: the early start is idempotent, so Ray's running job is taken on",
     WANT, None, records(submitted=set()), [Start(A1, ray_reachable=False)]),
    ("what this process submitted is not submitted again before the listing",
     WANT, None, records(submitted={A1}), []),
    ("an attempt the site has its own word on is never started",
     WANT, jobs(), records(local={A1: REJECTED}), []),
    ("adopted and running: nothing to do", WANT, jobs(a_1="RUNNING"), records(submitted={A1}), []),
    ("still pending in Ray: nothing to do", WANT, jobs(a_1="PENDING"), records(submitted={A1}), []),
    ("Ray lost it before it ran (a restarted cluster): started again, now a Ray error fails it",
     WANT, jobs(), records(submitted={A1}), [Start(A1, ray_reachable=True)]),
    ("Ray lost it after it ran: the federation judges, the agent never runs it twice",
     WANT, jobs(), records(submitted={A1}, ran={A1}), []),
    ("cancelled or preempted while running: stopped",
     {}, jobs(a_1="RUNNING"), records(), [Stop(A1, "no longer desired")]),
    ("no longer desired while pending: stopped", {}, jobs(a_1="PENDING"), records(), [Stop(A1, "no longer desired")]),
    ("no longer desired and ended: left alone", {}, jobs(a_1="SUCCEEDED", b_1="STOPPED"), records(), []),
    ("stale epoch: a newer attempt of the job ran here",
     WANT, jobs(a_3="RUNNING"), records(),
     [Settle(A1, SiteWord(AttemptState.REJECTED, "stale epoch: attempt 3 of this job is newer")),
      Stop("fed-a-3", "no longer desired")]),
    ("stale epoch from what an earlier pass saw, before Ray is listed",
     WANT, None, records(epochs={"a": 2}),
     [Settle(A1, SiteWord(AttemptState.REJECTED, "stale epoch: attempt 2 of this job is newer"))]),
    ("starts come first, stops after", {B1: Wanted("b", 1)}, jobs(a_1="RUNNING"), records(),
     [Start(B1, ray_reachable=True), Stop(A1, "no longer desired")]),
])
def test_plan(case, desired, observed, recs, actions):
    assert list(plan(desired, observed, recs).actions) == actions, case


def test_plan_keeps_records_of_desired_attempts_only_and_learns_epochs():
    step = plan(WANT, jobs(a_1="RUNNING", c_4="SUCCEEDED"), records(submitted={A1, B1}, ran={B1}, epochs={"a": 1}))
    assert step.acts and step.submitted == {A1} and step.ran == {A1}
    assert step.epochs == {"a": 1, "c": 4}
    quiet = plan(WANT, jobs(c_4="RUNNING"), records(submitted={B1}, ran={B1}, synced=False))
    assert not quiet.acts and quiet.submitted == {B1} and quiet.ran == {B1}, "only acting passes prune"
    assert quiet.epochs == {"c": 4}, "epochs are learnt from Ray even when the pass does not act"
    assert plan(WANT, None, records(epochs={"a": 1})).epochs == {"a": 1}


def test_a_fence_stops_what_runs_and_calls_it_and_everything_undecided_lost():
    desired = {A1, B1, "fed-d-1"}
    observed = jobs(a_1="RUNNING", c_1="PENDING", e_1="SUCCEEDED")
    actions = plan_fence(desired, observed, {"fed-d-1": REJECTED}, "lease expired")
    assert actions == [
        Stop(A1, "fencing: lease expired"),
        Settle(A1, SiteWord(AttemptState.LOST, "stopped by the site: lease expired")),
        Stop("fed-c-1", "fencing: lease expired"),
        Settle("fed-c-1", SiteWord(AttemptState.LOST, "stopped by the site: lease expired")),
        Settle(B1, SiteWord(AttemptState.LOST, "not started: lease expired")),
    ], "the ended job is left as it is; an attempt the site already decided keeps its word"
    unreachable = plan_fence({A1}, {}, {}, "x")   # Ray could not be listed: nothing to stop
    assert unreachable == [Settle(A1, SiteWord(AttemptState.LOST, "not started: x"))]


def test_a_fence_leaves_an_ended_attempt_with_rays_word_so_it_never_runs_again():
    # Seen in the fault tests: a job that ended while the federation was down, before the site could
    # say so, was called lost by the fence and ran a second time elsewhere.
    observed = jobs(a_1="SUCCEEDED", b_1="FAILED")
    assert plan_fence({A1, B1}, observed, {}, "lease expired") == []
    report = plan_report({A1, B1}, observed, {}, watched=set(), logs_done=set(), speaks=set(observed), site="s")
    assert [s.state for s in report.statuses] == [AttemptState.SUCCEEDED, AttemptState.FAILED]


def test_a_job_that_succeeded_as_the_fence_stopped_it_is_reported_succeeded():
    lost = SiteWord(AttemptState.LOST, "stopped by the site: lease expired")
    observed = jobs(a_1="SUCCEEDED", b_1="STOPPED")
    report = plan_report({A1, B1}, observed, {A1: lost, B1: lost}, watched=set(), logs_done=set(),
                         speaks=set(observed), site="s")
    assert report.statuses == (Status("a", 1, AttemptState.SUCCEEDED, ""), Status("b", 1, AttemptState.LOST,
                                                                                  lost.message))
    assert report.outputs == (Ref(A1, "a", 1),)


def test_a_fence_leaves_running_what_waits_for_its_site():
    observed = jobs(a_1="RUNNING", b_1="RUNNING")
    actions = plan_fence({A1, B1}, observed, {}, "lease expired", waiting={B1})
    assert actions == [Stop(A1, "fencing: lease expired"),
                       Settle(A1, SiteWord(AttemptState.LOST, "stopped by the site: lease expired"))]
    assert plan_fence({B1}, {}, {}, "x", waiting={B1}) == [], "nor is it called lost before it starts"


def test_starting_is_what_ray_has_not_started_and_the_site_did_not_decide():
    desired = {A1, B1, "fed-c-1", "fed-d-1"}
    assert starting(desired, jobs(a_1="PENDING", b_1="RUNNING"), {"fed-d-1"}) == {A1, "fed-c-1"}


def test_only_this_sites_federation_jobs_are_observed():
    all_jobs = {A1: RayJob(A1, "RUNNING"), B1: RayJob(B1, "RUNNING", site="eu-west"),
                "fed-c-1": RayJob("fed-c-1", "RUNNING", site="eu-central"),
                "raysubmit_x": RayJob("raysubmit_x", "RUNNING")}
    assert set(ours(all_jobs, "eu-west")) == {A1, B1}


def test_the_report_carries_rays_word_unless_the_site_has_its_own():
    observed = {A1: RayJob(A1, "SUCCEEDED"), B1: RayJob(B1, "STOPPED"), "fed-c-1": RayJob("fed-c-1", "RUNNING"),
                "fed-d-1": RayJob("fed-d-1", "FAILED", "exit 86\nreservation mismatch: Ray could not reserve"),
                "fed-e-1": RayJob("fed-e-1", "PENDING")}
    lost = SiteWord(AttemptState.LOST, "stopped by the site: lease expired")
    report = plan_report({A1, B1, "fed-f-1"}, observed, {B1: lost, "fed-c-1": lost, "fed-f-1": REJECTED},
                         watched={A1, B1, "fed-c-1", "fed-e-1"}, logs_done={B1}, speaks=set(observed),
                         site="eu-west")
    assert report.statuses == (
        Status("a", 1, AttemptState.SUCCEEDED, ""),
        Status("c", 1, AttemptState.RUNNING, ""),   # not desired: the site's word on it is not sent
        Status("d", 1, AttemptState.FAILED, "failed reservation: reservation mismatch: Ray could not reserve"),
        Status("e", 1, AttemptState.ASSIGNED, ""),
        Status("b", 1, AttemptState.LOST, lost.message),
        Status("f", 1, AttemptState.REJECTED, REJECTED.message),
    )
    assert report.outputs == (Ref(A1, "a", 1),), "outputs go up with a desired attempt's success only"
    assert report.logs == ((Ref(A1, "a", 1), True), (Ref("fed-c-1", "c", 1), False)), \
        "logs of watched jobs Ray runs or ran, until drained"


RAY_FAILED = "Job entrypoint command failed with exit code {}, last available logs (truncated to 20,000 chars):\n"


def test_ray_words_on_an_attempt_whose_data_keeps_its_logs_are_replaced_by_a_fixed_word():
    leak = "patient 4711 Jane Doe, born 1970-01-01\n"
    observed = {A1: RayJob(A1, "FAILED", RAY_FAILED.format(3) + leak),
                B1: RayJob(B1, "FAILED", RAY_FAILED.format(3) + leak),
                "fed-c-1": RayJob("fed-c-1", "SUCCEEDED", "Job finished successfully."),
                "fed-d-1": RayJob("fed-d-1", "FAILED", RAY_FAILED.format(86) + "reservation mismatch: no GPU\n"),
                "fed-e-1": RayJob("fed-e-1", "FAILED", "runtime_env setup failed: " + leak),
                "fed-f-1": RayJob("fed-f-1", "FAILED", RAY_FAILED.format(4711) + leak),
                "fed-g-1": RayJob("fed-g-1", "STOPPED", "Job was intentionally stopped: " + leak)}
    report = plan_report(set(observed), observed, {}, watched=set(), logs_done=set(), speaks={B1}, site="eu-west")
    assert {s.job_id: s.message for s in report.statuses} == {
        "a": "failed (exit 3); details kept at site eu-west",
        "b": RAY_FAILED.format(3) + leak,           # its data lets logs cross: Ray's word as it is
        "c": "",
        "d": "failed reservation (exit 86); details kept at site eu-west",
        "e": "failed; details kept at site eu-west",
        "f": "failed; details kept at site eu-west",   # no number of the job's choosing goes up either
        "g": "",
    }


@pytest.mark.parametrize("now, lease_s, fenced", [(100.0, 0.0, False), (106.0, 10.0, False), (107.0, 10.0, True)])
def test_a_lease_is_given_up_a_third_early(now, lease_s, fenced):
    reason = fence_reason(now, 100.0, lease_s)
    assert bool(reason) is fenced
    if reason:
        assert reason == "lease expired (no heartbeat acknowledged for 7.0s of a 10s lease)"


def test_an_attempts_folder_stays_while_desired_or_running():
    observed = jobs(a_1="RUNNING", b_1="SUCCEEDED")
    assert keep_folder(A1, set(), observed) and keep_folder(B1, {B1}, observed)
    assert not keep_folder(B1, set(), observed) and not keep_folder("fed-c-1", set(), observed)


def test_only_a_job_that_says_so_waits_for_its_site():
    def assignment(**body) -> pb.Assignment:
        return pb.Assignment(job_id="j", attempt=1, submission_id="fed-j-1", spec=spec_to_pb(make_spec(**body)))

    assert waits_for_site(assignment(on_site_loss="wait"))
    assert not waits_for_site(assignment()) and not waits_for_site(assignment(on_site_loss="replace"))
    assert not waits_for_site(pb.Assignment(spec=pb.JobSpec(json="{not json")))


def test_an_attempt_listed_before_its_spec_arrives_is_kept_but_not_started():
    wanted = {A1: Wanted("a", 1, described=False), B1: Wanted("b", 1, described=False)}
    step = plan(wanted, jobs(a_1="RUNNING"), records())
    assert step.actions == (), "A1 runs on (it is desired) and B1 waits for its spec"
    step = plan({**wanted, B1: Wanted("b", 1)}, jobs(a_1="RUNNING"), records())
    assert step.actions == (Start(B1, True),)
