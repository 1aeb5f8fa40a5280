"""A real federation shared by the session: a `fedctl server start` process, two
`fedctl site start --local-ray` processes each with its own Ray head, mutual TLS,
a SQLite file."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from federation.local import LocalFederation, fedctl
from tests.needs import missing

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DATA = ROOT / "configs" / "data"
SITES = {
    "eu-west": {"location": {"jurisdiction": "DE", "region": "eu-west"}, "labels": {"tier": "onprem"},
                "datasets": [{"name": "patient-records-eu", "classification": "gdpr-personal",
                              "path": str(DATA / "patient-records-eu.csv")}],
                "ray": {"local": {"num_cpus": 4}}, "veto": {"max_cpus_per_job": 2}, "work_dir": str(HERE),
                # Two PCIe GPUs without NVLink: scattered for any job that needs a domain.
                "gpu_nodes": [{"name": "eu-pcie", "gpus": {"model": "L4", "count": 2, "memory": "24Gi"}}]},
    "us-east": {"location": {"jurisdiction": "US", "region": "us-east"}, "labels": {"tier": "cloud", "baa": "true"},
                "datasets": [{"name": "claims-us", "classification": "hipaa", "path": str(DATA / "claims-us.csv")}],
                "ray": {"local": {"num_cpus": 4}}, "work_dir": str(HERE),
                "gpu_nodes": [{"name": "us-dgx", "gpus": {"model": "H100", "count": 2, "memory": "80Gi"},
                               "nvlink": [[0, 1]]}]},
}


def os_users(names: tuple[str, ...], *more: Path) -> list[tuple[Path, int]]:
    """OS users `names` (made when missing), able to pass through the folders above this Python,
    its environment and `more`; (folder, old mode) of each folder changed. Jobs of their own users
    need the agent to run as root."""
    if os.geteuid() != 0:
        missing("jobs run as OS users of their own only when the agent runs as root (CI runs as root)")
    for user in names:
        if subprocess.run(["id", user], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                           check=True)
    return open_path_to(Path(os.path.realpath(sys.executable)), Path(sys.executable), *more)


def open_path_to(*paths: Path) -> list[tuple[Path, int]]:
    """Let every user pass through the folders above `paths` (a Python under /root, say), as a
    site that runs its jobs as other users must; (folder, old mode) of each one changed."""
    changed = []
    for path in paths:
        for folder in path.parents:
            mode = folder.stat().st_mode & 0o7777
            if not mode & 0o001:
                folder.chmod(mode | 0o001)
                changed.append((folder, mode))
    return changed


def running(federation: LocalFederation):
    """Start a local federation and its agents; stop them (and remove its folder unless
    FEDCTL_KEEP_E2E=1) when the module's fixture ends."""
    try:
        federation.start_server()
        if federation.witness:
            federation.start_witness()
        federation.start_agents()
        yield federation
    finally:
        federation.shutdown()
        if os.environ.get("FEDCTL_KEEP_E2E") != "1":
            shutil.rmtree(federation.work, ignore_errors=True)


class E2EFederation(LocalFederation):
    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(fedctl(*args), env=self.env, cwd=HERE, capture_output=True, text=True,
                              timeout=timeout)

    def cli_json(self, *args: str, timeout: float = 120) -> dict:
        r = self.cli(*args, "--format", "json", timeout=timeout)
        assert r.returncode == 0, r.stderr + r.stdout
        return json.loads(r.stdout)


@pytest.fixture(scope="session")
def federation():
    work = Path(tempfile.mkdtemp(prefix="fe2e-", dir="/tmp"))  # short: Ray's socket paths live below it
    # The shipped policy, with preemption allowed after a second of runtime so a test can see it,
    # and every class of data open to the tests' tenant.
    policy = yaml.safe_load((ROOT / "configs" / "policy.yaml").read_text())
    policy["spec"]["preemption"] = {"min_runtime": "1s"}
    for rule in policy["spec"]["classifications"].values():
        rule["tenants"] = [*rule.get("tenants", []), "e2e"]
    (work / "policy.yaml").write_text(yaml.safe_dump(policy))
    yield from running(E2EFederation(work=work, sites=SITES, port_bases={"eu-west": 27000, "us-east": 27400},
                                     policy=work / "policy.yaml", metrics=True, http=True))


@pytest.fixture
def client(federation):
    with federation.client() as c:
        yield c
