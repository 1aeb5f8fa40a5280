"""The pure parts of a Slurm-backed site: Slurm's job states as attempt states, `squeue --json` read
for this site's jobs of the agent's user only, GPUs from GRES, sbatch's arguments and the batch
script of an attempt (nothing a job sets can become an sbatch option or a shell command)."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from federation.errors import ConfigError
from federation.jobs import AttemptState
from federation.spec import JobSpec
from federation.spec.site import SlurmSpec
from site_agent.launch import nodes_of
from site_agent.plan import Ref, ray_status
from site_agent.ray_driver import RayJob
from site_agent.slurm import attempt_state, batch_script, exit_code, parse_jobs, sbatch_args
from site_agent.slurm_inventory import gres_gpus_by_model, hostnames, inventory


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


def job(job_id: int, name: str, comment: str = "federation_site=hpc", uid: int = 500, **extra) -> dict:
    return {"job_id": job_id, "name": name, "user_id": uid, "comment": comment, "job_state": "RUNNING",
            "exit_code": 0, **extra}


def test_only_this_sites_jobs_of_its_users_are_read():
    text = json.dumps({"jobs": [
        job(7, "fed-j-0a1b2c3d4e5f-1"),
        job(8, "fed-j-1a1b2c3d4e5f-1", comment="federation_site=other"),
        job(9, "fed-j-2a1b2c3d4e5f-1", comment=""),
        # another user's job, named and marked as one of ours, even in text that reads like scontrol's
        job(10, "fed-j-3a1b2c3d4e5f-1", comment="federation_site=hpc", uid=1001),
        job(11, "x UserId=fedagent(500)", comment="federation_site=hpc UserId=fedagent(500) JobId=7", uid=1001),
    ]})
    assert sorted(parse_jobs(text, "hpc", lambda uid: uid == 500)) == ["7"]
    assert sorted(parse_jobs(text, "hpc", lambda uid: uid in (500, 1001))) == ["10", "7"]


@pytest.mark.parametrize("status, code", [(0, "0:0"), (3 << 8, "3:0"), (9, "0:9")])
def test_exit_codes_from_wait_statuses(status, code):
    assert exit_code(status) == code


@pytest.mark.parametrize("gres, gpus", [("(null)", {}), ("gpu:4", {"": 4}), ("gpu:a100:4(S:0-1)", {"A100": 4}),
                                        ("gpu:a100:2,gpu:v100:2,nvme:1", {"A100": 2, "V100": 2}), ("nvme:1", {})])
def test_gpus_from_gres(gres, gpus):
    assert gres_gpus_by_model(gres) == gpus


def test_slurm_host_lists_expand():
    assert hostnames("gpu[01-03,07],login,s[9-10]") == ["gpu01", "gpu02", "gpu03", "gpu07", "login", "s9", "s10"]
    assert hostnames("") == []
    with pytest.raises(ValueError, match="'x' is not a number or a range"):
        hostnames("gpu[x]")


SINFO = """gpu01|gpu:a100:4(S:0-1)|idle
gpu01|gpu:a100:4(S:0-1)|idle
gpu02|gpu:a100:4|mixed
gpu03|gpu:a100:4|drained
mix01|gpu:a100:2,gpu:v100:2|idle
cpu01|(null)|idle"""
TOPOLOGY = """SwitchName=leaf1 Level=0 LinkSpeed=1 Nodes=gpu[01-02]
SwitchName=leaf2 Level=0 LinkSpeed=1 Nodes=gpu03,mix01
SwitchName=spine Level=1 LinkSpeed=1 Switches=leaf[1-2]"""


def test_a_slurm_sites_gpu_nodes_in_racks_and_blocks_of_its_topology():
    nodes = {n.name: (n.model, n.gpus, n.rack, n.block) for n in inventory(SINFO, TOPOLOGY).nodes}
    assert nodes == {"gpu01": ("A100", 4, "leaf1", "spine"), "gpu02": ("A100", 4, "leaf1", "spine"),
                     "mix01:A100": ("A100", 2, "leaf2", "spine"), "mix01:V100": ("V100", 2, "leaf2", "spine")}
    assert {n.rack for n in inventory(SINFO, "").nodes} == {""}   # no topology plugin: no racks


SETTINGS = SlurmSpec(partitions=["gpu", "long"], account="proj", qos="normal")
FOLDER = Path("/srv/fed/slurm")


def args(**kw) -> list[str]:
    return sbatch_args("fed-j-0a1b2c3d4e5f-1", "hpc", **{"cpus": 1.5, "memory": 3 << 30, "gpus": 2,
                                                         "time_limit": 3600.0, "settings": SETTINGS,
                                                         "folder": FOLDER, **kw})


def test_sbatch_is_asked_for_the_attempts_resources_as_arguments():
    assert args() == ["--job-name=fed-j-0a1b2c3d4e5f-1", "--comment=federation_site=hpc",
                      "--output=/srv/fed/slurm/fed-j-0a1b2c3d4e5f-1.out", "--nodes=1", "--ntasks=1",
                      "--ntasks-per-node=1", "--cpus-per-task=2", "--export=NONE", "--no-requeue",
                      "--chdir=/srv/fed/slurm", "--mem=3072M", "--gres=gpu:2", "--time=60", "--partition=gpu,long",
                      "--account=proj", "--qos=normal"]
    assert "--time=720" in args(time_limit=0.0, settings=SlurmSpec(time_limit="12h"))   # the site's default
    assert not any(a.startswith("--time") for a in args(time_limit=0.0))
    with pytest.raises(ConfigError, match=r"resources.gpus: 0.5; Slurm gives whole GPUs"):
        args(gpus=0.5)


@pytest.mark.parametrize("gpus, topology, nodes", [
    (8, {"gpus_per_node": 2}, 4), (4, {"gpus_per_node": 4}, 1), (8, {}, 1),
    (8, {"nvlink": "required"}, 1)])
def test_a_job_spans_its_gpus_over_gpus_per_node_nodes(gpus, topology, nodes):
    spec = JobSpec.model_validate({"apiVersion": "federation/v1", "kind": "Job", "metadata": {"name": "j"},
                                   "spec": {"entrypoint": "true", "resources": {"gpus": gpus}, "topology": topology}})
    assert nodes_of(spec) == nodes


def test_a_tenants_job_is_its_users_with_that_users_folder_as_its_home():
    from site_agent.isolation import OSUser
    user = OSUser("fedjob-a", 2001, 2002)
    home = FOLDER / "users" / "fedjob-a"
    assert args(user=user, folder=home)[-2:] == ["--uid=2001", "--gid=2002"]
    assert f"--output={home}/fed-j-0a1b2c3d4e5f-1.out" in args(user=user, folder=home)
    text = batch_script("true", {}, SETTINGS, home, user)
    assert f"export HOME={home}\n" in text and "export USER=fedjob-a\n" in text


def test_a_job_over_several_nodes_asks_each_node_for_its_even_part():
    over = args(cpus=6, memory=12 << 30, gpus=8, nodes=4)
    assert {"--nodes=4", "--ntasks=4", "--ntasks-per-node=1", "--cpus-per-task=2", "--mem=3072M",
            "--gres=gpu:2"} <= set(over)
    with pytest.raises(ConfigError, match=r"resources.gpus: 6 do not split evenly over 4 nodes"):
        args(gpus=6, nodes=4)


def test_the_script_sets_the_environment_and_folder_and_reads_as_no_directive(tmp_path):
    # A folder whose name would be sbatch options were it read as a directive: it is only a cd here.
    odd = tmp_path / "x\\'' --job-name=fed-j-victim-1 --gres=gpu:8 #"
    odd.mkdir()
    text = batch_script("python train.py 'a b'", {"working_dir": str(odd), "env_vars": {"MODEL": "it's $x"}},
                        SETTINGS, FOLDER)
    assert not [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert "export MODEL='it'\"'\"'s $x'\n" in text
    assert text.rstrip().endswith("-- 'python train.py '\"'\"'a b'\"'\"''")
    probe = text.replace(text.splitlines()[-1], 'echo "$PWD|$MODEL"')
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out == f"{odd}|it's $x\n"


@pytest.mark.parametrize("env, message", [
    ({"pip": ["numpy"]}, "runtime_env.pip: a Slurm site runs jobs in its own environment"),
    ({"env_vars": {"A;touch /tmp/pwned;B": "1"}}, "is not a variable name a shell can set"),
    ({"env_vars": {"Z=1 FEDCTL_LEASE_FILE": "x"}}, "is not a variable name a shell can set"),
])
def test_what_a_slurm_site_cannot_run_is_refused(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        batch_script("true", env, SlurmSpec(), FOLDER)


def test_a_slurm_site_refuses_what_only_a_ray_site_can_do():
    from federation.errors import InvalidSpec
    from federation.spec import SiteConfig
    from federation.spec.loader import validate
    doc = {"apiVersion": "federation/v1", "kind": "Site", "metadata": {"name": "hpc"},
           "spec": {"federation": {"address": "127.0.0.1:1", "insecure": True},
                    "location": {"jurisdiction": "DE", "region": "eu"}, "backend": "slurm",
                    "ray": {"local": {"run_as": "fedjob"}}}}
    with pytest.raises(InvalidSpec, match=r"backend: slurm runs each attempt as a Slurm job \(of each tenant's user"):
        validate(SiteConfig, doc, source="hpc.yaml")
    del doc["spec"]["ray"]
    assert validate(SiteConfig, doc, source="hpc.yaml").spec.backend == "slurm"
    doc["spec"]["slurm"] = {"users": "{tenant}"}   # a tenant named root would run as root
    with pytest.raises(InvalidSpec, match=r"hpc.yaml: spec.slurm.users: .*an OS user name with \{tenant\} and a fixed"):
        validate(SiteConfig, doc, source="hpc.yaml")


def test_a_log_is_read_only_as_a_plain_file_never_through_a_link(tmp_path, caplog):
    from site_agent.slurm import SlurmDriver
    driver = SlurmDriver("hpc", SlurmSpec(), tmp_path / "agent")
    secret = tmp_path / "secret"
    secret.write_text("agent's secret\n")
    (tmp_path / "agent" / "fed-j-1.jobid").write_text("41")
    (tmp_path / "agent" / "fed-j-1.out").symlink_to(secret)
    (tmp_path / "agent" / "fed-j-2.jobid").write_text("42")
    (tmp_path / "agent" / "fed-j-2.out").write_text("job 2 says hello\n")
    assert (driver.logs("fed-j-1"), driver._log_size("fed-j-1")) == (b"", 0)
    assert "the log of fed-j-1 is a link: not read" in caplog.text
    assert (driver.logs("fed-j-2", 4), driver._log_size("fed-j-2")) == (b"2 says hello\n", 17)
