"""An attempt's guard (`site_agent.guard`), run as Ray would run it: a real process over a real
lease file, stopping every other process of its group once the agent's lease lapses."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from federation.errors import InvalidSpec
from federation.v1 import federation_pb2 as pb
from site_agent import guard, lease_file
from site_agent.lease_file import Lease, now_boot
from site_agent.plan import GUARDED_OUT, plan_report
from site_agent.ray_driver import RayJob
from site_agent.reconciler import Reconciler
from tests.conftest import make_spec
from tests.unit.test_reconciler import MemoryRay, assignment, site_config, states
from tests.waiting import wait_for


def renewed(tmp_path, lease_s: float, ago: float = 0.0) -> None:
    path = lease_file.lease_path(tmp_path, "eu-west")
    lease_file.prepare(path)
    lease_file.save(path, Lease(lease_s, time.time() - ago, now_boot() - ago))


def guarded(tmp_path, entrypoint: str) -> subprocess.Popen:
    command, env = guard.wrap(entrypoint, lease_file.lease_path(tmp_path, "eu-west"))
    return subprocess.Popen(command, shell=True, env={**os.environ, **env}, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)   # a group of its own, as Ray gives each entrypoint


def alive(pid: int) -> bool:
    """Running, not gone or a zombie waiting for whoever adopted it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_job_whose_lease_holds_runs_to_its_end_with_its_own_exit_code(tmp_path):
    renewed(tmp_path, 1.5)
    p = guarded(tmp_path, "sleep 1.5; exit 3")
    deadline = time.monotonic() + 20
    while p.poll() is None and time.monotonic() < deadline:
        renewed(tmp_path, 1.5)   # an agent heartbeating: the lease never lapses
        time.sleep(0.1)
    assert p.wait(timeout=1) == 3, p.stderr.read()


def test_a_job_whose_agent_falls_silent_is_stopped_with_everything_it_started(tmp_path):
    renewed(tmp_path, 3.0)
    marker = tmp_path / "grandchild"
    p = guarded(tmp_path, f"(trap '' TERM; sleep 60) & echo $! > {marker}; sleep 60")
    started = time.monotonic()
    assert p.wait(timeout=20) == guard.FENCED_EXIT
    assert 1.5 < time.monotonic() - started < 10   # five sixths of a 3 s lease after its renewal
    assert "fenced: the site's agent renewed no lease for" in p.stderr.read()
    assert not alive(int(marker.read_text()))   # even the one that ignored SIGTERM


def test_whatever_stops_the_guards_group_stops_the_job(tmp_path):
    """Ray kills an entrypoint's process group when its supervisor dies: the job must go with it."""
    renewed(tmp_path, 3600.0)
    marker = tmp_path / "job"
    p = guarded(tmp_path, f"sleep 60 & echo $! > {marker}; wait")
    job = int(wait_for(lambda: marker.exists() and marker.read_text().strip(), 10, "the job to start"))
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    wait_for(lambda: not alive(job), 5, "the job to go with its guard's group")


@pytest.mark.parametrize("kept", [None, 0.0])
def test_without_a_lease_the_guard_only_waits(tmp_path, kept):
    if kept is not None:   # a lease of zero: the federation set none, and the site never fences
        renewed(tmp_path, kept, ago=3600)
    assert guarded(tmp_path, "sleep 0.6; exit 0").wait(timeout=20) == 0


def test_a_lease_another_user_could_have_written_is_not_believed(tmp_path):
    renewed(tmp_path, 0.5, ago=3600)   # long lapsed: believed, it would stop the job at once
    folder = lease_file.lease_path(tmp_path, "eu-west").parent
    os.chmod(folder, 0o777)
    p = guarded(tmp_path, "sleep 1; exit 0")
    assert p.wait(timeout=20) == 0
    assert "no lease of the agent's to read" in p.stderr.read()
    os.chown(folder, 65534, 65534)   # made by another user before the agent: the agent refuses to start
    with pytest.raises(PermissionError, match="belongs to uid 65534, not to this agent"):
        lease_file.prepare(lease_file.lease_path(tmp_path, "eu-west"))


def test_the_lease_is_readable_by_the_tenants_users_and_writable_by_the_agent_only(tmp_path):
    old = os.umask(0o077)
    try:
        renewed(tmp_path, 30.0)
    finally:
        os.umask(old)
    lease = lease_file.lease_path(tmp_path, "eu-west")
    assert stat.S_IMODE(lease.stat().st_mode) == 0o644
    assert stat.S_IMODE(lease.parent.stat().st_mode) == 0o755
    assert lease_file.load(lease, os.geteuid()).lease_s == 30.0


def test_every_attempt_runs_behind_its_guard_but_those_that_wait_for_their_site(tmp_path):
    ray = MemoryRay()
    r = Reconciler(site_config(tmp_path), ray)
    r.set_desired([assignment("j-1"), assignment("j-2", on_site_loss="wait")])
    r.reconcile()
    (one, _), (two, _) = ray.entrypoints["fed-j-1-1"], ray.entrypoints["fed-j-2-1"]
    env = dict(ray.submitted)["fed-j-1-1"]["env_vars"]
    assert one == f"{sys.executable} -m site_agent.guard" and env["FEDCTL_GUARDED"] == "echo hi"
    assert env["FEDCTL_LEASE_FILE"] == str(lease_file.lease_path(tmp_path, "eu-west"))
    assert two == "echo hi" and "FEDCTL_GUARDED" not in dict(ray.submitted)["fed-j-2-1"]["env_vars"]
    for name in guard.ENV:   # a job may not pose as a guard
        with pytest.raises(InvalidSpec, match=f"env_vars.{name}: set by the site"):
            make_spec(runtime_env={"env_vars": {name: "x"}})


EXITED_87 = f"Job entrypoint command failed with exit code {guard.FENCED_EXIT}, last available logs:\nsecret"


@pytest.mark.parametrize("guarded_job,fired,state", [(True, True, "lost"), (True, False, "failed"),
                                                      (False, True, "failed")])
def test_a_guarded_attempt_stopped_while_its_agent_was_away_is_lost_and_any_other_exit_failed(
        guarded_job, fired, state):
    job = RayJob("fed-j-1-1", "FAILED", EXITED_87, guarded=guarded_job)
    report = plan_report({"fed-j-1-1"}, {"fed-j-1-1": job}, {}, (), (), speaks={"fed-j-1-1"}, site="eu-west",
                         guards_fired=fired)
    (status,) = report.statuses
    assert status.state.value == state
    assert (status.message == GUARDED_OUT) == (state == "lost")


def test_the_agent_reports_its_guarded_out_attempt_lost(tmp_path):
    ray = MemoryRay()
    r = Reconciler(site_config(tmp_path), ray, guards_fired=True)
    r.set_desired([assignment("j-1")])
    r.reconcile()
    ray.jobs_["fed-j-1-1"] = RayJob("fed-j-1-1", "FAILED", EXITED_87, guarded=True)
    assert states(r.reconcile()) == {"j-1/1": pb.ATTEMPT_STATE_LOST}
