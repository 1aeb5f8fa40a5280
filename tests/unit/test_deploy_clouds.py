"""Elastic cloud sites are checked, not run: each Ray cluster config (a `ray up` launcher config, or a KubeRay
RayCluster with autoscaling) is well-formed, its agent command parses, and its node types are exactly the
site config's spec.elastic.node_types: the federation prices and places on what the site config says, the
autoscaler adds what the cluster config says, and the two must not drift apart."""
from __future__ import annotations

import json
import posixpath
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from federation.cli.main import build_parser
from federation.spec import SCHEMAS, load_site
from federation.spec.loader import read_yaml, validate
from federation.spec.pricing import NodeType
from federation.spec.site import SiteConfig

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CLOUDS = DEPLOY / "clouds"
KUBERAY = DEPLOY / "kubernetes" / "site-raycluster-autoscaling.yaml"

# (launcher config, site config, provider.type)
LAUNCHERS = [("aws-site-cluster.yaml", "aws-site.yaml", "aws"), ("gcp-site-cluster.yaml", "gcp-site.yaml", "gcp")]

# What a machine really has: vCPUs, GiB of RAM, and attached GPUs (model, count). A node type's Ray CPUs must be
# the vCPUs, its Ray memory below the RAM (Ray keeps the rest for its object store), its GPUs the machine's.
AWS_INSTANCES = {
    "m6i.xlarge": (4, 16, None), "m6i.2xlarge": (8, 32, None), "m6i.4xlarge": (16, 64, None),
    "g5.xlarge": (4, 16, ("A10G", 1)), "g5.2xlarge": (8, 32, ("A10G", 1)), "g5.12xlarge": (48, 192, ("A10G", 4)),
    "g6.2xlarge": (8, 32, ("L4", 1)), "p4d.24xlarge": (96, 1152, ("A100", 8)), "p5.48xlarge": (192, 2048, ("H100", 8)),
}
GCP_MACHINES = {
    "n2-standard-4": (4, 16), "n2-standard-8": (8, 32), "n2-standard-16": (16, 64),
    "n1-standard-4": (4, 15), "n1-standard-8": (8, 30), "n1-standard-16": (16, 60),
}
GCP_ACCELERATORS = {"nvidia-tesla-t4": "T4", "nvidia-l4": "L4", "nvidia-tesla-v100": "V100",
                    "nvidia-tesla-a100": "A100", "nvidia-h100-80gb": "H100"}
GIB = 2**30
MARKET, NODE_TYPE = "market", "node-type"   # the node labels that steer work to spot or on-demand nodes


def shape(t: NodeType) -> dict:
    """What the site config says of a node type, in the terms both sides share."""
    return {"cpus": t.cpus, "memory": t.memory, "gpu_model": t.gpus.model if t.gpus else None,
            "gpus": t.gpus.count if t.gpus else 0, "min": t.min, "max": t.max, "spot": t.spot}


def site_shapes(config: SiteConfig) -> dict[str, dict]:
    assert config.spec.elastic is not None, f"{config.metadata.name}: an elastic site needs spec.elastic"
    assert config.spec.pricing is not None
    return {t.name: shape(t) for t in config.spec.elastic.node_types}


def ray_shape(name: str, resources: dict, labels: dict, lo: int, hi: int, spot: bool) -> dict:
    """A Ray autoscaler node type (launcher config or derived from a RayCluster) in the same terms."""
    models = [k.removeprefix("accelerator_type:") for k in resources if k.startswith("accelerator_type:")]
    assert len(models) <= 1, f"{name}: one GPU model per node type, got {models}"
    gpus = resources.get("GPU", 0)
    assert bool(models) == bool(gpus), f"{name}: a GPU node type names its model (accelerator_type:MODEL: 1)"
    assert "memory" in resources, f"{name}: give Ray's memory resource (what jobs may hold), not Ray's guess"
    assert labels == {MARKET: "spot" if spot else "on-demand", NODE_TYPE: name}, \
        f"{name}: labels {labels} do not steer work to it (market: spot|on-demand, node-type: its name)"
    return {"cpus": resources["CPU"], "memory": resources["memory"], "gpu_model": models[0] if models else None,
            "gpus": gpus, "min": lo, "max": hi, "spot": spot}


