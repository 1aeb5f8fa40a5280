"""End to end against a real Slurm (slurmctld, slurmd, munged, and slurmdbd on MariaDB for `sacct`, from
the OS packages; bench/slurm.py):
a federation of one Ray site and one Slurm-backed site. A job whose data lives at the Slurm site runs
there as a Slurm job with a Ray cluster inside it; its logs come back; cancel scancels it; a Slurm-side
scancel is a lost attempt, retried by policy; a restarted agent adopts the running Slurm job. Each
tenant's jobs are its own OS user's (`slurm.users`): another tenant cannot read them, and a job that
replaces its log with a link gets nothing of what the link points at."""
from __future__ import annotations

import json
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from bench import slurm, slurm_accounting
from federation.local import CONFIGS
from tests.e2e.conftest import E2EFederation, os_users, running
from tests.needs import missing
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

HPC, CLOUD = "hpc", "cloud"
USERS = ("fedslurm-e2e", "fedslurm-mallory")   # slurm.users: fedslurm-{tenant}
SECRET = "ROOT-ONLY-SECRET\n" * 8192          # 136 KiB: whatever offset a log is read from, it shows
PROBE = ("python -c \"import os, ray; ray.init(); "
         "print('ray cpus', int(ray.cluster_resources()['CPU']), 'in slurm job', os.environ['SLURM_JOB_ID'])\"")


@pytest.fixture(scope="module")
def cluster():
    if reason := slurm.available() or slurm_accounting.available():
        missing(f"Slurm is needed: {reason} (.ci/run installs it)")
    work = Path(tempfile.mkdtemp(prefix="fslurm-", dir="/tmp"))
    try:
        with slurm.local_slurm(work, slots=4, min_job_age=600, accounting=True, nodes=2, gpus=1) as c:
            yield c
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def federation(cluster):
    os_users(USERS, Path(__file__))
    work = Path(tempfile.mkdtemp(prefix="fse2e-", dir="/tmp"))
    work.chmod(0o711)   # the tenants' users pass through to their own folders
    (work / "hpc").mkdir(mode=0o711)
    (work / "cohort").mkdir()
    (work / "root-only.txt").write_text(SECRET)
    (work / "root-only.txt").chmod(0o600)
    policy = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    policy["spec"]["classifications"]["hpc-internal"] = {
        "allowed_jurisdictions": ["DE"], "allow_staging": False, "may_cross_border": ["results", "logs"]}
    policy["spec"]["datasets"]["cohort-hpc"] = {"classification": "hpc-internal", "sites": [HPC]}
    (work / "policy.yaml").write_text(yaml.safe_dump(policy))
    sites = {
        CLOUD: {"location": {"jurisdiction": "DE", "region": "eu-cloud"}, "ray": {"local": {"num_cpus": 2}}},
        HPC: {"location": {"jurisdiction": "DE", "region": "eu-hpc"}, "backend": "slurm",
              "slurm": {"conf": str(cluster.work / "slurm.conf"), "ray_port_base": 33500, "ray_slots": 4,
                        "users": "fedslurm-{tenant}"},
              "datasets": [{"name": "cohort-hpc", "path": str(work / "cohort")}], "work_dir": str(work / "hpc")},
    }
    yield from running(E2EFederation(work=work, sites=sites, port_bases={CLOUD: 19000},
                                     policy=work / "policy.yaml"))


@pytest.fixture
def client(federation):
    with federation.client() as c:
        yield c


def submit(client, name: str, entrypoint: str, tenant: str = "e2e", **spec):
    return client.submit({"apiVersion": "federation/v1", "kind": "Job", "metadata": {"name": name, "tenant": tenant},
                          "spec": {"entrypoint": entrypoint, "datasets": ["cohort-hpc"], "resources": {"cpus": 1},
                                   **spec}})


