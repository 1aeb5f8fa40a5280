"""A real federation: a `fedctl server start` process, two `fedctl site start --local-ray`
processes each with its own Ray head, mutual TLS, a SQLite file. Shared by the session."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from federation.client import Client
from federation.pki import init_pki
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DATA = ROOT / "configs" / "data"
SITES = {
    "eu-west": {"location": {"jurisdiction": "DE", "region": "eu-west"}, "labels": {"tier": "onprem"},
                "datasets": [{"name": "patient-records-eu", "classification": "gdpr-personal",
                              "path": str(DATA / "patient-records-eu.csv")}],
                "port_base": 27000, "veto": {"max_cpus_per_job": 2}},
    "us-east": {"location": {"jurisdiction": "US", "region": "us-east"}, "labels": {"tier": "cloud", "baa": "true"},
                "datasets": [{"name": "claims-us", "classification": "hipaa", "path": str(DATA / "claims-us.csv")}],
                "port_base": 27400, "veto": {}},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Federation:
    work: Path
    address: str
    config: Path
    pki: dict
    server: subprocess.Popen | None = None
    agents: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, FEDCTL_ADDRESS=self.address, FEDCTL_PKI=str(self.work / "pki"))

    def client(self) -> Client:
        return Client(self.address, ca=self.pki["ca"].cert, cert=self.pki["admin"].cert, key=self.pki["admin"].key,
                      timeout=10)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "federation.cli.main", *args], env=self.env, cwd=HERE,
                              capture_output=True, text=True, timeout=timeout)

    def cli_json(self, *args: str, timeout: float = 120) -> dict:
        r = self.cli(*args, "--format", "json", timeout=timeout)
        assert r.returncode == 0, r.stderr + r.stdout
        return json.loads(r.stdout)

    def start_server(self) -> None:
        log = open(self.work / "federation.log", "ab")
        self.server = subprocess.Popen([sys.executable, "-m", "federation.cli.main", "server", "start", "--config",
                                        str(self.config)], stdout=log, stderr=subprocess.STDOUT, env=self.env)
        with self.client() as c:
            wait_for(lambda: c.sites() is not None, 30, "the federation to answer")

    def stop_server(self, sig: int = signal.SIGTERM) -> None:
        self.server.send_signal(sig)
        self.server.wait(timeout=30)

    def start_agent(self, name: str) -> None:
        spec = SITES[name]
        config = {
            "apiVersion": "federation/v1", "kind": "Site", "metadata": {"name": name},
            "spec": {
                "federation": {"address": self.address, "tls": {
                    "ca": str(self.pki["ca"].cert), "cert": str(self.pki[name].cert), "key": str(self.pki[name].key)}},
                "location": spec["location"], "labels": spec["labels"], "datasets": spec["datasets"],
                "ray": {"local": {"port_base": spec["port_base"], "num_cpus": 4,
                                  "temp_dir": str(self.work / f"r{spec['port_base']}")}},
                "veto": spec["veto"], "work_dir": str(HERE)}}
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        log = open(self.work / f"{name}.log", "ab")
        self.agents[name] = subprocess.Popen(
            [sys.executable, "-m", "federation.cli.main", "site", "start", "--config", str(path), "--local-ray"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def dashboard(self, name: str) -> str:
        return f"http://127.0.0.1:{SITES[name]['port_base'] + 1}"

    def wait_connected(self, timeout: float = 120) -> None:
        with self.client() as c:
            def ready():
                for name, agent in self.agents.items():
                    assert agent.poll() is None, f"agent {name} exited: see {self.work / (name + '.log')}"
                return {s.name for s in c.sites() if s.connected} >= set(self.agents)
            wait_for(ready, timeout, "every site to connect", interval=0.5)

    def shutdown(self) -> None:
        for agent in self.agents.values():
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
        for agent in self.agents.values():
            try:
                agent.wait(timeout=40)
            except subprocess.TimeoutExpired:
                agent.kill()
        if self.server and self.server.poll() is None:
            self.stop_server()
        _kill_mentioning(str(self.work))


def _kill_mentioning(marker: str) -> None:
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (pid_dir / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(pid_dir.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


@pytest.fixture(scope="session")
def federation():
    work = Path(tempfile.mkdtemp(prefix="fe2e-", dir="/tmp"))
    pki = init_pki(work / "pki", clients=("admin", *SITES))
    address = f"127.0.0.1:{free_port()}"
    config = work / "federation.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "federation/v1", "kind": "Federation", "metadata": {"name": "e2e"},
        "spec": {"listen": address, "store": str(work / "federation.db"), "policy": str(ROOT / "configs/policy.yaml"),
                 "tls": {"cert": str(pki["server"].cert), "key": str(pki["server"].key),
                         "client_ca": str(pki["ca"].cert)},
                 "scheduler": {"interval_s": 0.2}, "heartbeat_interval_s": 1, "site_timeout_s": 10}}))
    fed = Federation(work=work, address=address, config=config, pki=pki)
    try:
        fed.start_server()
        for name in SITES:
            fed.start_agent(name)
        fed.wait_connected()
        yield fed
    finally:
        fed.shutdown()
        if os.environ.get("FEDCTL_KEEP_E2E") != "1":
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def client(federation):
    with federation.client() as c:
        yield c
