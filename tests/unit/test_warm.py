"""Warm workers on real processes: a training's steps handed from attempt to attempt to one worker,
which serves its own OS user only, one attempt at a time, and takes its step down with it when its
caller goes or the agent's lease lapses."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest

from site_agent import lease_file, task, warm
from site_agent.guard import FENCED, FENCED_EXIT
from site_agent.lease_file import Lease, now_boot
from tests.unit.test_guard import alive
from tests.unit.test_task_path import Calls
from tests.waiting import wait_for

STEP = """
import os, pathlib, time
import numpy as np

def local_step(model, path, config):
    hold = os.environ.get("HOLD")
    if hold:
        pathlib.Path(hold + ".in").touch()
    while hold and pathlib.Path(hold).exists():
        time.sleep(0.02)
    if config.get("fail"):
        raise RuntimeError("the step failed")
    print("round", os.environ["FEDCTL_ROUND"], "at", os.getpid(), flush=True)
    return {"w": np.ones(2) * int(os.environ["FEDCTL_ROUND"])}, 3, {"pid": os.getpid()}
"""
COMMAND = "python -m training.runner step warmstep:local_step"


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    monkeypatch.setattr(task, "settle", lambda calls: None)


@pytest.fixture
def work(tmp_path):
    (tmp_path / "warmstep.py").write_text(STEP)
    return tmp_path


RUN = uuid.uuid4().hex[:8]   # no worker of an earlier run of these tests is found


def key(training: str = "t-1", **overrides) -> str:
    args = {"tenant": "oncology", "site": "eu-west", "entrypoint": COMMAND, "runtime_env": {},
            "env": {"FEDCTL_TRAINING_ID": f"{training}-{RUN}", "FEDCTL_ROUND": "1"}} | overrides
    return warm.key(**args)


def attempt(work: Path, number: int, warm_key: str, **extra: str) -> tuple[int, bytes, int | None]:
    """Round `number`'s step: exit code, log tail and the pid that ran the step (None if it did not end well)."""
    inbox, outbox = work / f"in-{number}", work / f"out-{number}"
    inbox.mkdir(exist_ok=True)
    outbox.mkdir(exist_ok=True)
    config = {"dataset": "digits", "round": number, **json.loads(extra.pop("CONFIG", "{}"))}
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(work),
           "FEDCTL_INPUT_DIR": str(inbox), "FEDCTL_OUTPUT_DIR": str(outbox), "FEDCTL_ROUND": str(number),
           "FEDCTL_TRAINING_CONFIG": json.dumps(config), "FEDCTL_DATASET_DIGITS": str(work), "FEDCTL_SITE": "eu-west",
           "FEDCTL_WARM_IDLE_S": "30", warm.ENV_KEY: warm_key, **extra}
    code, tail = task.run_attempt(f"fed-j-{number}-1", COMMAND, env, Calls(), "127.0.0.1:1")
    metrics = outbox / "metrics.json"
    return code, tail, json.loads(metrics.read_text())["pid"] if code == 0 and metrics.exists() else None


def test_a_training_and_its_site_decide_the_worker_and_only_its_own_commands_are_kept_warm():
    assert key() == key(env={"FEDCTL_TRAINING_ID": f"t-1-{RUN}", "FEDCTL_ROUND": "7"})   # rounds share it
    others = {key("t-2"), key(tenant="genomics"), key(site="us-east"), key(runtime_env={"working_dir": "/x"}),
              key(env={"FEDCTL_TRAINING_ID": f"t-1-{RUN}", "CUDA_VISIBLE_DEVICES": "1"}),
              key(entrypoint="python -m training.runner aggregate")}
    assert len(others) == 6 and key() not in others
    assert key(entrypoint="python step.py") == ""
    assert key(entrypoint=COMMAND + "; curl evil") == ""
    assert key(env={"FEDCTL_ROUND": "1"}) == ""   # not a training's
    assert key(env={"FEDCTL_TRAINING_ID": "t-1", "FEDCTL_BINDING": "[]"}) == ""   # a placement group of its own


def test_rounds_of_one_training_run_in_one_worker_each_with_its_own_environment_and_log(work):
    k = key()
    first, second = attempt(work, 1, k), attempt(work, 2, k)
    assert first[0] == second[0] == 0, (first, second)
    assert first[2] == second[2] and alive(first[2])
    assert f"round 1 at {first[2]}".encode() in first[1] and b"round 2" not in first[1]
    assert f"round 2 at {first[2]}".encode() in second[1] and b"round 1" not in second[1]
    assert (work / "out-2" / "update.npz").exists()
    other = attempt(work, 3, key("t-2"))
    assert other[0] == 0 and other[2] != first[2]
    os.kill(first[2], signal.SIGKILL)
    os.kill(other[2], signal.SIGKILL)


