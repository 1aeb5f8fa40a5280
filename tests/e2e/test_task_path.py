"""The task path end to end (`spec.execution: task`): attempts run as Ray tasks of the site's runner,
a long-lived Ray job of its agent's, on the real Ray heads of the session's federation. A cancelled
job's whole process tree goes; its logs come back whole and in order; its runtime_env and its GPU
binding hold as on the Ray-job path; a job that uses Ray itself keeps a driver of its own."""
from __future__ import annotations

import http.client
import json
import subprocess
import uuid

import pytest

from site_agent.runner import READY
from tests.e2e.test_federation import job, write
from tests.e2e.test_topology import nvlink_job
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def processes(marker: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout.splitlines()
    return [line for line in found if "pgrep" not in line]


def runner_ids(federation, site: str) -> set[str]:
    return {sid for sid in federation.ray_jobs(site) if sid.startswith(f"fedctl-runner-{site}-")}


def test_a_task_runs_with_its_runtime_env_without_a_ray_job_of_its_own(federation, client):
    j = client.submit(job("task-env", execution="task", placement={"sites": ["eu-west"]},
                          env={"LINES": "2", "PAUSE": "0"}, resources={"cpus": 0.1}))
    status = j.wait(timeout=120)
    assert status.state == "succeeded", status.message
    # working_dir (report.py is in it) and env_vars came through, and its own FEDCTL_ variables.
    assert j.logs() == "line 0 from eu-west\nline 1 from eu-west\n"
    assert f"fed-{j.id}-1" not in federation.ray_jobs("eu-west"), "no Ray job was made for it"
    assert len(runner_ids(federation, "eu-west")) == 1
    assert client.explain(j.id).execution == "task (spec.execution)"


def test_a_task_that_fails_says_so_with_its_exit_code(federation, client):
    j = client.submit(job("task-fails", execution="task", env={"EXIT": "3"}, resources={"cpus": 0.1}))
    status = j.wait(timeout=120)
    assert status.state == "failed"
    assert "exit code 3" in status.attempts[-1].message


def test_a_cancelled_task_has_its_whole_process_tree_stopped(federation, client):
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}"   # a number no other process has in its command line
    j = client.submit(job("task-cancel", execution="task", resources={"cpus": 0.1},
                          entrypoint=f"sleep {marker}.1 & sleep {marker}.2 & trap '' TERM; sleep {marker}.3; wait"))
    wait_for(lambda: j.status().state == "running" and len(processes(marker)) >= 3, 60, "its three sleeps")
    client.cancel(j.id)
    assert j.wait(timeout=60).state == "cancelled"
    # SIGTERM first; the shell that ignores it is killed after the site's grace.
    wait_for(lambda: not processes(marker), 30, "every process of the job to be gone")


def test_a_tasks_logs_come_back_whole_and_in_order(federation, client):
    lines = 3000
    script = (f"import sys, time; [(print(i, flush=True), i % 500 or print('e', i, file=sys.stderr, flush=True), "
              f"time.sleep(0.0005)) for i in range({lines})]")
    j = client.submit(job("task-logs", execution="task", resources={"cpus": 0.1}, entrypoint=f'python -c "{script}"'))
    assert j.wait(timeout=120).state == "succeeded"
    got = [line for line in j.logs().splitlines() if not line.startswith("e ")]
    assert got == [str(i) for i in range(lines)]
    assert [line for line in j.logs().splitlines() if line.startswith("e ")] == [f"e {i}" for i in range(0, lines, 500)]


def test_a_tasks_gpu_binding_holds(federation, tmp_path):
    spec = nvlink_job("task-allreduce")
    spec["spec"]["execution"] = "task"
    out = federation.cli_json("submit", write(tmp_path, spec), "--wait", "--timeout", "120")
    assert (out["state"], out["site"]) == ("succeeded", "us-east"), out
    logs = federation.cli("logs", out["id"]).stdout
    assert "CUDA_VISIBLE_DEVICES 0,1" in logs
    assert "placement group CREATED STRICT_PACK on us-dgx" in logs
    assert f"fed-{out['id']}-1" not in federation.ray_jobs("us-east")


def test_auto_runs_array_elements_as_tasks_and_jobs_naming_ray_as_ray_jobs(federation, client):
    array = client.submit(job("task-array", array="0-3", resources={"cpus": 0.1}, placement={"sites": ["us-east"]}))
    ray_user = client.submit(job("uses-ray", resources={"cpus": 0.1}, placement={"sites": ["us-east"]},
                                 entrypoint="python -c 'import ray; print(ray.__version__)'"))
    assert all(j.wait(timeout=120).state == "succeeded" for j in [*array.jobs, ray_user])
    listed = federation.ray_jobs("us-east")
    assert not {f"fed-{j.id}-1" for j in array.jobs} & set(listed)
    assert f"fed-{ray_user.id}-1" in listed
    assert client.explain(array.jobs[0].id).execution.startswith("task (an array element")
    assert client.explain(ray_user.id).execution.startswith("driver (its entrypoint names Ray")


def runner_door(federation, site: str) -> tuple[str, str]:
    """The runner's address and token, as its agent reads them: from its Ray job's first line."""
    (sid,) = runner_ids(federation, site)
    logs = federation.ray_api(site, f"/api/jobs/{sid}/logs")["logs"]
    line = next(ln for ln in logs.splitlines() if ln.startswith(READY))
    address, token = line[len(READY):].split()
    return address, token


def test_a_task_sees_no_runner_token_and_the_runner_opens_to_nobody_else(federation, client):
    j = client.submit(job("task-env-dump", execution="task", resources={"cpus": 0.1}, entrypoint="env",
                          placement={"sites": ["eu-west"]}))
    assert j.wait(timeout=120).state == "succeeded"
    address, token = runner_door(federation, "eu-west")
    assert token not in j.logs() and "FEDCTL_LEASE" not in j.logs()
    host, port = address.rsplit(":", 1)
    evil = json.dumps({"sid": "fed-j-000000e71100-1", "command": "touch /tmp/pwned", "env": {}, "runtime_env": {},
                       "cpus": 0, "memory": 0, "gpus": 0, "site": "eu-west", "tenant": "e2e", "guarded": False})
    for guess in (None, "", "0" * 64, token[:-1] + ("0" if token[-1] != "0" else "1")):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/start", body=evil, headers={"Authorization": f"Bearer {guess}"} if guess is not None
                     else {})
        assert conn.getresponse().status == 401
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/attempts", headers={"Authorization": f"Bearer {token}"})
    assert "fed-j-000000e71100-1" not in json.loads(conn.getresponse().read())
