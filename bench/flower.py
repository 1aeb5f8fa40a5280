"""Flower's own deployment as the peer of `bench.training`: a SuperLink and one SuperNode per
participant on this machine, the same NumPy model, data and local step, FedAvg; with the flwr of
this environment (the `flower` extra), else one installed in build/flower-venv.

    python -m bench.flower --participants 3 --rounds 4
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from site_agent.local_ray import descendants
from training.examples import digits

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "build" / "flower-venv"
ROUND = re.compile(r"^ROUND(START|END) (\d+) ([\d.]+)", re.M)

PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "digitsbench"
version = "1.0.0"
description = "fedctl's digits step under Flower"
license = "Apache-2.0"
dependencies = ["flwr", "numpy"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedctl"

[tool.flwr.app.components]
serverapp = "digitsbench.server_app:app"
clientapp = "digitsbench.client_app:app"

[tool.flwr.app.config]
num-server-rounds = 2
num-sites = 2
epochs = 1
"""
CLIENT = """from flwr.client import ClientApp, NumPyClient
from site_agent.local_ray import descendants
from training.examples import digits


class Digits(NumPyClient):
    def __init__(self, shard, epochs):
        self.shard, self.epochs = shard, epochs

    def fit(self, parameters, config):
        model = {"b": parameters[0], "w": parameters[1]}
        trained, n, _ = digits.local_step(model, self.shard, {"epochs": self.epochs, "round": int(config["round"])})
        return [trained["b"], trained["w"]], int(n), {}


app = ClientApp(client_fn=lambda context: Digits(str(context.node_config["shard"]),
                                                 int(context.run_config["epochs"])).to_client())
"""
SERVER = """import time
import numpy as np
from flwr.common import ndarrays_to_parameters
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg


class Timed(FedAvg):
    def configure_fit(self, server_round, parameters, client_manager):
        print(f"ROUNDSTART {server_round} {time.time():.4f}", flush=True)
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        out = super().aggregate_fit(server_round, results, failures)
        print(f"ROUNDEND {server_round} {time.time():.4f}", flush=True)
        return out


def server_fn(context):
    n = int(context.run_config["num-sites"])
    strategy = Timed(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
                     initial_parameters=ndarrays_to_parameters([np.zeros(10), np.zeros((64, 10))]),
                     on_fit_config_fn=lambda r: {"round": r})
    rounds = int(context.run_config["num-server-rounds"])
    return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))


app = ServerApp(server_fn=server_fn)
"""


def venv() -> Path:
    """The folder of Flower's commands: this environment's, else build/flower-venv's, made the
    first time (from the package registry)."""
    here = Path(sys.executable).parent
    if (here / "flower-superlink").exists():
        return here
    if not (VENV / "bin" / "flwr").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "flwr", "numpy"], check=True)
    return VENV / "bin"


def app(work: Path) -> Path:
    folder = work / "app"
    (folder / "digitsbench").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(PYPROJECT)
    (folder / "digitsbench" / "__init__.py").write_text("")
    (folder / "digitsbench" / "client_app.py").write_text(CLIENT)
    (folder / "digitsbench" / "server_app.py").write_text(SERVER)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int, timeout: float = 60.0) -> None:
    """Once the SuperLink takes connections (SuperNodes started before it retry only slowly)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"FAILED: Flower's SuperLink did not listen on {port} within {timeout:g}s") from None
            time.sleep(0.1)


def rounds(n: int, count: int, epochs: int) -> list[float]:
    """Seconds of each Flower round after the first (which starts every ClientApp)."""
    bin_ = venv()
    work = Path(tempfile.mkdtemp(prefix="fbf-", dir="/tmp"))
    shards = digits.write_shards(work / "data", [f"site-{i:02d}" for i in range(n)])
    link = free_port()
    (work / "home").mkdir()
    (work / "home" / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "127.0.0.1:{link}"\ninsecure = true\n')
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "FLWR_HOME": str(work / "home")}   # its SuperLink connection, not the user's ~/.flwr
    procs = [subprocess.Popen([str(bin_ / "flower-superlink"), "--insecure", "--port", str(link)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        listening(link)
        procs += [subprocess.Popen([str(bin_ / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                                    "--port", str(free_port()), "--node-config", f"shard='{path}'"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
                  for path in shards.values()]
        out = subprocess.run([str(bin_ / "flwr"), "run", str(app(work)), "bench", "--stream", "--run-config",
                              f"num-server-rounds={count + 1} num-sites={n} epochs={epochs}"],
                             env=env, capture_output=True, text=True, timeout=1800).stdout
    finally:
        stop(procs)
        shutil.rmtree(work, ignore_errors=True)
    marks: dict[int, dict[str, float]] = {}
    for kind, number, at in ROUND.findall(out):
        marks.setdefault(int(number), {})[kind] = float(at)
    times = [m["END"] - m["START"] for r, m in sorted(marks.items()) if r > 1 and len(m) == 2]
    if len(times) != count:
        raise SystemExit(f"FAILED: Flower ran {len(times)} of {count} measured rounds:\n{out[-3000:]}")
    return times


def stop(procs: list[subprocess.Popen]) -> None:
    """Every process of the deployment gone before the next measurement starts: SIGTERM, then
    SIGKILL what is left after 30 s."""
    family = {p.pid for p in procs}.union(*(descendants(p.pid) for p in procs))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 30
        while any(p.poll() is None for p in procs) or any(Path(f"/proc/{pid}").exists() for pid in family):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        else:
            return


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--participants", default="3,10")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1)
    args = p.parse_args()
    for n in (int(x) for x in args.participants.split(",")):
        print(f"{n:>5} sites: Flower round {statistics.median(rounds(n, args.rounds, args.epochs)):.2f} s (median)")


if __name__ == "__main__":
    main()
