"""End to end: an `#SBATCH` script submitted with the CLI runs as a job array through the real
federation, each element seeing its SLURM_* variables; `fedctl convert` prints the same spec; a bad
directive is refused with its line and nothing is stored; `fedctl jobs` takes Slurm's state names."""
from __future__ import annotations

import pytest
import yaml

pytestmark = pytest.mark.e2e

SCRIPT = """#!/bin/bash
#SBATCH --job-name=Shard_Count
#SBATCH --account=e2e
#SBATCH --array=0-2
#SBATCH --cpus-per-task=1
#SBATCH --mem=64M
#SBATCH --time=5
#SBATCH --output=shard-%a.out
#FED --sites=us-east

echo "shard $SLURM_ARRAY_TASK_ID of $SLURM_JOB_NAME, $SLURM_CPUS_PER_TASK cpu"
"""


def test_an_sbatch_array_runs_with_its_slurm_variables(federation, client, tmp_path):
    path = tmp_path / "shards.sbatch"
    path.write_text(SCRIPT)
    r = federation.cli("submit", str(path), "--wait", "--timeout", "120", timeout=180)
    assert r.returncode == 0, r.stderr
    assert "note: " in r.stderr and "#SBATCH --output=shard-%a.out skipped" in r.stderr
    ids = [line for line in r.stdout.splitlines() if line.startswith("j-")][:3]
    assert len(ids) == 3
    for i, job_id in enumerate(sorted(ids, key=lambda j: int(j.rsplit("-", 1)[1]))):
        status = client.get(job_id)
        assert (status.state, status.site, status.name) == ("succeeded", "us-east", "shard-count")
        assert client.logs(job_id) == f"shard {i} of shard-count, 1 cpu\n"

    converted = federation.cli("convert", str(path))
    assert converted.returncode == 0, converted.stderr
    spec = yaml.safe_load(converted.stdout)
    assert spec["spec"]["resources"] == {"cpus": 1, "memory": "64Mi"} and spec["spec"]["time_limit"] == "5m"

    submitter = client.get(ids[0]).submitter
    done = federation.cli_json("jobs", "--state", "CD,PD", "-A", "e2e", "--user", submitter, "--limit", "0")
    assert set(ids) <= {j["id"] for j in done["jobs"]} and submitter
    assert {j["state"] for j in done["jobs"]} <= {"succeeded", "pending"}
    assert federation.cli_json("jobs", "-u", "someone-else", "--limit", "0")["jobs"] == []


def test_a_refused_directive_names_its_line_and_stores_nothing(federation, client, tmp_path):
    before = len(client.jobs(limit=10_000))
    path = tmp_path / "bad.sbatch"
    path.write_text(SCRIPT.replace("#SBATCH --mem=64M", "#SBATCH --exclusive"))
    for command in ("submit", "convert"):
        r = federation.cli(command, str(path))
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.strip() == (f"error[INVALID_SPEC]: {path}:6: #SBATCH --exclusive: not supported: ask for "
                                    "the CPUs, memory and GPUs the job uses; the federation packs by them")
    assert len(client.jobs(limit=10_000)) == before
