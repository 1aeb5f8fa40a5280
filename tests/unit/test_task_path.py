"""The task path's parts without Ray: which path a spec takes, the task that runs an attempt (a real
process group, a real lease file, a real watcher), the sink that puts output together, and the
runner's HTTP door, which opens to its token only."""
from __future__ import annotations

import asyncio
import http.client
import json
import multiprocessing
import os
import signal
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from federation.spec import job_from_dict
from federation.spec.execution import execution_of
from site_agent import lease_file, task
from site_agent.guard import FENCED, FENCED_EXIT
from site_agent.lease_file import Lease, now_boot
from site_agent.ray_driver import Vanished
from site_agent.runner import READY, Sink, handler
from site_agent.tasks import Executions, TaskRunner
from tests.unit.test_guard import alive
from tests.waiting import wait_for


def spec(**body):
    return job_from_dict({"metadata": {"name": "x", "tenant": "t", "labels": body.pop("labels", {})},
                          "spec": {"entrypoint": "python step.py", **body}})


@pytest.mark.parametrize(("body", "path", "why"), [
    ({}, "driver", "a single job runs as a Ray job"),
    ({"execution": "task"}, "task", "spec.execution"),
    ({"execution": "driver", "runtime_env": {"env_vars": {"FEDCTL_ARRAY_INDEX": "3"}}}, "driver", "spec.execution"),
    ({"runtime_env": {"env_vars": {"FEDCTL_ARRAY_INDEX": "3"}}}, "task", "an array element"),
    ({"labels": {"fedctl.io/training": "t-1"}}, "task", "a training's step"),
    ({"entrypoint": "python -c 'import ray; ray.init()'", "runtime_env": {"env_vars": {"FEDCTL_ARRAY_INDEX": "1"}}},
     "driver", "its entrypoint names Ray"),
    ({"entrypoint": "ray job submit -- true"}, "driver", "its entrypoint names Ray"),
    ({"entrypoint": "python array.py --xray gray", "runtime_env": {"env_vars": {"FEDCTL_ARRAY_INDEX": "1"}}},
     "task", "an array element"),
])
def test_auto_picks_the_task_path_for_array_elements_and_training_steps_that_do_not_name_ray(body, path, why):
    e = execution_of(spec(**body))
    assert e.path == path and e.why.startswith(why), e


