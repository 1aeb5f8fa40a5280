"""A federation of real processes on this machine: one `fedctl server start` and
`fedctl site start --local-ray` agents, with mutual TLS. Used by the e2e tests and
the benchmarks; `fedctl demo` embeds the federation instead but starts agents here.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from federation.client import Client
from federation.errors import Timeout
from federation.pki import Issued, init_pki

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fedctl(*args: str) -> list[str]:
    return [sys.executable, "-m", "federation.cli.main", *args]


def kill_processes_mentioning(marker: str) -> None:
    """Last resort: kill every process whose command line names `marker` (a run's own folder),
    such as a Ray head whose agent was killed, so nothing is left behind."""
    me = os.getpid()
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            pid = int(pid_dir.name)
            if pid != me and marker in (pid_dir / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            continue


def site_config(name: str, *, address: str, pki: dict[str, Issued], work: Path, spec: dict[str, Any],
                port_base: int | None = None) -> dict[str, Any]:
    """A Site document pointing at this federation; with `port_base`, for a private Ray head
    whose files live under `work`, else for the cluster at spec.ray.address."""
    body = dict(spec)
    body["federation"] = {"address": address, "tls": {
        "ca": str(pki["ca"].cert), "cert": str(pki[name].cert), "key": str(pki[name].key)}}
    if port_base is not None:
        local = dict(spec.get("ray", {}).get("local", {}), port_base=port_base, temp_dir=str(work / f"r{port_base}"))
        body["ray"] = {"local": local}
    return {"apiVersion": "federation/v1", "kind": "Site", "metadata": {"name": name}, "spec": body}


def start_agent(config: dict[str, Any], work: Path) -> subprocess.Popen:
    """An agent in its own session: Ctrl-C reaches only its parent, which stops it in order;
    FEDCTL_PARENT_PID makes it stop by itself if the parent dies (site_agent.process)."""
    name = config["metadata"]["name"]
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = open(work / f"{name}.log", "ab")
    local_ray = ["--local-ray"] if "local" in config["spec"].get("ray", {}) else []
    return subprocess.Popen(fedctl("site", "start", "--config", str(path), *local_ray), stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", FEDCTL_PARENT_PID=str(os.getpid())))


def stop_processes(processes: list[subprocess.Popen], timeout: float = 40) -> None:
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in processes:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@dataclass
class LocalFederation:
    work: Path
    sites: dict[str, dict[str, Any]]          # name -> Site spec body (location, labels, datasets, ray.local...)
    port_bases: dict[str, int]
    scheduler_interval_s: float = 0.2
    policy: Path = CONFIGS / "policy.yaml"
    enrolment: bool = False                   # a join-token listener (fedctl site token create / site join)
    address: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    server: subprocess.Popen | None = None
    agents: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pki = init_pki(self.work / "pki", clients=("admin", *self.sites))
        self.config = self.work / "federation.yaml"
        self.enrol_address = f"127.0.0.1:{free_port()}" if self.enrolment else ""
        enrolment = {"enrolment": {"listen": self.enrol_address, "ca_cert": str(self.pki["ca"].cert),
                                   "ca_key": str(self.pki["ca"].key)}} if self.enrolment else {}
        self.config.write_text(yaml.safe_dump({
            "apiVersion": "federation/v1", "kind": "Federation", "metadata": {"name": "local"},
            "spec": {"listen": self.address, "store": str(self.work / "federation.db"),
                     "policy": str(self.policy),
                     "tls": {"cert": str(self.pki["server"].cert), "key": str(self.pki["server"].key),
                             "client_ca": str(self.pki["ca"].cert)},
                     "scheduler": {"interval_s": self.scheduler_interval_s}, "heartbeat_interval_s": 1,
                     "site_timeout_s": 10, **enrolment}}))

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, FEDCTL_ADDRESS=self.address, FEDCTL_PKI=str(self.work / "pki"))

    def client(self, timeout: float = 10) -> Client:
        return Client(self.address, ca=self.pki["ca"].cert, cert=self.pki["admin"].cert, key=self.pki["admin"].key,
                      timeout=timeout)

    def dashboard(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port_bases[name] + 1}"

    def ray_token(self, name: str) -> Path:
        """The Ray auth token of a site's local head."""
        return self.work / f"r{self.port_bases[name]}" / "auth_token"

    def ray_job(self, name: str, submission_id: str) -> dict:
        """A job's record from a site's Ray Jobs API, authenticated with that head's token."""
        request = urllib.request.Request(f"{self.dashboard(name)}/api/jobs/{submission_id}", headers={
            "Authorization": f"Bearer {self.ray_token(name).read_text().strip()}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def start_server(self, timeout: float = 30) -> None:
        log = open(self.work / "federation.log", "ab")
        self.server = subprocess.Popen(fedctl("server", "start", "--config", str(self.config)), stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
        with self.client() as c:
            _wait(lambda: c.sites() is not None, timeout, "the federation to answer")

    def stop_server(self, sig: int = signal.SIGTERM) -> None:
        self.server.send_signal(sig)
        self.server.wait(timeout=30)

    def start_agents(self, timeout: float = 120) -> None:
        for name, spec in self.sites.items():
            config = site_config(name, address=self.address, pki=self.pki, work=self.work,
                                 port_base=self.port_bases[name], spec=spec)
            self.agents[name] = start_agent(config, self.work)
        self.wait_connected(timeout)

    def wait_connected(self, timeout: float = 120) -> None:
        with self.client() as c:
            def ready() -> bool:
                for name, agent in self.agents.items():
                    if agent.poll() is not None:
                        raise RuntimeError(f"agent {name} exited ({agent.returncode}); see {self.work / name}.log")
                return {s.name for s in c.sites() if s.connected} >= set(self.agents)
            _wait(ready, timeout, "every site to connect")

    def shutdown(self) -> None:
        stop_processes(list(self.agents.values()))
        if self.server is not None and self.server.poll() is None:
            stop_processes([self.server])
        kill_processes_mentioning(str(self.work))


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)
