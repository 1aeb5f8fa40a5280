"""A private Ray head for one site, with every port distinct so several share a machine."""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from federation.errors import RayError
from federation.spec.pricing import Elastic
from federation.spec.site import LocalRay
from site_agent import elastic as elastic_site
from site_agent.isolation import OSUser, as_user, check_runs_python
from site_agent.private_file import write_private
from site_agent.ray_driver import RayJobsDriver

log = logging.getLogger("site_agent.local_ray")

# Offsets from port_base. Worker ports take [port_base+100, port_base+299].
PORTS = {
    "port": 0, "dashboard-port": 1, "ray-client-server-port": 2, "node-manager-port": 3,
    "object-manager-port": 4, "dashboard-agent-listen-port": 5, "dashboard-agent-grpc-port": 6,
    "metrics-export-port": 7, "runtime-env-agent-port": 8,
}
WORKER_PORTS = (100, 299)
WORKER_IDLE_MS = 60_000   # how long Ray keeps an idle worker it has more of than CPUs (its default: 1 s)
PLAIN_ENV = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONUNBUFFERED"})


@dataclass
class LocalRayHead:
    settings: LocalRay
    name: str = "site"
    labels: dict[str, str] | None = None   # Ray node labels, e.g. fedctl.io/node for GPU bindings
    num_gpus: int | None = None            # when settings.num_gpus is unset
    user: OSUser | None = None             # the OS user the head and its jobs run as; None: the agent's
    elastic: Elastic | None = None         # nodes its autoscaler adds on demand (Ray's fake multi-node provider)
    node_ip: str = "127.0.0.1"             # where its GCS listens: loopback unless workers elsewhere join it
    process: subprocess.Popen | None = None
    pid: int | None = None                 # the head's (its process group's) pid, started or adopted

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port_base + PORTS['dashboard-port']}"

    @property
    def gcs_address(self) -> str:
        return f"{self.node_ip}:{self.settings.port_base + PORTS['port']}"

    @property
    def temp_dir(self) -> Path:
        # Ray's socket paths must stay short, so the default lives directly under /tmp.
        return self.settings.temp_dir or Path(f"/tmp/fedray-{self.settings.port_base}")

    @property
    def ray_dir(self) -> Path:
        """Where Ray writes. Under another user, a folder of that user's inside the agent's own, so the
        agent's files beside it (token, pid, log) are never reached through a link the head's jobs made."""
        return self.temp_dir / "ray" if self.user is not None else self.temp_dir

    def command(self) -> list[str]:
        s = self.settings
        ray = Path(sys.executable).with_name("ray")
        args = [str(ray) if ray.exists() else "ray", "start", "--head", "--block", "--disable-usage-stats",
                f"--node-ip-address={self.node_ip}", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
                f"--temp-dir={self.ray_dir}", f"--object-store-memory={s.object_store_memory}",
                f"--min-worker-port={s.port_base + WORKER_PORTS[0]}",
                f"--max-worker-port={s.port_base + WORKER_PORTS[1]}"]
        args += [f"--{flag}={s.port_base + offset}" for flag, offset in PORTS.items()]
        if s.num_cpus is not None:
            args.append(f"--num-cpus={s.num_cpus}")
        gpus = s.num_gpus if s.num_gpus is not None else self.num_gpus
        if gpus is not None:
            args.append(f"--num-gpus={gpus}")
        if self.labels:
            args.append("--labels=" + ",".join(f"{k}={v}" for k, v in sorted(self.labels.items())))
        if self.elastic is not None:
            args.append(f"--autoscaling-config={self.autoscaling_config}")
        return args

    @property
    def autoscaling_config(self) -> Path:
        return self.temp_dir / "autoscaler.json"

    def _write_autoscaling_config(self) -> None:
        """The fake provider reaches the GCS at the address Ray binds it to: this host's, not loopback."""
        assert self.elastic is not None
        from ray._private.services import get_node_ip_address
        gcs = f"{get_node_ip_address()}:{self.settings.port_base + PORTS['port']}"
        config = elastic_site.autoscaler_config(self.elastic, gcs, self.settings.num_cpus or 0)
        # Renamed into place: a link planted there is replaced, never written through. No secret in it.
        write_private(self.autoscaling_config, json.dumps(config), world_readable=True)

    @property
    def token_path(self) -> Path | None:
        """Ray's auth token for this head: only this site's agent (and its jobs) hold it."""
        return self.temp_dir / "auth_token" if self.settings.token_auth else None

    def environment(self) -> dict[str, str]:
        # A stopped job (cancelled or preempted) gets SIGTERM, then SIGKILL after this grace.
        # Under a user of its own, the head (and every job) gets none of the agent's environment
        # (credentials, agent sockets) but what a process needs to run.
        inherited = os.environ if self.user is None else {
            k: v for k, v in os.environ.items() if k in PLAIN_ENV or k.startswith("LC_")}
        env = dict(inherited, RAY_USAGE_STATS_ENABLED="0",
                   RAY_JOB_STOP_WAIT_TIME_S=str(int(self.settings.stop_grace_s)))
        # Ray ends a worker past its CPU count after a second idle; the task path runs more (0.1-CPU
        # jobs) and would start a new one, at half a second of CPU, for most short jobs.
        env.setdefault("RAY_idle_worker_killing_time_threshold_ms", str(WORKER_IDLE_MS))
        # Jobs' `python` is the agent's own, with Ray in it, even when its venv is not activated.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        if self.token_path is not None:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path))
            env.pop("RAY_AUTH_TOKEN", None)
        if self.user is not None:
            env.update(HOME=str(self.ray_dir), USER=self.user.name, LOGNAME=self.user.name)
        if self.elastic is not None:
            env.update(elastic_site.head_environment())
        return env

    def _make_dirs(self) -> None:
        """The head's folder, the agent's own (a folder someone else made or linked is replaced),
        with the token in it readable by the head's user, and Ray's folder that user's."""
        d = self.temp_dir
        if self.user is not None and (d.is_symlink() or (d.exists() and d.stat().st_uid != os.geteuid())):
            log.warning("%s is not this agent's; replacing it", d)
            d.unlink() if d.is_symlink() else shutil.rmtree(d)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.user is None:
            self._write_token()
            return
        d.chmod(0o711)
        self._write_token()
        self.ray_dir.mkdir(exist_ok=True, mode=0o700)
        os.chown(self.ray_dir, self.user.uid, self.user.gid, follow_symlinks=False)

    def _write_token(self) -> None:
        path = self.token_path
        if path is not None and not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
                if self.user is not None:
                    os.fchown(fd, self.user.uid, self.user.gid)

    @property
    def pid_file(self) -> Path:
        return self.temp_dir / "head.pid"

    def _running_head(self) -> int | None:
        """The pid of a head an earlier agent of this site started here and left running (the
        agent was killed), or None. Its own session outlives the agent, so its jobs run on."""
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return None
        return pid if "ray" in cmdline and str(self.temp_dir) in cmdline else None

    def start(self, timeout: float = 90.0, cancel: threading.Event | None = None, adopt: bool = True) -> RayJobsDriver:
        """The head, adopted (unless not `adopt`) or launched; with `cancel` set meanwhile (the agent
        told to stop while a loaded machine is slow to bring the head up), it is stopped and RayError raised."""
        if self.user is not None:
            check_runs_python(self.user, "spec.ray.local")
        self._make_dirs()
        return (self._adopt() if adopt else None) or self._launch(timeout, cancel)

    @property
    def _uid(self) -> int:
        return self.user.uid if self.user else os.geteuid()

    def _adopt(self) -> RayJobsDriver | None:
        """The head an earlier agent left running here, if it still answers on its own port."""
        running = self._running_head()
        if running is None:
            return None
        self.pid = running
        driver = RayJobsDriver(self.dashboard_url, self.token_path)
        try:
            if listener_uid(self.settings.port_base + PORTS["dashboard-port"]) != self._uid:
                raise RayError("its dashboard port is not its own")   # never hand the token to another
            driver.wait_ready(20.0)
        except RayError:
            log.warning("local Ray head %d of an earlier agent does not answer; starting a new one", running)
            self.stop()
            return None
        log.info("adopted the local Ray head %d already running for %s at %s", running, self.name, self.dashboard_url)
        return driver

    def _launch(self, timeout: float, cancel: threading.Event | None = None) -> RayJobsDriver:
        dashboard = self.settings.port_base + PORTS["dashboard-port"]
        taken = [p for p in (self.settings.port_base, dashboard) if listener_uid(p) is not None]
        if taken:
            raise RayError(f"local Ray head for {self.name}: port {taken[0]} is already in use")
        log_path = self.temp_dir / "head.log"
        if self.elastic is not None:
            self._write_autoscaling_config()
        with open(log_path, "ab") as out:
            # Own session: the whole head (gcs, raylet, dashboard, workers) is one process group.
            self.process = subprocess.Popen(as_user(self.user, self.command()), stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, env=self.environment())
        self.pid = self.process.pid
        self.pid_file.write_text(str(self.pid))
        driver = RayJobsDriver(self.dashboard_url, self.token_path)
        deadline = time.monotonic() + timeout
        try:
            # Only once the head's own user listens on its port does the token go there.
            while (owner := listener_uid(dashboard)) != self._uid:
                if owner is not None:
                    raise RayError(f"its dashboard port {dashboard} is held by uid {owner}")
                if not self.alive():
                    raise RayError("it exited")
                if time.monotonic() > deadline:
                    raise RayError(f"it did not listen within {timeout:g}s")
                if (cancel or threading.Event()).wait(0.1):
                    raise RayError("the agent was told to stop")
            driver.wait_ready(max(1.0, deadline - time.monotonic()))
        except RayError as e:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:] if log_path.exists() else []
            self.stop()
            raise RayError(f"local Ray head for {self.name} did not start: {e.message}"
                           + (f"; its log ends: {' | '.join(tail)}" if tail else "")) from None
        log.info("local Ray head for %s at %s", self.name, self.dashboard_url)
        return driver

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.pid is not None and Path(f"/proc/{self.pid}").exists()

    def stop(self, grace: float = 5.0) -> None:
        """TERM the head's process group, then KILL whatever of it remains, including
        Ray workers, which the raylet starts outside the group."""
        if self.pid is None:
            return
        family = descendants(self.pid)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            family |= descendants(self.pid)
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            self._wait_gone(wait)
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.process = self.pid = None
        self.pid_file.unlink(missing_ok=True)
        if self.settings.temp_dir is None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


    def _wait_gone(self, timeout: float) -> None:
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            return
        deadline = time.monotonic() + timeout   # an adopted head is not our child: poll for it
        while Path(f"/proc/{self.pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


def listener_uid(port: int) -> int | None:
    """The uid owning the socket that listens on 127.0.0.1:`port` (or any address), or None."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        address, hex_port = fields[1].split(":")
        if fields[3] == "0A" and int(hex_port, 16) == port and address in ("0100007F", "00000000"):
            return int(fields[7])
    return None


def descendants(root: int) -> set[int]:
    """Every live process below `root`, from /proc (empty where /proc is absent)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in out:
                out.add(child)
                stack.append(child)
    return out

