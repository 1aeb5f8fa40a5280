"""On a machine with NVIDIA GPUs: the agent discovers them through NVML (no declared inventory),
the federation places a one-GPU job by model, and the job runs on the very GPU it was bound to.
Without a GPU (CI) there is nothing real to test, and the module is skipped."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from federation.local import LocalFederation
from site_agent.inventory import nvml_gpus
from site_agent.nvml_topology import _short_model
from tests.e2e.conftest import running

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not nvml_gpus(), reason="no NVIDIA GPU visible through NVML on this machine")]

JOBS = Path(__file__).resolve().parent / "jobs"


@pytest.fixture(scope="module")
def gpu_site():
    work = Path(tempfile.mkdtemp(prefix="fgpu-", dir="/tmp"))
    fed = LocalFederation(work=work, sites={"gpu-site": {
        "location": {"jurisdiction": "US", "region": "us-gpu"}, "ray": {"local": {"num_cpus": 4}},
        "work_dir": str(JOBS.parent)}}, port_bases={"gpu-site": 28000})
    yield from running(fed)


def test_nvml_discovery_publishes_this_machines_gpus(gpu_site):
    gpus = nvml_gpus()
    with gpu_site.client() as c:
        (site,) = c.sites()
    assert site.capacity["gpus"] == len(gpus)
    models = {_short_model(g.name) for g in gpus}
    assert {n["model"] for n in site.gpu_nodes} == models
    assert sum(n["gpus"] for n in site.gpu_nodes) == len(gpus)
    assert min(n["memory"] for n in site.gpu_nodes) == min(g.memory for g in gpus)


def test_a_one_gpu_job_runs_on_the_gpu_it_was_bound_to(gpu_site):
    model = _short_model(nvml_gpus()[0].name)
    with gpu_site.client() as c:
        job = c.submit({"apiVersion": "federation/v1", "kind": "Job", "metadata": {"name": "cuda", "tenant": "gpu"},
                        "spec": {"entrypoint": "python cuda.py", "runtime_env": {"working_dir": "jobs"},
                                 "resources": {"cpus": 1, "gpus": 1, "gpu_type": model}}})
        status = job.wait(timeout=180)
        logs = job.logs()
    assert status.state == "succeeded", (status.message, [a.message for a in status.attempts], logs)
    (binding,) = status.attempts[-1].binding
    assert len(binding["gpus"]) == 1
    bound = [line.split()[1] for line in logs.splitlines() if line.startswith("bound ")]
    assert len(bound) == 1 and bound[0].startswith("GPU-"), logs
    if "torch absent" not in logs:
        assert "matmul 1024.0" in logs, logs
