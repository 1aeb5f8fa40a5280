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

from federation.spec import job_from_dict
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


def key(training: str = "t-1", *, tenant: str = "oncology", site: str = "eu-west", entrypoint: str = COMMAND,
        runtime_env: dict | None = None, env: dict | None = None, sealed: tuple = (), **body) -> str:
    variables = {"FEDCTL_TRAINING_ID": f"{training}-{RUN}", "FEDCTL_ROUND": "1"} if env is None else env
    spec = job_from_dict({"metadata": {"name": "s", "tenant": tenant},
                          "spec": {"entrypoint": entrypoint, "datasets": ["digits"],
                                   "runtime_env": {"env_vars": variables}, **body}})
    return warm.key(spec, site, entrypoint, runtime_env or {}, sealed)


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
    ours = {"FEDCTL_TRAINING_ID": f"t-1-{RUN}"}
    assert key() == key(env={**ours, "FEDCTL_ROUND": "7", "FEDCTL_TRAINING_CONFIG": "{}", "FEDCTL_GANG_SIZE": "2"})
    others = {key("t-2"), key(tenant="genomics"), key(site="us-east"), key(runtime_env={"working_dir": "/x"}),
              key(env={**ours, "PATH": "/tmp/evil"}), key(datasets=["digits", "other"]),
              key(entrypoint="python -m training.runner aggregate")}
    assert len(others) == 7 and key() not in others
    assert key(entrypoint="python step.py") == ""
    assert key(entrypoint=COMMAND + "; curl evil") == ""
    assert key(env={"FEDCTL_ROUND": "1"}) == ""   # not a training's
    assert key(resources={"gpus": 1}) == ""   # an idle worker would hold GPUs Ray counts free
    assert key(resources={"gpu_memory": "4Gi"}) == ""
    assert key(sealed=("digits",)) == ""   # only allowed steps, each in a process of its own


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


THREAD = """
import os, threading, time
import numpy as np

def local_step(model, path, config):
    def linger():
        time.sleep(0.5)
        print("LEAKED into", os.environ.get("FEDCTL_ROUND"), flush=True)
    threading.Thread(target=linger, daemon=True).start()
    return {"w": np.ones(2)}, 1, {"pid": os.getpid()}
"""


def test_a_step_that_leaves_a_thread_behind_ends_its_worker_before_the_next_round_meets_it(work):
    (work / "warmstep.py").write_text(THREAD)
    k = key("t-thread")
    code, _, pid = attempt(work, 1, k)
    assert code == 0
    wait_for(lambda: not alive(pid), 10, "the worker whose step left a thread to exit")
    (work / "warmstep.py").write_text(STEP)
    code, tail, again = attempt(work, 2, k)
    assert code == 0 and again != pid and b"LEAKED" not in tail
    os.kill(again, signal.SIGKILL)


def test_a_caller_that_never_sends_its_request_does_not_hold_the_worker(work):
    k = key("t-silent")
    _, _, pid = attempt(work, 1, k)
    silent, _ = warm.connect(k)
    assert silent.recv(len(warm.READY)) == warm.READY   # accepted, and then nothing
    code, _, same = wait_for(lambda: (r := attempt(work, 2, k)) and r[2] == pid and r, warm.GREETING_S + 10,
                             "the worker to serve again once the silent caller timed out")
    assert code == 0 and same == pid
    silent.close()
    os.kill(pid, signal.SIGKILL)