def agent_args(command: str) -> list[str]:
    """The fedctl arguments of a shell command line that starts the agent (up to a redirection or `&`)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    start = tokens.index("fedctl") + 1
    out = []
    for tok in tokens[start:]:
        if set(tok) <= set("();<>|&"):
            break
        out.append(tok)
    return out


def parse_agent(args: list[str]):
    parsed = build_parser().parse_args(args)  # SystemExit on an unknown command or option
    assert args[:2] == ["site", "start"] and not parsed.local_ray, args
    return parsed


def ray_start_flags(command: str) -> dict[str, str]:
    flags = {}
    for tok in shlex.split(command):
        if tok.startswith("--"):
            key, _, value = tok[2:].partition("=")
            flags[key] = value
    return flags


# --- Ray cluster launcher configs (`ray up`) -------------------------------------------------------------------

@pytest.fixture(params=LAUNCHERS, ids=[p for p, _, _ in LAUNCHERS])
def launcher(request):
    cluster_file, site_file, provider = request.param
    cluster = yaml.safe_load((CLOUDS / cluster_file).read_text())
    return cluster, load_site(CLOUDS / site_file), site_file, provider


def worker_types(cluster: dict) -> dict[str, dict]:
    return {k: v for k, v in cluster["available_node_types"].items() if k != cluster["head_node_type"]}


def is_spot(provider: str, node_config: dict) -> bool:
    if provider == "aws":
        return node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    scheduling = node_config.get("scheduling", {})
    assert isinstance(scheduling, dict), "scheduling is one object of instances.insert"
    return scheduling.get("provisioningModel") == "SPOT" or scheduling.get("preemptible") is True


def test_launcher_configs_match_rays_schema(launcher):
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler
    cluster, _, _, _ = launcher
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster, schema)


def test_launcher_configs_pass_rays_own_checks(launcher):
    """What `ray up` does before it calls the cloud: fill in the provider's defaults and validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config
    cluster, _, _, _ = launcher
    validate_config(prepare_config(json.loads(json.dumps(cluster))))


def test_launcher_provider_and_node_types_are_well_formed(launcher):
    cluster, _, _, provider = launcher
    assert cluster["provider"]["type"] == provider and cluster["provider"]["region"]
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head runs no work: nodes come on demand"
    assert head.get("max_workers", 0) == 0
    for name, t in worker_types(cluster).items():
        assert t["node_config"] and "resources" in t, name
        assert 0 <= t["min_workers"] <= t["max_workers"], name
        nc = t["node_config"]
        if provider == "aws":
            vcpus, ram, gpus = AWS_INSTANCES[nc["InstanceType"]]
        else:
            vcpus, ram = GCP_MACHINES[nc["machineType"]]
            accel = nc.get("guestAccelerators", [])
            assert len(accel) <= 1, name
            gpus = (GCP_ACCELERATORS[accel[0]["acceleratorType"]], accel[0]["acceleratorCount"]) if accel else None
            if gpus or is_spot(provider, nc):
                assert nc["scheduling"]["onHostMaintenance"] == "TERMINATE", f"{name}: GPU and Spot VMs cannot migrate"
        r = t["resources"]
        assert r["CPU"] == vcpus, f"{name}: Ray CPUs {r['CPU']} but the machine has {vcpus} vCPUs"
        assert r["memory"] <= 0.7 * ram * GIB, f"{name}: Ray memory leaves too little of {ram} GiB to the object store"
        declared = ({k.removeprefix("accelerator_type:") for k in r if k.startswith("accelerator_type:")},
                    r.get("GPU", 0))
        machine = ({gpus[0]}, gpus[1]) if gpus else (set(), 0)
        assert declared == machine, f"{name}: Ray resources say GPUs {declared}, the machine has {machine}"
        if is_spot(provider, nc) and provider == "gcp":
            assert nc["scheduling"]["instanceTerminationAction"] == "DELETE", f"{name}: a taken-back node is gone"
    assert cluster["max_workers"] >= sum(t["max_workers"] for t in worker_types(cluster).values())


