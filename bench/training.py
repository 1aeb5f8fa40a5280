"""Federated training: the federation's overhead per round and the bytes it moves, for 3 and for
10 participants, against the same rounds run in one process and under Flower's own deployment
(`bench.flower`: a SuperLink and a SuperNode per participant, the same model, data and step).

    python -m bench.training [--participants 3,10] [--rounds 3] [--epochs 1] [--secure] [--no-flower]

A real federation process; each participant is a real site agent. The sites share one local Ray
head (agents keep to their own jobs on a shared cluster), so ten fit on two cores: the
participants are simulated in that sense only. Each holds a non-IID shard of the digits and runs
the example's local step, which times its own compute. Per round:

    overhead = round time (steps placed to new model stored) - the slowest site's local compute

The baseline runs the same local steps one after another and the same aggregation in this
process, with no federation: its time per round is the ratio's denominator.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench import flower
from federation.local import LocalFederation
from federation.spec.site import LocalRay
from site_agent.local_ray import LocalRayHead
from training.examples import digits
from training.strategies import weighted_mean

PORT_BASE = 31700   # below the kernel's ephemeral ports (32768 up), which a connection could take


def federated(work: Path, head: LocalRayHead, n: int, rounds: int, epochs: int, secure: bool) -> dict:
    names = [f"site-{i:02d}" for i in range(n)]
    shards = digits.write_shards(work / "data", names)
    sites = {name: {"location": {"jurisdiction": "DE", "region": f"eu-{i}"}, "work_dir": str(work / name),
                    "ray": {"address": head.dashboard_url, "auth_token_path": str(head.token_path)},
                    "datasets": [{"name": "digits", "classification": "public", "path": str(shards[name])}]}
             for i, name in enumerate(names)}
    for name in names:
        (work / name).mkdir()
    fed = LocalFederation(work=work, sites=sites, port_bases={}, scheduler_interval_s=0.05, site_timeout_s=30)
    try:
        fed.start_server()
        fed.start_agents(timeout=180)
        with fed.client(timeout=30) as client:
            run = client.submit_training({
                "apiVersion": "federation/v1", "kind": "FederatedTraining",
                "metadata": {"name": f"bench-{n}", "tenant": "bench"},
                "spec": {"dataset": "digits", "sites": {"min": n}, "rounds": rounds + 1, "round_timeout": "5m",
                         "local_step": {"entrypoint": "training.examples.digits:local_step",
                                        "config": {"epochs": epochs}, "resources": {"cpus": 0.1}},
                         "aggregation": {"resources": {"cpus": 0.1}, "secure": secure}}})
            status = run.wait(timeout=900)
        if status.state != "succeeded":
            raise SystemExit(f"FAILED: training {status.state}: {status.message}")
        done = [r for r in status.history if r.state == "done"][1:]   # the first round warms every site up
        times = [r.ended_at - r.started_at for r in done]
        slowest = [max(m["compute_s"] for m in r.metrics["sites"].values()) for r in done]
        return {"round_s": statistics.median(times),
                "overhead_s": statistics.median(t - c for t, c in zip(times, slowest)),
                "compute_s": statistics.median(slowest), "bytes": statistics.median(r.bytes_moved for r in done)}
    finally:
        fed.shutdown()


def one_process(work: Path, n: int, rounds: int, epochs: int) -> float:
    """Seconds a round: the same steps in turn, then the same aggregation, in this process."""
    import numpy as np
    names = [f"site-{i:02d}" for i in range(n)]
    shards = digits.write_shards(work / "local-data", names)
    model, times = None, []
    for number in range(1, rounds + 2):
        started = time.perf_counter()
        updates = []
        for name in names:
            trained, examples, _ = digits.local_step(model, str(shards[name]), {"epochs": epochs, "round": number})
            updates.append((trained, examples))
        model = weighted_mean(updates)
        if number > 1:
            times.append(time.perf_counter() - started)
    assert np.isfinite(model["w"]).all()
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--participants", default="3,10")
    p.add_argument("--rounds", type=int, default=3, help="rounds measured (after one warm-up round)")
    p.add_argument("--epochs", type=int, default=1, help="local epochs a round")
    p.add_argument("--secure", action="store_true", help="with secure aggregation (its keys and reveal jobs)")
    p.add_argument("--no-flower", action="store_true", help="without Flower's deployment beside it")
    args = p.parse_args()
    rows = []
    work = Path(tempfile.mkdtemp(prefix="fbt-", dir="/tmp"))
    head = LocalRayHead(LocalRay(port_base=PORT_BASE, num_cpus=8, temp_dir=work / "ray"), name="bench")
    # Ray's clients read their token from the environment once, when first used (as the agent's do).
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(head.token_path))
    try:
        head.start()
        for n in (int(x) for x in args.participants.split(",")):
            fed = federated(work / f"n{n}", head, n, args.rounds, args.epochs, args.secure)
            local = one_process(work / f"n{n}", n, args.rounds, args.epochs)
            peer = 0.0 if args.no_flower else statistics.median(flower.rounds(n, args.rounds, args.epochs))
            rows.append((n, fed, local, peer))
    finally:
        head.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.rounds} rounds measured, {args.epochs} local epoch(s) a round (medians)"
          + (", secure aggregation" if args.secure else ""))
    print(f"{'sites':>5} {'round s':>8} {'slowest compute s':>18} {'overhead s':>11} {'KiB moved':>10} "
          f"{'one process s':>14} {'federated/one process':>22} {'Flower round s':>15} {'ours/Flower':>12}")
    for n, fed, local, peer in rows:
        print(f"{n:>5} {fed['round_s']:>8.2f} {fed['compute_s']:>18.3f} {fed['overhead_s']:>11.2f} "
              f"{fed['bytes'] / 1024:>10.1f} {local:>14.3f} {fed['round_s'] / local:>21.1f}x "
              + (f"{peer:>15.2f} {fed['round_s'] / peer:>12.2f}" if peer else f"{'-':>15} {'-':>12}"))


if __name__ == "__main__":
    main()
