"""An elastic site: Ray's autoscaler adds nodes for the work placed here and removes idle ones.

The agent does not launch machines. Work it submits with resources the cluster lacks is pending
demand, and Ray's autoscaler (v2) adds a node of a type that holds it; real clouds run Ray's
cluster launcher or KubeRay autoscaling (deploy/clouds/, deploy/kubernetes/). Every node type
carries two labels the agent reads and steers by: `node-type` (the spec's name) and `market`
(`spot` or `on-demand`). A job that refuses spot gets `market: on-demand` as its label selector.

With `--local-ray`, the head's autoscaler uses Ray's fake multi-node provider: its nodes are real
raylet processes started on demand, as in Ray's own autoscaler tests.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from federation.spec.job import JobBody, spot_of
from federation.spec.pricing import Elastic
from site_agent.ray_driver import RayNode

NODE_TYPE, MARKET = "node-type", "market"
HEAD_TYPE = "ray.head.default"
FAKE_HEAD_ID = "f" * 51 + "00000"   # the fake provider's fixed id for the head node
OBJECT_STORE = 100 * 2**20
# A node that vanishes (a spot reclaim) is found dead in ~3 s rather than Ray's default ~18 s.
FAST_FAILURE = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                "RAY_health_check_failure_threshold": "3"}


def market(spot: bool) -> str:
    return "spot" if spot else "on-demand"


def autoscaler_config(elastic: Elastic, gcs_address: str, head_cpus: int) -> dict[str, Any]:
    """The head's autoscaling config: the spec's node types on Ray's fake multi-node provider.
    (`type: external` naming the provider's class: the 2.60 wheel lacks the file that
    `type: fake_multinode` reads its defaults from.)"""
    types: dict[str, Any] = {HEAD_TYPE: {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0}}
    for t in elastic.node_types:
        # The fake provider takes no `memory`: its nodes have what Ray finds on this machine.
        resources: dict[str, Any] = {"CPU": t.cpus, "object_store_memory": OBJECT_STORE}
        if t.gpus is not None:
            resources["GPU"] = t.gpus.count
        types[t.name] = {"resources": resources, "labels": {NODE_TYPE: t.name, MARKET: market(t.spot)},
                         "node_config": {}, "min_workers": t.min, "max_workers": t.max}
    return {
        "cluster_name": "fedctl-site", "max_workers": sum(t.max for t in elastic.node_types),
        "provider": {"type": "external",
                     "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
                     "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address, "launch_multiple": True,
                     "head_node_id": FAKE_HEAD_ID},
        "available_node_types": types, "head_node_type": HEAD_TYPE, "upscaling_speed": 1.0,
        "idle_timeout_minutes": elastic.idle_timeout / 60.0, "auth": {}, "docker": {},
        **{k: [] for k in ("initialization_commands", "setup_commands", "head_setup_commands",
                           "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
                           "cluster_synced_files", "rsync_exclude", "rsync_filter")},
        "file_mounts": {}, "file_mounts_sync_continuously": False,
    }


def head_environment() -> dict[str, str]:
    """What the head (and so its autoscaler) needs to run the fake provider with autoscaler v2."""
    return {"RAY_FAKE_CLUSTER": "1", "RAY_enable_autoscaler_v2": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_ID, "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_ID,
            "RAY_NODE_TYPE_NAME": HEAD_TYPE, **FAST_FAILURE}


def nodes_up(nodes: Iterable[RayNode], elastic: Elastic) -> dict[str, int]:
    """Alive nodes of each of the spec's types, zeros included, as the federation counts them."""
    out = {t.name: 0 for t in elastic.node_types}
    for node in nodes:
        name = node.labels.get(NODE_TYPE)
        if name in out:
            out[name] += 1
    return out


def label_selector(body: JobBody, elastic: Elastic | None, node_type: str = "") -> dict[str, str] | None:
    """Where on the site a job may run: on the node type the federation placed it on, priced and
    timed for (so Ray's autoscaler adds that one); else off spot nodes for a job that refuses spot."""
    if elastic is None:
        return None
    if any(t.name == node_type for t in elastic.node_types):
        return {NODE_TYPE: node_type}
    if spot_of(body) == "never" and any(t.spot for t in elastic.node_types):
        return {MARKET: market(False)}
    return None