def test_launcher_node_types_are_the_site_configs(launcher):
    cluster, site, _, provider = launcher
    ours = {name: ray_shape(name, t["resources"], t.get("labels", {}), t["min_workers"], t["max_workers"],
                            is_spot(provider, t["node_config"]))
            for name, t in worker_types(cluster).items()}
    assert ours == site_shapes(site)
    assert cluster["idle_timeout_minutes"] * 60 == site.spec.elastic.idle_timeout


def test_launcher_starts_the_agent_beside_the_head(launcher):
    cluster, site, site_file, _ = launcher
    commands = cluster["head_start_ray_commands"]
    (start,) = [c for c in commands if "ray start" in c]
    ray_start = ray_start_flags(start)
    assert "head" in ray_start and ray_start["autoscaling-config"] == "~/ray_bootstrap_config.yaml"
    agents = [c for c in commands if "fedctl " in c]
    assert len(agents) == 1 and commands.index(agents[0]) > commands.index(start), "the agent starts after Ray"
    parsed = parse_agent(agent_args(agents[0]))

    # its config is this site config, copied to the head; its certificates are copied beside it
    mounts = cluster["file_mounts"]
    remote_dir, config_name = posixpath.split(parsed.config)
    assert (ROOT / mounts[remote_dir] / config_name).resolve() == (CLOUDS / site_file).resolve()
    raw = yaml.safe_load((CLOUDS / site_file).read_text())["spec"]["federation"]["tls"]
    for key, path in raw.items():
        remote = posixpath.normpath(posixpath.join(remote_dir, path))
        mount = posixpath.dirname(remote)
        assert mount in mounts and mounts[mount].startswith("build/pki/"), f"tls.{key}: {remote} is not copied"
        assert posixpath.basename(remote) in ("ca.pem", f"{site.metadata.name}.pem", f"{site.metadata.name}.key")
    assert not any(".fedctl" in src for src in mounts.values()), "copy the site's certificates, never the CA's key"
    assert "build/" in (ROOT / ".gitignore").read_text().split(), "staged keys must stay out of git"

    # it reaches the dashboard on the head's loopback
    url = urlsplit(site.spec.ray.address)
    assert url.hostname == "127.0.0.1" == ray_start["dashboard-host"]
    assert url.port == int(ray_start.get("dashboard-port", 8265))
    assert any("fedctl[site]" in c for c in cluster["head_setup_commands"])


# --- KubeRay RayCluster with autoscaling ----------------------------------------------------------------------

@pytest.fixture
def kuberay():
    docs = [d for d in yaml.safe_load_all(KUBERAY.read_text()) if d]
    (cluster,) = [d for d in docs if d["kind"] == "RayCluster"]
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    (agent,) = [c for c in head["containers"] if c["image"].startswith("fedctl:")]
    parsed = parse_agent(agent["args"])
    mount = next(m for m in agent["volumeMounts"] if m["mountPath"] == parsed.config)
    volume = next(v for v in head["volumes"] if v["name"] == mount["name"])
    text = configmaps[volume["configMap"]["name"]]["data"][mount["subPath"]]
    data, lines = read_yaml(text, mount["subPath"])
    site = validate(SCHEMAS["site"], data, source=mount["subPath"], lines=lines)
    return cluster, site