def test_a_worker_left_idle_goes(work):
    code, _, pid = attempt(work, 1, key("t-idle"), FEDCTL_WARM_IDLE_S="0.5")
    assert code == 0
    wait_for(lambda: not alive(pid), 10, "the idle worker to exit")


def test_a_failed_step_reports_its_traceback_and_takes_its_worker_with_it(work):
    k = key("t-fail")
    _, _, pid = attempt(work, 1, k)
    code, tail, _ = attempt(work, 2, k, CONFIG='{"fail": true}')
    assert code == 1 and b"RuntimeError: the step failed" in tail
    wait_for(lambda: not alive(pid), 10, "the worker whose step failed to exit")
    code, _, again = attempt(work, 3, k)
    assert code == 0 and again != pid
    os.kill(again, signal.SIGKILL)


def test_a_step_that_cannot_import_fails_the_attempt_with_why(work):
    env_key = key("t-missing")
    code, tail, _ = attempt(work, 1, env_key, PYTHONPATH="/nonexistent")
    assert code == 1 and b"ModuleNotFoundError" in tail


def test_a_busy_worker_turns_a_second_caller_away_and_that_one_runs_cold(work):
    k = key("t-busy")
    _, _, pid = attempt(work, 1, k)
    hold = work / "hold"
    hold.touch()
    first = multiprocessing.get_context("fork").Process(target=attempt, args=(work, 2, k), kwargs={"HOLD": str(hold)})
    first.start()
    wait_for(lambda: Path(f"{hold}.in").exists(), 10, "the first step to be running")
    code, _, cold = attempt(work, 3, k)
    assert code == 0 and cold not in (pid, None)
    hold.unlink()
    first.join(10)
    assert first.exitcode == 0 and alive(pid)
    os.kill(pid, signal.SIGKILL)


def _attempt_and_die(work: Path, number: int, warm_key: str, hold: str) -> None:
    attempt(work, number, warm_key, HOLD=hold)


def test_a_worker_whose_caller_dies_mid_step_takes_its_step_down_with_it(work):
    """The attempt's Ray worker killed (a runner gone, the node lost): nothing may run on unseen."""
    k = key("t-orphan")
    _, _, pid = attempt(work, 1, k)
    hold = work / "hold"
    hold.touch()
    caller = multiprocessing.get_context("fork").Process(target=_attempt_and_die, args=(work, 2, k, str(hold)))
    caller.start()
    wait_for(lambda: Path(f"{hold}.in").exists(), 10, "the step to be running")
    os.kill(caller.pid, signal.SIGKILL)
    caller.join()
    wait_for(lambda: not alive(pid), 10, "the worker to stop its step once its caller went")


def test_a_step_whose_agent_falls_silent_is_fenced_with_its_worker(work, tmp_path):
    k = key("t-fence")
    _, _, pid = attempt(work, 1, k)
    path = lease_file.lease_path(tmp_path, "eu-west")
    lease_file.prepare(path)
    lease_file.save(path, Lease(3.0, time.time(), now_boot()))
    hold = work / "hold"
    hold.touch()
    began = time.monotonic()
    code, tail, _ = attempt(work, 2, k, HOLD=str(hold), FEDCTL_LEASE_FILE=str(path),
                            FEDCTL_LEASE_OWNER=str(os.geteuid()))
    assert code == FENCED_EXIT and FENCED.encode() in tail and time.monotonic() - began < 10
    wait_for(lambda: not alive(pid), 10, "the fenced worker to be stopped")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second OS user")
def test_a_worker_serves_no_other_os_user(work):
    k = key("t-users")
    _, _, pid = attempt(work, 1, k)
    answer = multiprocessing.get_context("fork").Queue()

    def as_nobody() -> None:
        os.setgid(65534)
        os.setuid(65534)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(b"\0fedctl-warm-" + k.encode() + b"-0")   # the worker's own address, root's
        conn.settimeout(5)
        answer.put(conn.recv(100))

    other = multiprocessing.get_context("fork").Process(target=as_nobody)
    other.start()
    other.join(10)
    assert answer.get(timeout=5) == b""   # closed, no READY: it would never read a request
    code, _, same = attempt(work, 2, k)
    assert code == 0 and same == pid
    os.kill(pid, signal.SIGKILL)
