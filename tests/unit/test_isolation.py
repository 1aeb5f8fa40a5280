"""The operating system's means of keeping jobs apart: OS users, handed-over folders, dataset grants."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from federation.errors import ConfigError
from federation.spec.site import LocalRay
from site_agent.isolation import DatasetGrants, JobUsers, as_user, hand_over, os_user
from tests.needs import missing


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        missing("switching users needs root (CI runs as root)")


@pytest.fixture
def open_dir():
    """A folder other users may pass through (pytest's own tmp_path sits below a root-only one)."""
    path = Path(tempfile.mkdtemp(prefix="fiso-unit-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path)


def reads(user: str, path) -> bool:
    return subprocess.run(["su", user, "-s", "/bin/sh", "-c", f"cat {path} >/dev/null"],
                          capture_output=True).returncode == 0


def test_a_missing_user_or_root_is_refused_with_the_field_named():
    with pytest.raises(ConfigError, match=r"spec.ray.local.run_as: no OS user 'no-such-user'"):
        JobUsers(run_as="no-such-user").base()
    with pytest.raises(ConfigError, match=r"tenant_heads.user: no OS user 'fedjob-x-no-such'"):
        JobUsers(tenant_user="fedjob-{tenant}-no-such").of("x")
    with pytest.raises(ConfigError, match="jobs must not run as root"):
        os_user("root", "spec.ray.local.run_as")
    assert JobUsers().of("any") is None


def test_tenant_heads_need_a_user_per_tenant():
    with pytest.raises(ValidationError, match=r"with \{tenant\} and a fixed part"):
        LocalRay(run_as="fedjob", tenant_heads={"user": "fedjob"})
    with pytest.raises(ValidationError, match="not an OS user name"):
        LocalRay(run_as="Bad User")
    with pytest.raises(ValidationError, match="a fixed part"):
        LocalRay(run_as="fedjob", tenant_heads={"user": "{tenant}"})
    with pytest.raises(ValidationError, match="tenant_heads: needs run_as too"):
        LocalRay(tenant_heads={})
    with pytest.raises(ValidationError, match="token_auth: jobs kept apart need Ray's token"):
        LocalRay(run_as="fedjob", token_auth=False)


@pytest.mark.usefixtures("as_root")
def test_a_command_run_as_a_user_has_its_ids_and_none_of_the_agents_groups():
    user = JobUsers(run_as="nobody").base()
    assert user is not None
    out = subprocess.run(as_user(user, ["sh", "-c", "id -u; id -g; id -G"]), capture_output=True, text=True,
                         check=True, cwd="/").stdout.split("\n")
    assert out[:3] == [str(user.uid), str(user.gid), str(user.gid)]
    assert as_user(None, ["true"]) == ["true"]


@pytest.mark.usefixtures("as_root")
def test_a_dataset_is_readable_by_an_attempts_user_only_while_the_attempt_lives(open_dir):
    data = open_dir / "data"
    data.mkdir(mode=0o700)
    (data / "rows.csv").write_text("secret")
    (data / "rows.csv").chmod(0o600)
    nobody = os_user("nobody", "test")
    grants = DatasetGrants()
    assert not reads("nobody", data / "rows.csv")
    grants.allow("fed-j-1-1", [data], nobody)
    assert reads("nobody", data / "rows.csv")
    grants.retain({"fed-j-1-1"})
    assert reads("nobody", data / "rows.csv")
    grants.retain(set())
    assert not reads("nobody", data / "rows.csv")
    assert oct((data / "rows.csv").stat().st_mode & 0o777) == "0o600"


@pytest.mark.usefixtures("as_root")
def test_handed_over_folders_are_their_users_alone(open_dir):
    folder = open_dir / "in"
    folder.mkdir()
    (folder / "x").write_text("input")
    hand_over([folder, folder / "x"], os_user("nobody", "test"))
    assert folder.stat().st_uid == os_user("nobody", "test").uid and (folder.stat().st_mode & 0o777) == 0o700
    assert reads("nobody", folder / "x")


@pytest.mark.usefixtures("as_root")
def test_grants_an_earlier_agent_left_behind_are_taken_back_at_start(open_dir):
    data = open_dir / "rows.csv"
    data.write_text("secret")
    data.chmod(0o600)
    nobody = os_user("nobody", "test")
    DatasetGrants().allow("fed-j-1-1", [data], nobody)    # the agent that granted it is gone
    assert reads("nobody", data)
    DatasetGrants().clear([data], JobUsers(run_as="nobody"))
    assert not reads("nobody", data)


@pytest.mark.usefixtures("as_root")
def test_a_jobs_link_in_a_heads_folder_never_leads_the_agent_elsewhere(open_dir):
    from federation.errors import RayError
    from site_agent.local_ray import PORTS, LocalRayHead
    victim = open_dir / "victim"
    victim.write_text("root's")
    victim.chmod(0o600)
    nobody = os_user("nobody", "test")
    head = LocalRayHead(LocalRay(port_base=24000, temp_dir=open_dir / "head", run_as="nobody"), user=nobody)
    planted = open_dir / "head"                       # made ahead by a job, with the token a link to a root file
    planted.mkdir()
    (planted / "auth_token").symlink_to(victim)
    os.chown(planted, nobody.uid, nobody.gid)
    head._make_dirs()
    assert victim.stat().st_uid == 0 and victim.stat().st_mode & 0o777 == 0o600
    assert victim.read_text() == "root's"
    assert planted.stat().st_uid == 0 and not (planted / "auth_token").is_symlink()
    assert (planted / "auth_token").stat().st_uid == nobody.uid, "the head's user reads its token"
    assert (planted / "ray").stat().st_uid == nobody.uid and planted.stat().st_mode & 0o777 == 0o711
    import socket
    with socket.socket() as squatter:                 # something else on the head's dashboard port
        squatter.bind(("127.0.0.1", 24000 + PORTS["dashboard-port"]))
        squatter.listen()
        with pytest.raises(RayError, match="port 24001 is already in use"):
            head._launch(5)


@pytest.mark.usefixtures("as_root")
def test_a_head_folder_a_job_made_in_tmp_is_never_adopted(open_dir):
    from site_agent.local_ray import LocalRayHead
    from site_agent.tenant_heads import SPAN, TenantHeads
    settings = LocalRay(port_base=23000, run_as="nobody", tenant_heads={"user": "fedjob-{tenant}", "max": 1})
    fake = Path(f"/tmp/fedray-{23000 + SPAN}")   # slot 1's folder, made ahead by a job
    fake.mkdir(exist_ok=True)
    (fake / "tenant").write_text("ghost")        # no such tenant user: adopting it would stop the agent
    os.chown(fake, os_user("nobody", "test").uid, -1)
    try:
        pool = TenantHeads(LocalRayHead(settings, user=os_user("nobody", "test")), driver=None,  # type: ignore[arg-type]
                           users=JobUsers("nobody", "fedjob-{tenant}"))
        assert pool.heads == {}
    finally:
        shutil.rmtree(fake)