def slurm_jobs(cluster, name: str) -> list[dict]:
    """Every job Slurm holds of this name (ended ones for its MinJobAge)."""
    return [j for j in json.loads(cluster.run("squeue", "--json"))["jobs"] if j["name"] == name]


def running_in_slurm(cluster, name: str) -> bool:
    return [j["job_state"] for j in slurm_jobs(cluster, name)] == ["RUNNING"]


def test_a_job_on_data_at_the_slurm_site_runs_there_as_a_slurm_job_with_ray_inside(cluster, client):
    job = submit(client, "ray-probe", PROBE)
    final = job.wait(timeout=240)
    assert (final.state, final.site) == ("succeeded", HPC), (final.message, client.logs(job.id))
    (record,) = slurm_jobs(cluster, f"fed-{job.id}-1")
    assert (record["job_state"], record["comment"]) == ("COMPLETED", f"federation_site={HPC}")
    accounted = f"{record['job_id']}|fed-{job.id}-1|COMPLETED"   # slurmdbd records it soon after
    wait_for(lambda: accounted in cluster.run("sacct", "-n", "-X", "-P", "-o", "JobID,JobName,State",
                                              f"--name=fed-{job.id}-1", failed=""), 30, "sacct's record of the job")
    logs = client.logs(job.id)
    assert f"ray cpus 1 in slurm job {record['job_id']}\n" in logs, logs
    assert "Connected to Ray cluster" in logs


def test_a_job_over_two_nodes_gets_one_ray_cluster_over_its_whole_allocation(cluster, client):
    probe = ("python -c \"import ray; ray.init(); alive = [n for n in ray.nodes() if n['Alive']]; "
             "print('ray nodes', len(alive), 'gpus', int(ray.cluster_resources()['GPU']))\"")
    job = submit(client, "two-nodes", probe, resources={"cpus": 2, "gpus": 2}, topology={"gpus_per_node": 1})
    final = job.wait(timeout=300)
    assert (final.state, final.site) == ("succeeded", HPC), (final.message, client.logs(job.id))
    (record,) = slurm_jobs(cluster, f"fed-{job.id}-1")
    assert (record["job_state"], record["nodes"]) == ("COMPLETED", "node[0-1]"), record
    assert "ray nodes 2 gpus 2\n" in client.logs(job.id)
    uid, since = pwd.getpwnam("fedslurm-e2e").pw_uid, record["start_time"]
    left = [p for p in Path(tempfile.gettempdir()).glob(f"fr{record['job_id']}-*")
            if p.stat().st_uid == uid and p.stat().st_ctime >= since]
    assert not left, f"the allocation's Ray folders are left: {left}"


def test_each_tenants_job_is_its_own_users_and_another_tenant_reads_nothing_of_it(federation, cluster, client):
    job = submit(client, "mine", "id -un; echo my-private-result-42 > $HOME/result.txt; echo my-private-log-42")
    assert job.wait(timeout=240).state == "succeeded"
    (record,) = slurm_jobs(cluster, f"fed-{job.id}-1")
    assert record["user_name"] == "fedslurm-e2e"
    assert client.logs(job.id).startswith("fedslurm-e2e\nmy-private-log-42\n")
    home = federation.work / "hpc" / "slurm" / "users" / "fedslurm-e2e"
    look = (f"id -un; cat {home}/fed-{job.id}-1.out {home}/result.txt; ls {home} {home.parent} "
            f"{federation.work / 'hpc' / 'slurm'}; cat {federation.work / 'root-only.txt'}; true")
    spy = submit(client, "spy", look, tenant="mallory")
    assert spy.wait(timeout=240).state == "succeeded"
    first, *rest = client.logs(spy.id).splitlines()
    assert first == "fedslurm-mallory" and len(rest) == 6, rest   # two files, three folders, root's file
    assert all("Permission denied" in line for line in rest), rest


