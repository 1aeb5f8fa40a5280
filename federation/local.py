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
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from federation.client import Client
from federation.errors import Timeout, Unavailable
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
    such as a Ray head whose agent was killed, so nothing is left behind. This process and
    those that started it (a shell or `timeout` whose command names the folder) are spared."""
    spared = _ancestors(os.getpid())
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            pid = int(pid_dir.name)
            if pid not in spared and marker in (pid_dir / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            continue


def _ancestors(pid: int) -> set[int]:
    out = set()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def site_config(name: str, *, address: str, pki: dict[str, Issued], work: Path, spec: dict[str, Any],
                port_base: int | None = None, replicas: tuple[str, ...] = ()) -> dict[str, Any]:
    """A Site document pointing at this federation (and its other replicas and witnesses); with
    `port_base`, for a private Ray head whose files live under `work`, else for the cluster at
    spec.ray.address."""
    body = dict(spec)
    body["federation"] = {"address": address, **({"replicas": list(replicas)} if replicas else {}), "tls": {
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
    log = open(work / f"{name}.log", "ab")  # noqa: SIM115  # the child process keeps it open
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
    site_timeout_s: float = 10.0
    policy: Path = CONFIGS / "policy.yaml"
    enrolment: bool = False                   # a join-token listener (fedctl site token create / site join)
    witness: bool = False                     # a witness beside the server (`spec.replication.role: witness`)
    metrics: bool = False                     # /metrics at the server and every agent, over mutual TLS
    metrics_ports: dict[str, int] = field(default_factory=dict)   # "federation" and each site -> its port
    http: bool = False                        # the HTTP API and the console, at http_port
    http_port: int = 0
    address: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    server: subprocess.Popen | None = None
    witness_server: subprocess.Popen | None = None
    agents: dict[str, subprocess.Popen] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)   # agent name -> when its process was started

    def __post_init__(self) -> None:
        self.pki = init_pki(self.work / "pki", clients=("admin",), sites=self.sites)
        self.config = self.work / "federation.yaml"
        self.enrol_address = f"127.0.0.1:{free_port()}" if self.enrolment else ""
        enrolment = {"enrolment": {"listen": self.enrol_address, "ca_cert": str(self.pki["ca"].cert),
                                   "ca_key": str(self.pki["ca"].key)}} if self.enrolment else {}
        spec = {"listen": self.address, "store": str(self.work / "federation.db"), "policy": str(self.policy),
                "tls": {"cert": str(self.pki["server"].cert), "key": str(self.pki["server"].key),
                        "client_ca": str(self.pki["ca"].cert)},
                "scheduler": {"interval_s": self.scheduler_interval_s}, "heartbeat_interval_s": 1,
                "site_timeout_s": self.site_timeout_s, **enrolment}
        if self.metrics:
            spec["metrics"] = {"listen": f"127.0.0.1:{self.metrics_ports.setdefault('federation', free_port())}"}
        if self.http:
            self.http_port = self.http_port or free_port()
            spec["http"] = {"listen": f"127.0.0.1:{self.http_port}"}
        self.config.write_text(yaml.safe_dump({
            "apiVersion": "federation/v1", "kind": "Federation", "metadata": {"name": "local"}, "spec": spec}))
        self.witness_address = f"127.0.0.1:{free_port()}" if self.witness else ""
        if self.witness:
            (self.work / "witness.yaml").write_text(yaml.safe_dump({
                "apiVersion": "federation/v1", "kind": "Federation", "metadata": {"name": "witness"},
                "spec": dict(spec, listen=self.witness_address, enrolment=None, replication={"role": "witness"},
                             metrics=None, http=None)}))

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
        return self.ray_api(name, f"/api/jobs/{submission_id}")

    def ray_jobs(self, name: str) -> dict[str, dict]:
        """Every job of a site's Ray Jobs API, by submission id."""
        return {j["submission_id"]: j for j in self.ray_api(name, "/api/jobs/") if j.get("submission_id")}

    def ray_api(self, name: str, path: str) -> Any:
        """A GET of a site's Ray dashboard, authenticated with that head's token."""
        request = urllib.request.Request(f"{self.dashboard(name)}{path}", headers={
            "Authorization": f"Bearer {self.ray_token(name).read_text().strip()}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def start_server(self, timeout: float = 30) -> None:
        log = open(self.work / "federation.log", "ab")  # noqa: SIM115  # the child process keeps it open
        self.server = subprocess.Popen(fedctl("server", "start", "--config", str(self.config)), stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
        with self.client() as c:
            _wait(lambda: _answers(c), timeout, "the federation to answer")

    def start_witness(self) -> None:
        log = open(self.work / "witness.log", "ab")  # noqa: SIM115  # the child process keeps it open
        self.witness_server = subprocess.Popen(
            fedctl("server", "start", "--config", str(self.work / "witness.yaml")), stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)

    def start_replica(self, name: str, address: str, database: str = "") -> subprocess.Popen:
        """Another `fedctl server` over this federation's store (or the PostgreSQL `database`, with
        an audit key of its own in the work folder), listening at `address`; logs to NAME.log."""
        data = yaml.safe_load(self.config.read_text())
        data["metadata"]["name"] = name
        data["spec"]["listen"] = address
        data["spec"].pop("metrics", None)
        data["spec"].pop("http", None)
        if database:
            data["spec"].update(database=database, audit={"key": str(self.work / "audit.pem")})
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115  # the child process keeps it open
        return subprocess.Popen(fedctl("server", "start", "--config", str(path)), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)

    def stop_server(self, sig: int = signal.SIGTERM) -> None:
        assert self.server is not None, "the federation was not started"
        self.server.send_signal(sig)
        self.server.wait(timeout=30)

    def start_agents(self, timeout: float = 120) -> None:
        for name in self.sites:
            self.start_agent(name)
        self.wait_connected(timeout)

    def start_agent(self, name: str, address: str | None = None) -> subprocess.Popen:
        """A site's agent, reaching the federation at `address` (a proxy, say) or directly."""
        config = site_config(name, address=address or self.address, pki=self.pki, work=self.work,
                             port_base=self.port_bases.get(name), spec=self.sites[name],
                             replicas=(self.witness_address,) if self.witness else ())
        if self.metrics:   # served with the federation's certificate: it names this host
            config["spec"]["metrics"] = {"listen": f"127.0.0.1:{self.metrics_ports.setdefault(name, free_port())}",
                                         "tls": {"cert": str(self.pki["server"].cert),
                                                 "key": str(self.pki["server"].key),
                                                 "client_ca": str(self.pki["ca"].cert)}}
        self.started[name] = time.time()
        self.agents[name] = start_agent(config, self.work)
        return self.agents[name]

    def ray_head_pid(self, name: str) -> int:
        return int((self.work / f"r{self.port_bases[name]}" / "head.pid").read_text())

    def wait_connected(self, timeout: float = 120) -> None:
        with self.client() as c:
            def ready() -> bool:
                for name, agent in self.agents.items():
                    if agent.poll() is not None:
                        raise RuntimeError(f"agent {name} exited ({agent.returncode}); see {self.work / name}.log")
                # A heartbeat from before an agent was (re)started is its predecessor's, still inside the lease.
                fresh = {s.name for s in c.sites() if s.connected and s.last_heartbeat >= self.started.get(s.name, 0)}
                return fresh >= set(self.agents)
            _wait(ready, timeout, "every site to connect")

    def shutdown(self) -> None:
        stop_processes(list(self.agents.values()))
        stop_processes([p for p in (self.server, self.witness_server) if p is not None and p.poll() is None])
        kill_processes_mentioning(str(self.work))


class Proxy:
    """A TCP relay standing between a site and the federation, that can be cut (a partition:
    open connections are dropped and new ones refused) and healed."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.cut = False
        threading.Thread(target=self._accept, daemon=True, name="proxy").start()

    def partition(self) -> None:
        with self._lock:
            self.cut = True
            for s in self._open:
                _close(s)
            self._open.clear()

    def heal(self) -> None:
        with self._lock:
            self.cut = False

    def close(self) -> None:
        self.partition()
        _close(self._listener)

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self.cut:
                    _close(inbound)
                    continue
                try:
                    outbound = socket.create_connection(self.target, timeout=5)
                except OSError:
                    _close(inbound)
                    continue
                outbound.settimeout(None)
                self._open |= {inbound, outbound}
            for a, b in ((inbound, outbound), (outbound, inbound)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            for s in (source, sink):
                self._open.discard(s)
                _close(s)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


def _answers(client: Client) -> bool:
    """Whether the federation answers a call: a slow start (a loaded machine, a lease to lapse)
    is waited out to the caller's own deadline, not the client's."""
    try:
        return client.sites() is not None
    except Unavailable:
        return False


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)
