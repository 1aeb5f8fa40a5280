"""Holding a Ray job to the GPUs the federation reserved for it.

Agent side: `check` compares a binding with the site's inventory and Ray's live nodes
before anything starts; `wrap` puts the job's entrypoint behind this module. Job side
(`python -m site_agent.binding`, run by Ray as the entrypoint): a placement group
with one bundle per reserved node, each pinned by the node label `fedctl.io/node`
(STRICT_PACK on one node, STRICT_SPREAD across several), must become ready; then the
job's own entrypoint (FEDCTL_ENTRYPOINT) runs with FEDCTL_PLACEMENT_GROUP (namespace
`fedctl`) and CUDA_VISIBLE_DEVICES set. If Ray cannot honour the reservation, the job
exits with MISMATCH_EXIT and a `reservation mismatch:` line; the agent reports that as a
failed reservation, never as a silently spread job.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys

from policies.gpus import MILLI, Binding, Inventory
from site_agent.ray_driver import RayNode

NODE_LABEL = "fedctl.io/node"
MISMATCH_EXIT = 86
MISMATCH = "reservation mismatch:"
READY_TIMEOUT_S = float(os.environ.get("FEDCTL_BIND_TIMEOUT_S", "60"))


def host_of(entry: str) -> str:
    """Inventory entries of one host with several GPU kinds are named host/kind."""
    return entry.split("/", 1)[0]


def check(binding: Binding, inventory: Inventory, nodes: list[RayNode]) -> str:
    """Why this site cannot honour the binding, or '' when it can."""
    entries = {n.name: n for n in inventory.nodes}
    gpus_by_host: dict[str, float] = {}
    for node in nodes:
        host = node.labels.get(NODE_LABEL)
        if host:
            gpus_by_host[host] = gpus_by_host.get(host, 0.0) + node.gpus
    for slot in binding:
        entry = entries.get(slot.node)
        if entry is None:
            return f"{MISMATCH} node {slot.node} is not in this site's GPU inventory"
        if any(g >= entry.gpus for g in slot.gpus):
            return f"{MISMATCH} node {slot.node} has {entry.gpus} GPUs, the binding names {list(slot.gpus)}"
        host = host_of(slot.node)
        if host not in gpus_by_host:
            return f"{MISMATCH} no live Ray node is labelled {NODE_LABEL}={host}"
        if gpus_by_host[host] + 1e-9 < len(slot.gpus) * slot.milli / MILLI:
            return f"{MISMATCH} Ray node {host} has {gpus_by_host[host]:g} GPUs, the binding needs {len(slot.gpus)}"
    return ""


def wrap(entrypoint: str, binding: Binding, cuda: dict[tuple[str, int], str]) -> tuple[str, dict[str, str]]:
    """The entrypoint Ray runs instead, and the environment it needs."""
    env = {"FEDCTL_BINDING": json.dumps([[s.node, list(s.gpus), s.milli] for s in binding]),
           "FEDCTL_ENTRYPOINT": entrypoint}
    if len(binding) == 1:
        slot = binding[0]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(cuda.get((slot.node, g), str(g)) for g in slot.gpus)
    return f"{shlex.quote(sys.executable)} -m site_agent.binding", env


def bundles(binding: list) -> tuple[list[dict[str, float]], list[dict[str, str]], str]:
    shapes = [{"GPU": len(gpus) * milli / MILLI} for _, gpus, milli in binding]
    selectors = [{NODE_LABEL: host_of(node)} for node, _, _ in binding]
    hosts = {host_of(node) for node, _, _ in binding}
    return shapes, selectors, "STRICT_PACK" if len(hosts) == 1 else "STRICT_SPREAD"


def main() -> int:
    binding = json.loads(os.environ["FEDCTL_BINDING"])
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    ray.init(address="auto", namespace="fedctl", log_to_driver=False, logging_level=logging.ERROR)
    shapes, selectors, strategy = bundles(binding)
    name = "fed-" + os.environ.get("FEDCTL_JOB_ID", "job") + "-" + os.environ.get("FEDCTL_ATTEMPT", "0")
    pg = placement_group(shapes, strategy=strategy, name=name, bundle_label_selector=selectors)
    try:
        if not pg.wait(timeout_seconds=READY_TIMEOUT_S):
            where = ", ".join(f"{s[NODE_LABEL]} ({b['GPU']:g} GPU)" for s, b in zip(selectors, shapes))
            print(f"{MISMATCH} Ray could not reserve {where} within {READY_TIMEOUT_S:g}s", flush=True)
            return MISMATCH_EXIT
        env = dict(os.environ, FEDCTL_PLACEMENT_GROUP=name)
        return subprocess.call(os.environ["FEDCTL_ENTRYPOINT"], shell=True, env=env)
    finally:
        remove_placement_group(pg)
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