def test_a_job_that_links_its_log_to_a_file_of_roots_gets_none_of_it(federation, client):
    link = (f'echo before; rm "$HOME/$SLURM_JOB_NAME.out"; ln -s {federation.work / "root-only.txt"} '
            '"$HOME/$SLURM_JOB_NAME.out"; echo after')
    job = submit(client, "linker", link)
    assert job.wait(timeout=240).state == "succeeded"
    assert "ROOT-ONLY" not in client.logs(job.id)
    assert f"the log of fed-{job.id}-1 is a link: not read" in (federation.work / f"{HPC}.log").read_text()


def test_cancel_scancels_the_slurm_job_and_its_processes_end(cluster, client):
    job = submit(client, "sleeper", "sleep 301")
    wait_for(lambda: running_in_slurm(cluster, f"fed-{job.id}-1") and
             subprocess.run(["pgrep", "-f", "sleep 301"], capture_output=True).returncode == 0,
             240, "the job's sleep running inside its Slurm job")
    client.cancel(job.id)
    wait_for(lambda: [j["job_state"] for j in slurm_jobs(cluster, f"fed-{job.id}-1")] == ["CANCELLED"], 60,
             "the Slurm job cancelled")
    assert job.wait(timeout=60).state == "cancelled"
    wait_for(lambda: subprocess.run(["pgrep", "-f", "sleep 301"], capture_output=True).returncode == 1, 60,
             "no process of the job left")


def test_a_slurm_side_scancel_is_a_lost_attempt_retried_by_policy(cluster, client):
    job = submit(client, "scancelled", "sleep 302", retry={"limit": 1, "backoff": 0})
    wait_for(lambda: running_in_slurm(cluster, f"fed-{job.id}-1"), 240, "the first attempt running in Slurm")
    cluster.run("scancel", f"--name=fed-{job.id}-1")
    status = wait_for(lambda: len((s := client.get(job.id)).attempts) == 2 and s, 120, "a second attempt")
    first = status.attempts[0]
    assert first.state == "lost" and "was cancelled there" in first.message, first
    wait_for(lambda: running_in_slurm(cluster, f"fed-{job.id}-2"), 240, "the second attempt, a new Slurm job")
    client.cancel(job.id)
    assert job.wait(timeout=60).state == "cancelled"


def test_a_restarted_agent_adopts_the_running_slurm_job(federation, cluster, client):
    job = submit(client, "adopted", "sleep 20 && echo finished")
    name = f"fed-{job.id}-1"
    wait_for(lambda: running_in_slurm(cluster, name), 240, "the job running in Slurm")
    (before,) = slurm_jobs(cluster, name)
    federation.agents[HPC].kill()   # SIGKILL: no goodbye
    federation.agents[HPC].wait()
    federation.start_agent(HPC)
    final = job.wait(timeout=240)
    assert final.state == "succeeded" and [a.state for a in final.attempts] == ["succeeded"], final
    (after,) = slurm_jobs(cluster, name)   # the same Slurm job: never submitted twice
    assert (after["job_id"], after["job_state"]) == (before["job_id"], "COMPLETED")
    assert client.logs(job.id).endswith("finished\n")


def test_another_users_slurm_job_named_as_an_attempt_is_not_taken_for_it(cluster, client):
    job = submit(client, "spoofed", "sleep 15 && echo finished")
    name = f"fed-{job.id}-1"
    wait_for(lambda: running_in_slurm(cluster, name), 240, "the job running in Slurm")
    # Another user of the cluster (nobody) submits a job of the same name and site mark that fails at once.
    cluster.run("sbatch", "--uid=65534", "--gid=65534", f"--job-name={name}", f"--comment=federation_site={HPC}",
                "--chdir=/tmp", "-o", "/dev/null", "--wrap=exit 7")
    wait_for(lambda: "FAILED" in [j["job_state"] for j in slurm_jobs(cluster, name)], 60, "the impostor failed")
    final = job.wait(timeout=240)
    assert final.state == "succeeded" and [a.state for a in final.attempts] == ["succeeded"], final
