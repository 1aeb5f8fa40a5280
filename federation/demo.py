"""`fedctl demo`: an embedded federation and three local Ray sites on this machine.

The federation runs in this process (SQLite file in a temporary folder); each site
is a real `fedctl site start --local-ray` process with its own Ray head. The demo
submits the example jobs and federated trainings, waits for them, and prints where each
job ran and why, and each training's rounds and accuracy. A training's dataset shards are
written into the demo's folder first (the digits, split non-IID across the sites). Everything
it started is stopped on the way out, Ctrl-C included.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from federation.cli import render
from federation.client import Client
from federation.errors import ConfigError, Timeout
from federation.local import (
    kill_processes_mentioning,
    site_config,
    start_agent,
    stop_processes,
)
from federation.pki import Issued, init_pki
from federation.server import start_server
from federation.spec import load_job, load_site, load_training
from federation.spec.loader import read_file
from federation.spec.server import FederationBody, FederationConfig, FederationMetadata, ServerTLS

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SITE_START_TIMEOUT_S = 120
JOBS_TIMEOUT_S = 120
TRAININGS_TIMEOUT_S = 300


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def run_demo(*, json_output: bool = False, keep: bool = False, examples: Path | None = None,
             configs: Path = CONFIGS) -> int:
    site_files, job_files, training_files = _spec_files(configs, examples or configs / "examples")
    work = Path(tempfile.mkdtemp(prefix="fd-", dir="/tmp"))  # short: Ray's socket paths live below it
    quiet = json_output
    agents: list[subprocess.Popen] = []
    server = None
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        started = time.monotonic()
        sites = [load_site(f) for f in site_files]
        shards = _training_shards(work, [load_training(f) for f in training_files], [s.metadata.name for s in sites])
        pki = init_pki(work / "pki", sites={s.metadata.name: s.spec.model_dump(mode="json") for s in sites})
        config = _federation_config(work, configs, pki)
        server = start_server(config)
        address = f"127.0.0.1:{server.port}"
        _say(f"federation: embedded, mTLS on {address}, store {config.spec.store}", quiet)
        for site in sites:
            agents.append(_start_agent(site, work, address, pki, shards.get(site.metadata.name, [])))
            _say(f"site {site.metadata.name}: {site.spec.location.jurisdiction}/{site.spec.location.region}, "
                 f"starting a local Ray head on port {site.spec.ray.local.port_base}", quiet)
        client = Client(address, ca=pki["ca"].cert, cert=pki["admin"].cert, key=pki["admin"].key)
        _wait_for_sites(client, [s.metadata.name for s in sites], agents, work)
        _say(f"sites connected after {time.monotonic() - started:.1f}s; submitting {len(job_files)} example jobs"
             f" and {len(training_files)} federated training(s)", quiet)
        trainings = [client.submit_training(load_training(f)) for f in training_files]
        submitted = [(f, client.submit(load_job(f))) for f in job_files]
        rows = _wait_for_jobs(client, submitted)
        trained = [_wait_for_training(run, work, load_training(f)) for run, f in zip(trainings, training_files)]
        if json_output:
            render.emit_json({"jobs": rows, "trainings": trained, "elapsed_s": round(time.monotonic() - started, 1)})
        else:
            _print_report(rows, trained, started, work if keep else None)
        client.close()
        ok = all(r["state"] in ("succeeded", "cancelled") for r in rows) and all(
            t["state"] == "succeeded" for t in trained)
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping sites", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_processes(agents, timeout=30)
        if server is not None:
            server.stop(grace=0.5)
        kill_processes_mentioning(str(work))
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _spec_files(configs: Path, examples: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """The site configs, the example jobs and the example trainings."""
    site_files = sorted((configs / "sites").glob("*.yaml"))
    spec_files = sorted(examples.glob("*.yaml"))
    training_files = [f for f in spec_files if _kind(f) == "FederatedTraining"]
    job_files = [f for f in spec_files if f not in training_files]
    if not site_files or not job_files:
        raise ConfigError(f"demo: no site configs in {configs / 'sites'} or no jobs in {examples}")
    return site_files, job_files, training_files


def _federation_config(work: Path, configs: Path, pki: dict[str, Issued]) -> FederationConfig:
    return FederationConfig(metadata=FederationMetadata(name="demo"), spec=FederationBody(
        listen="127.0.0.1:0", store=work / "federation.db", policy=configs / "policy.yaml",
        tls=ServerTLS(cert=pki["server"].cert, key=pki["server"].key, client_ca=pki["ca"].cert),
        heartbeat_interval_s=1.0, site_timeout_s=15))


def _print_report(rows: list[dict], trained: list[dict], started: float, kept: Path | None) -> None:
    """Where each job ran and why, each training's rounds and accuracy, and how long it all took."""
    print()
    render.table(["JOB", "TENANT", "DATA", "SITE", "STATE", "WHY", "RESULT"],
                 [[r["name"], r["tenant"], ",".join(r["datasets"]) or "-", r["site"] or "-", r["state"],
                   r["why"], r["result"]] for r in rows])
    for t in trained:
        print(f"\ntraining {t['name']}: {t['state']}, {t['rounds']} rounds at {', '.join(t['sites'])}, "
              f"aggregated at {', '.join(t['aggregators'])}; {t['kib_per_round']:.0f} KiB moved a round; "
              f"held-out accuracy {t['accuracy']:.3f} (the same model trained centrally: "
              f"{t['central_accuracy']:.3f})")
    print(f"\ndone in {time.monotonic() - started:.1f}s" + (f"; files kept in {kept}" if kept else ""))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _kind(path: Path) -> str:
    data, _, _ = read_file(path)
    return data.get("kind", "") if isinstance(data, dict) else ""