def test_kuberay_autoscaling_is_on(kuberay):
    cluster, site = kuberay
    spec = cluster["spec"]
    assert cluster["apiVersion"] == "ray.io/v1" and spec["enableInTreeAutoscaling"] is True
    options = spec["autoscalerOptions"]
    assert options["upscalingMode"] in ("Default", "Aggressive", "Conservative")
    assert options["idleTimeoutSeconds"] == site.spec.elastic.idle_timeout
    assert options["resources"]["limits"]["memory"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "the head runs no work"
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert urlsplit(site.spec.ray.address).hostname == "127.0.0.1"


def kuberay_spot(group: dict) -> bool:
    pod = group["template"]["spec"]
    spot = pod.get("nodeSelector", {}).get("cloud.google.com/gke-spot") == "true"
    if spot:
        assert any(t["key"] == "cloud.google.com/gke-spot" for t in pod.get("tolerations", [])), group["groupName"]
    else:
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert all({"key": "cloud.google.com/gke-spot", "operator": "DoesNotExist"} in t["matchExpressions"]
                   for t in terms), f"{group['groupName']}: an on-demand group must stay off spot nodes"
    return spot


def test_kuberay_worker_groups_are_the_site_configs(kuberay):
    """As Ray's autoscaler reads the RayCluster (its own code derives the node types)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
    cluster, site = kuberay
    cr = json.loads(json.dumps(cluster))
    cr["metadata"].setdefault("namespace", "fedctl")
    derived = _derive_autoscaling_config_from_ray_cr(cr)["available_node_types"]
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    ours = {name: ray_shape(name, t["resources"], t["labels"], t["min_workers"], t["max_workers"],
                            kuberay_spot(groups[name]))
            for name, t in derived.items() if name != "headgroup"}
    assert ours == site_shapes(site)


def test_kuberay_worker_pods_hold_what_ray_offers(kuberay):
    cluster, site = kuberay
    by_name = {t.name: t for t in site.spec.elastic.node_types}
    for group in cluster["spec"]["workerGroupSpecs"]:
        name, params = group["groupName"], group["rayStartParams"]
        t = by_name[name]
        assert group["minReplicas"] == t.min and group["maxReplicas"] == t.max and group.get("replicas", 0) <= t.max
        assert all(isinstance(v, str) for v in params.values()), f"{name}: rayStartParams are strings"
        assert "labels" not in params, f"{name}: Ray's autoscaler reads labels from the group's labels field"
        ray = group["template"]["spec"]["containers"][0]
        requests, limits = ray["resources"]["requests"], ray["resources"]["limits"]
        assert float(requests["cpu"]) == float(params["num-cpus"]) == t.cpus, name
        held = int(params["memory"]) + int(params["object-store-memory"])
        assert _bytes(limits["memory"]) >= held + GIB, f"{name}: the pod's memory limit is below what Ray uses"
        gpus = int(limits.get("nvidia.com/gpu", 0))
        assert gpus == int(params.get("num-gpus", 0)) == (t.gpus.count if t.gpus else 0), name
        if t.gpus:
            accel = group["template"]["spec"]["nodeSelector"]["cloud.google.com/gke-accelerator"]
            assert GCP_ACCELERATORS[accel] == t.gpus.model, f"{name}: pods land on {accel}, not {t.gpus.model}"


def _bytes(quantity: str) -> int:
    from federation.spec.quantity import parse_bytes
    return parse_bytes(quantity)


# --- both kinds ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("site_file", [s for _, s, _ in LAUNCHERS])
def test_cloud_site_configs_validate(site_file):
    config = load_site(CLOUDS / site_file)
    assert config.spec.pricing is not None and config.spec.elastic is not None
    assert config.spec.gpu_nodes is None and config.spec.capacity is None, "an elastic site's nodes come and go"
    assert all(t.cpus == int(t.cpus) for t in config.spec.elastic.node_types), "Ray's node types count whole CPUs"
