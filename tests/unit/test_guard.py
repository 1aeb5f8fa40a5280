"""An attempt's guard (`site_agent.guard`), run as Ray would run it: a real process over a real
lease file, stopping its job's whole process group once the agent's lease lapses."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from federation.v1 import federation_pb2 as pb
from site_agent import guard, lease_file
from site_agent.plan import GUARDED_OUT, plan_report
from site_agent.ray_driver import RayJob
from site_agent.reconciler import Reconciler
from tests.unit.test_reconciler import assignment, site_config, states


def guarded(tmp_path, entrypoint: str) -> subprocess.Popen:
    command, env = guard.wrap(entrypoint, lease_file.lease_path(tmp_path, "eu-west"))
    return subprocess.Popen(command, shell=True, env={**os.environ, **env}, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_a_job_whose_lease_holds_runs_to_its_end_with_its_own_exit_code(tmp_path):
    lease = lease_file.lease_path(tmp_path, "eu-west")
    lease_file.save(lease, 1.5, time.time())
    p = guarded(tmp_path, "sleep 1.5; exit 3")
    deadline = time.monotonic() + 20
    while p.poll() is None and time.monotonic() < deadline:
        lease_file.save(lease, 1.5, time.time())   # an agent heartbeating: the lease never lapses
        time.sleep(0.1)
    assert p.wait(timeout=1) == 3, p.stderr.read()


def test_a_job_whose_agent_falls_silent_is_stopped_with_everything_it_started(tmp_path):
    lease = lease_file.lease_path(tmp_path, "eu-west")
    lease_file.save(lease, 3.0, time.time())
    marker = tmp_path / "grandchild"
    p = guarded(tmp_path, f"(trap '' TERM; sleep 60) & echo $! > {marker}; sleep 60")
    started = time.monotonic()
    assert p.wait(timeout=20) == guard.FENCED_EXIT
    assert 1.5 < time.monotonic() - started < 10   # two thirds of a 3 s lease after its renewal
    assert "fenced: the site's agent renewed no lease for" in p.stderr.read()
    assert not alive(int(marker.read_text()))   # even the one that ignored SIGTERM


def alive(pid: int) -> bool:
    """Running, not gone or a zombie waiting for whoever adopted it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("kept", [None, 0.0])
def test_without_a_lease_the_guard_only_waits(tmp_path, kept):
    if kept is not None:   # a lease of zero: the federation set none, and the site never fences
        lease_file.save(lease_file.lease_path(tmp_path, "eu-west"), kept, time.time() - 3600)
    assert guarded(tmp_path, "sleep 0.6; exit 0").wait(timeout=20) == 0


def test_the_lease_is_readable_by_the_tenants_users_and_writable_by_the_agent_only(tmp_path):
    lease = lease_file.lease_path(tmp_path, "eu-west")
    lease_file.save(lease, 30.0, 1000.0)
    assert stat.S_IMODE(lease.stat().st_mode) == 0o644
    assert stat.S_IMODE(lease.parent.stat().st_mode) == 0o755
    assert lease_file.load(lease) == (30.0, 1000.0)


def test_every_attempt_runs_behind_its_guard_but_those_that_wait_for_their_site(tmp_path):
    from tests.unit.test_reconciler import MemoryRay
    ray = MemoryRay()
    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([assignment("j-1"), assignment("j-2", on_site_loss="wait")])
    r.reconcile()
    (one, _), (two, _) = ray.entrypoints["fed-j-1-1"], ray.entrypoints["fed-j-2-1"]
    env = dict(ray.submitted)["fed-j-1-1"]["env_vars"]
    assert one == f"{sys.executable} -m site_agent.guard" and env["FEDCTL_GUARDED"] == "echo hi"
    assert env["FEDCTL_LEASE_FILE"] == str(lease_file.lease_path(tmp_path, "eu-west"))
    assert two == "echo hi" and "FEDCTL_GUARDED" not in dict(ray.submitted)["fed-j-2-1"]["env_vars"]


def test_an_attempt_its_guard_stopped_is_reported_lost_not_failed(tmp_path):
    fenced = RayJob("fed-j-1-1", "FAILED", f"Job entrypoint command failed with exit code {guard.FENCED_EXIT}, "
                                           "last available logs:\nsecret output")
    failed = RayJob("fed-j-2-1", "FAILED", "Job entrypoint command failed with exit code 1, last available logs")
    report = plan_report({"fed-j-1-1", "fed-j-2-1"}, {j.submission_id: j for j in (fenced, failed)}, {}, (), (),
                         speaks={"fed-j-1-1", "fed-j-2-1"}, site="eu-west")
    by = {(s.job_id, s.attempt): (s.state.value, s.message) for s in report.statuses}
    assert by[("j-1", 1)] == ("lost", GUARDED_OUT)
    assert by[("j-2", 1)][0] == "failed"


def test_a_lost_attempt_reaches_the_federation_as_lost(tmp_path):
    from tests.unit.test_reconciler import MemoryRay
    ray = MemoryRay()
    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([assignment("j-1")])
    r.reconcile()
    ray.jobs_["fed-j-1-1"] = RayJob("fed-j-1-1", "FAILED", f"Job entrypoint command failed with exit code "
                                                          f"{guard.FENCED_EXIT}")
    assert states(r.reconcile()) == {"j-1/1": pb.ATTEMPT_STATE_LOST}