def _training_shards(work: Path, trainings: list, sites: list[str]) -> dict[str, list[dict]]:
    """Per site, the datasets the example trainings need: the digits, split non-IID across the sites."""
    if not any(t.spec.dataset == "digits" for t in trainings):
        return {}
    from training.examples import digits
    paths = digits.write_shards(work / "data", sites)
    return {site: [{"name": "digits", "path": str(p)}] for site, p in paths.items()}


def _wait_for_training(run, work: Path, spec) -> dict:
    status = run.wait(timeout=TRAININGS_TIMEOUT_S)
    done = [r for r in status.history if r.state == "done"]
    out = {"id": run.id, "name": status.name, "state": status.state, "rounds": len(done), "message": status.message,
           "sites": sorted({s for r in done for s in r.reported}), "aggregators": sorted({r.aggregator for r in done}),
           "kib_per_round": sum(r.bytes_moved for r in done) / max(1, len(done)) / 1024}
    test = work / "data" / "test.npz"
    if status.state == "succeeded" and test.exists():
        import numpy as np

        from training.examples import digits
        with np.load(test) as data:
            out["accuracy"] = digits.accuracy(run.model(), data["x"], data["y"])
            shards = [np.load(p) for p in sorted((work / "data").glob("*/digits.npz"))]
            x = np.concatenate([s["x"] for s in shards])
            y = np.concatenate([s["y"] for s in shards])
            epochs = int(spec.spec.local_step.config.get("epochs", 5)) * len(done)
            central, _ = digits.train(digits.init(), x, y, epochs=epochs)
            out["central_accuracy"] = digits.accuracy(central, data["x"], data["y"])
    return out


def _start_agent(site, work: Path, address: str, pki, datasets: list[dict]) -> subprocess.Popen:
    spec = site.spec.model_dump(mode="json", exclude={"federation"})
    spec["datasets"] = spec.get("datasets", []) + datasets
    config = site_config(site.metadata.name, address=address, pki=pki, work=work,
                         port_base=site.spec.ray.local.port_base, spec=spec)
    return start_agent(config, work)


def _wait_for_sites(client: Client, names: list[str], agents: list[subprocess.Popen], work: Path) -> None:
    deadline = time.monotonic() + SITE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        for name, agent in zip(names, agents, strict=True):
            if agent.poll() is not None:
                tail = (work / f"{name}.log").read_text(errors="replace").strip().splitlines()[-1:]
                raise ConfigError(f"site {name} exited with status {agent.returncode}"
                                  + (f": {tail[0]}" if tail else ""))
        connected = {s.name for s in client.sites() if s.connected}
        if connected >= set(names):
            return
        time.sleep(0.5)
    raise Timeout(f"sites did not connect within {SITE_START_TIMEOUT_S}s; see {work}/*.log")


def _wait_for_jobs(client: Client, submitted) -> list[dict]:
    """Until every job has ended, or waits for a reason no site can ever satisfy (then cancel it)."""
    deadline = time.monotonic() + JOBS_TIMEOUT_S
    explained: dict[str, str] = {}
    while time.monotonic() < deadline:
        open_jobs = 0
        for _, job in submitted:
            s = job.status()
            if s.terminal or job.id in explained:
                continue
            if s.state == "pending":
                p = job.placement
                if p.summary.startswith("no site may ever"):
                    explained[job.id] = p.summary
                    job.cancel()
                    continue
            open_jobs += 1
        if open_jobs == 0:
            break
        time.sleep(0.5)
    rows = []
    for path, job in submitted:
        spec = load_job(path)
        s = job.status()
        placement = job.placement
        why = explained.get(job.id) or placement.summary.removeprefix(f"placed on {s.site}: ")
        rows.append({"id": job.id, "name": s.name, "tenant": s.tenant, "datasets": spec.spec.datasets,
                     "site": s.site or None, "state": s.state, "why": why,
                     "result": _result(client, job.id, s.site) if s.attempts else "-"})
    return rows


def _result(client: Client, job_id: str, site: str) -> str:
    """The last line of a job's logs, or where its data's rules keep them."""
    data = b""
    for chunk, kept in client.log_stream(job_id):
        if kept:
            return f"(logs stay at {site})"
        data += chunk
    last = data.decode("utf-8", "replace").strip().splitlines()[-1:]
    return last[0][:90] if last else "-"
