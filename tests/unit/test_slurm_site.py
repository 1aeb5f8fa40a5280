"""The pure parts of a Slurm-backed site: Slurm's job states as attempt states, `scontrol -o show job`
read for this site's jobs only, GPUs from GRES, and the batch script of an attempt."""
from __future__ import annotations

from pathlib import Path

import pytest

from federation.errors import ConfigError
from federation.jobs import AttemptState
from federation.spec.site import SlurmSpec
from site_agent.plan import Ref, ray_status
from site_agent.ray_driver import RayJob
from site_agent.slurm import attempt_state, batch_script, gres_gpus, parse_jobs


@pytest.mark.parametrize("state, stopping, status, attempt", [
    ("PENDING", False, "PENDING", AttemptState.ASSIGNED),
    ("CONFIGURING", False, "PENDING", AttemptState.ASSIGNED),
    ("RUNNING", False, "RUNNING", AttemptState.RUNNING),
    ("COMPLETING", False, "RUNNING", AttemptState.RUNNING),
    ("COMPLETED", False, "SUCCEEDED", AttemptState.SUCCEEDED),
    ("FAILED", False, "FAILED", AttemptState.FAILED),
    ("TIMEOUT", False, "FAILED", AttemptState.FAILED),
    ("OUT_OF_MEMORY", False, "FAILED", AttemptState.FAILED),
    ("CANCELLED", True, "STOPPED", AttemptState.STOPPED),      # the agent's own scancel
    ("CANCELLED", False, "FAILED", AttemptState.LOST),        # someone at the site cancelled it
    ("PREEMPTED", False, "FAILED", AttemptState.LOST),
    ("NODE_FAIL", False, "FAILED", AttemptState.LOST),
])
def test_slurm_states_as_attempt_states(state, stopping, status, attempt):
    got, message = attempt_state(state, "3:0", "42", stopping)
    assert got == status
    reported = ray_status(Ref("fed-j-0a1b2c3d4e5f-1", "j-0a1b2c3d4e5f", 1), RayJob("s", got, message), True, "hpc",
                          False)
    assert reported.state is attempt
    if state == "FAILED":
        assert message.startswith("Job entrypoint command failed with exit code 3")


LINE = ("JobId={id} JobName={name} UserId={user} JobState={state} Reason=None ExitCode=0:0 "
        "WorkDir=/tmp Comment={comment} StdErr=/tmp/x.out Power=")


AGENT = "fedagent(500)"


def test_only_this_sites_jobs_are_read_and_the_newest_of_a_name_counts():
    text = "\n".join([
        LINE.format(id=7, name="fed-j-0a1b2c3d4e5f-1", state="CANCELLED", comment="federation_site=hpc", user=AGENT),
        LINE.format(id=9, name="fed-j-0a1b2c3d4e5f-1", state="RUNNING", comment="federation_site=hpc", user=AGENT),
        LINE.format(id=8, name="fed-j-1a1b2c3d4e5f-1", state="RUNNING", comment="federation_site=other", user=AGENT),
        LINE.format(id=10, name="fed-j-2a1b2c3d4e5f-1", state="RUNNING", comment="(null)", user=AGENT),
        # another user's job, named and marked as one of ours: not adopted, and its state not reported
        LINE.format(id=12, name="fed-j-3a1b2c3d4e5f-1", state="COMPLETED", comment="federation_site=hpc",
                    user="mallory(1001)"),
        f"JobId=11 JobName=spaced name UserId={AGENT} JobState=COMPLETED Comment=federation_site=hpc  Power=",
    ])
    jobs = parse_jobs(text, "hpc", 500)
    assert sorted(jobs) == ["fed-j-0a1b2c3d4e5f-1", "spaced name"]
    assert (jobs["fed-j-0a1b2c3d4e5f-1"]["JobId"], jobs["fed-j-0a1b2c3d4e5f-1"]["JobState"]) == ("9", "RUNNING")


@pytest.mark.parametrize("gres, gpus", [("(null)", 0), ("gpu:4", 4), ("gpu:a100:4(S:0-1)", 4),
                                        ("gpu:a100:2,gpu:v100:2,nvme:1", 4), ("nvme:1", 0)])
def test_gpus_from_gres(gres, gpus):
    assert gres_gpus(gres) == gpus


def script(**kw) -> str:
    args = dict(cpus=1.5, memory=3 << 30, gpus=2, time_limit=3600.0, settings=SlurmSpec(partitions=["gpu", "long"],
                account="proj", qos="normal"), folder=Path("/srv/fed/slurm"))
    args.update(kw)
    return batch_script("fed-j-0a1b2c3d4e5f-1", "hpc", "python train.py 'a b'",
                        {"working_dir": "/srv/fed/jobs", "env_vars": {"MODEL": "it's $x"}}, **args)


def test_the_batch_script_asks_slurm_for_the_attempts_resources():
    text = script()
    directives = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("#SBATCH")]
    assert directives == ["--job-name=fed-j-0a1b2c3d4e5f-1", "--comment=federation_site=hpc",
                          "--output=/srv/fed/slurm/fed-j-0a1b2c3d4e5f-1.out", "--nodes=1", "--ntasks=1",
                          "--cpus-per-task=2", "--export=NONE", "--chdir=/srv/fed/jobs", "--mem=3072M",
                          "--gres=gpu:2", "--time=60", "--partition=gpu,long", "--account=proj", "--qos=normal"]
    assert "export MODEL='it'\"'\"'s $x'\n" in text
    assert text.rstrip().endswith("-- 'python train.py '\"'\"'a b'\"'\"''")


def test_the_sites_default_time_limit_applies_to_a_job_without_one():
    assert "#SBATCH --time=720\n" in script(time_limit=0.0, settings=SlurmSpec(time_limit="12h"))
    assert "--time" not in script(time_limit=0.0)


@pytest.mark.parametrize("kw, env, message", [
    ({"gpus": 0.5}, {}, "resources.gpus: 0.5; Slurm gives whole GPUs"),
    ({}, {"pip": ["numpy"]}, "runtime_env.pip: a Slurm site runs jobs in its own environment"),
])
def test_what_a_slurm_site_cannot_run_is_refused(kw, env, message):
    args = dict(cpus=1, memory=0, gpus=0, time_limit=0.0, settings=SlurmSpec(), folder=Path("/tmp/x"))
    args.update(kw)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        batch_script("fed-j-0a1b2c3d4e5f-1", "hpc", "true", env, **args)