class Calls:
    """The sink as the task sees it: `x.remote(...)` records the call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):
        outer = self

        class Method:
            def remote(self, *args):
                outer.calls.append((name, *args))
        return Method()

    def output(self, sid: str) -> bytes:
        return b"".join(data for name, s, _, data in sorted(
            (c for c in self.calls if c[0] == "append" and c[1] == sid), key=lambda c: c[2]))


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    monkeypatch.setattr(task, "settle", lambda calls: None)   # the sink here takes each chunk at once


def test_a_task_runs_its_command_in_a_group_of_its_own_and_returns_its_code_and_tail():
    sink = Calls()
    code, tail = task.run_attempt("fed-j-1-1", "echo out; echo err >&2; echo $A; exit 4", {"A": "from-env"}, sink,
                                  "127.0.0.1:1")
    assert code == 4 and tail == b"out\nerr\nfrom-env\n"
    assert sink.calls[0] == ("started", "fed-j-1-1")
    assert sink.output("fed-j-1-1") == b"out\nerr\nfrom-env\n"


def test_what_a_command_leaves_running_is_stopped_when_it_ends(tmp_path):
    marker = tmp_path / "left"
    code, _ = task.run_attempt("fed-j-1-1", f"(sleep 60 & echo $! > {marker}; wait) & sleep 0.2", {}, Calls(), "x")
    assert code == 0
    wait_for(lambda: not alive(int(marker.read_text())), 10, "the process it left behind to be stopped")


def test_a_task_whose_agent_falls_silent_is_fenced_with_its_group(tmp_path):
    path = lease_file.lease_path(tmp_path, "eu-west")
    lease_file.prepare(path)
    lease_file.save(path, Lease(3.0, time.time(), now_boot()))
    marker, sink = tmp_path / "child", Calls()
    began = time.monotonic()
    code, tail = task.run_attempt("fed-j-1-1", f"(trap '' TERM; sleep 60) & echo $! > {marker}; sleep 60",
                                  {"FEDCTL_LEASE_FILE": str(path), "FEDCTL_LEASE_OWNER": str(os.geteuid())}, sink, "x")
    assert code == FENCED_EXIT and FENCED.encode() in tail
    assert time.monotonic() - began < 10
    wait_for(lambda: not alive(int(marker.read_text())), 10, "the child that ignored SIGTERM to be killed")


def _run_in_worker(marker: str) -> None:
    task.run_attempt("fed-j-1-1", f"sleep 60 & echo $! > {marker}; wait", {}, Calls(), "x")


def test_a_task_whose_worker_dies_has_its_job_stopped_by_its_watcher(tmp_path):
    """Ray kills the workers of a runner that died: the job, in a group of its own, must go too."""
    marker = tmp_path / "job"
    worker = multiprocessing.get_context("fork").Process(target=_run_in_worker, args=(str(marker),))
    worker.start()
    wait_for(lambda: marker.exists() and marker.read_text().strip(), 10, "the job to start")
    os.kill(worker.pid, signal.SIGKILL)
    worker.join()
    job = int(marker.read_text())
    wait_for(lambda: not alive(job), 15, "the watcher to stop the job of the dead worker")


def test_the_sink_puts_output_together_by_offset_whatever_order_it_comes_in():
    async def scenario() -> tuple[bytes, int, int]:
        sink = Sink()
        await sink.append("s", 6, b"world\n")
        await sink.append("s", 0, b"hello ")
        await sink.append("s", 6, b"world\n")   # a repeat changes nothing
        waiting = asyncio.create_task(sink.changes(0, 5.0))
        await asyncio.sleep(0.01)
        assert not waiting.done(), "nothing has started or ended yet"
        await sink.started("s")
        return await sink.read("s", 0, 100), await waiting, len(await sink.sizes())
    assert asyncio.run(scenario()) == (b"hello world\n", 1, 1)


class Runner:
    def __init__(self) -> None:
        self.started: list[dict] = []

    def start(self, a: dict) -> bool:
        self.started.append(a)
        return True

    def listing(self) -> dict:
        return {s["sid"]: {"status": "PENDING"} for s in self.started}


@pytest.fixture
def door():
    runner, token = Runner(), "s3cret-token"
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(runner, token))   # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield runner, token, server.server_address[1]
    server.shutdown()


def call(port: int, method: str, path: str, token: str | None, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def test_the_runner_opens_to_its_token_only(door):
    runner, token, port = door
    start = json.dumps({"sid": "fed-j-1-1", "command": "id"}).encode()
    for wrong in (None, "", "s3cret-tokeX", token + "x", token.upper()):
        assert call(port, "POST", "/start", wrong, start)[0] == 401
        assert call(port, "GET", "/attempts", wrong)[0] == 401
    assert runner.started == [], "nothing started for a caller without the token"
    assert call(port, "POST", "/start", token, start) == (200, b'{"started": true}')
    assert json.loads(call(port, "GET", "/attempts", token)[1]) == {"fed-j-1-1": {"status": "PENDING"}}


def test_the_runner_answers_a_bad_request_with_why_and_goes_on_serving(door):
    runner, token, port = door
    status, body = call(port, "POST", "/start", token, b"{not json")
    assert status == 500 and body.startswith(b"JSONDecodeError")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("POST", "/start")
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Length", str(1 << 30))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 500 and b"at most" in response.read()
    assert call(port, "GET", "/nowhere", token)[0] == 404
    assert call(port, "GET", "/attempts", token)[0] == 200 and runner.started == []


def test_a_runner_record_another_user_could_have_written_is_not_believed(tmp_path):
    path = tmp_path / ".fedctl-runner" / "eu-west.json"
    path.parent.mkdir(mode=0o700)
    path.write_text(json.dumps({"submission_id": "fedctl-runner-eu-west-planted"}))
    path.chmod(0o600)
    assert TaskRunner(None, "eu-west", path).record == {"submission_id": "fedctl-runner-eu-west-planted"}  # type: ignore[arg-type]
    path.chmod(0o666)
    assert TaskRunner(None, "eu-west", path).record is None  # type: ignore[arg-type]
    path.chmod(0o600)
    path.parent.chmod(0o777)
    assert TaskRunner(None, "eu-west", Path(path)).record is None  # type: ignore[arg-type]


class RunnerJob:
    """Ray's Jobs API as the runner's agent sees it: the runner job runs and has said where it listens."""

    def __init__(self, sid: str) -> None:
        self.sid = sid

    def status(self, sid: str) -> str | None:
        return "RUNNING" if sid == self.sid else None

    def logs(self, sid: str, offset: int = 0) -> bytes:
        return f"{READY} 127.0.0.1:9 token\n".encode()


def test_an_attempt_handed_to_a_runner_that_is_gone_is_lost_not_started_again(tmp_path):
    """Ray's Jobs API keeps every job it ran, so a second start is a no-op; a runner keeps only its
    own. An agent restarted after its runner died must not start what the dead one may have run."""
    path = tmp_path / ".fedctl-runner" / "eu-west.json"
    path.parent.mkdir(mode=0o700)
    path.write_text(json.dumps({"submission_id": "fedctl-runner-eu-west-old"}))
    TaskRunner(RunnerJob("fedctl-runner-eu-west-old"), "eu-west", path).handed.hand("fed-j-1-1",  # type: ignore[arg-type]
                                                                                    "fedctl-runner-eu-west-old")
    path.write_text(json.dumps({"submission_id": "fedctl-runner-eu-west-new"}))   # the old one died; a new one runs
    runner = TaskRunner(RunnerJob("fedctl-runner-eu-west-new"), "eu-west", path)  # type: ignore[arg-type]
    ray = Executions(RunnerJob("fedctl-runner-eu-west-new"), runner)  # type: ignore[arg-type]
    with pytest.raises(Vanished, match="handed to the task runner fedctl-runner-eu-west-old, which is gone"):
        ray.submit("fed-j-1-1", "true", {}, cpus=0.1, memory=0, gpus=0, metadata={}, task=True)
    path.with_suffix(".handed").chmod(0o666)   # one another user could have written is not believed
    assert TaskRunner(RunnerJob("x"), "eu-west", path).handed.runner == {}  # type: ignore[arg-type]
