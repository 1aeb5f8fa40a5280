"""Workloads and sites for the simulator: the Alibaba 2023 GPU trace, or a CSV of our own.

The Alibaba trace has no sites, tenants, datasets or NVLink topology; `alibaba` derives
them by fixed rules (stated in RULES, printed with every result) and a seeded draw.
"""
from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from federation.errors import ConfigError
from policies.gpus import MILLI, GpuNode, GpuRequest, Inventory

GiB = 2**30


@dataclass(frozen=True)
class SimSite:
    name: str
    jurisdiction: str
    region: str
    inventory: Inventory
    cpus: float
    memory: float
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SimJob:
    id: str
    arrival: float
    duration: float
    cpus: float
    memory: float
    gpu: GpuRequest | None
    tenant: str = "default"
    datasets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Workload:
    sites: tuple[SimSite, ...]
    jobs: tuple[SimJob, ...]
    datasets: dict[str, tuple[str, frozenset[str]]]   # name -> (classification, sites holding it)
    rules: str                                         # how the trace became this workload, in words
    timed: bool = True                                 # jobs carry real arrival times and durations


# Alibaba nodes have no recorded topology: NVLink domains follow the usual build of each model.
NVLINK_8 = {"G2", "G3", "V100M16", "V100M32"}        # 8-GPU SXM boards: one NVSwitch / cube-mesh domain
SITES: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    ("eu-central", "DE", "eu-central", {}), ("eu-west", "FR", "eu-west", {}),
    ("us-east", "US", "us-east", {"baa": "true"}), ("us-west", "US", "us-west", {}))
DATASETS = {"eu-patients": ("gdpr-personal", {"eu-central", "eu-west"}),
            "us-claims": ("hipaa", {"us-east"}),
            "web-text": ("public", {"us-west"})}
DATASET_DRAW = (("eu-patients", 0.25), ("us-claims", 0.10), ("web-text", 0.15))
TENANTS = 8
RACK_SIZE = 16
RULES = (
    "sites: GPU node i (file order) goes to site i mod {n} ({names}); racks of 16 consecutive nodes per site. "
    "NVLink: nodes with 4 or 8 GPUs of G2, G3, V100M16, V100M32 form one NVLink domain; T4, P100, A10 have none. "
    "Jobs: num_gpu>=2 requires one NVLink domain; num_gpu=1 with gpu_milli<1000 is a share of one GPU; "
    "gpu_spec becomes gpu_type. Datasets drawn with seed {seed}: 25% eu-patients (gdpr-personal, EU sites), "
    "10% us-claims (hipaa, us-east), 15% web-text (public, us-west, may be staged), 50% none; "
    "tenants uniform over 8. Arrival = creation_time, duration = deletion_time - creation_time.")


SHIPPED_PODS = ("default", "gpuspec33", "multigpu50")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")


def pod_list(folder: Path, pods: str) -> Path:
    """The trace's pod list by its shipped name, or any file of its format by path."""
    if pods in SHIPPED_PODS:
        return folder / f"openb_pod_list_{pods}.csv"
    if "/" in pods or pods.endswith(".csv"):
        return Path(pods)
    raise ConfigError(f"--pods: {pods!r} is neither a shipped list ({', '.join(SHIPPED_PODS)}) nor a path to a "
                      "csv of the trace's format")


def alibaba(folder: Path, pods: str = "default", sites: int = 4, seed: int = 7) -> Workload:
    node_file = folder / "openb_node_list_gpu_node.csv"
    pod_file = pod_list(folder, pods)
    for csv_file in (node_file, pod_file):
        if not csv_file.exists():
            raise ConfigError(f"{csv_file}: not found (expected the Alibaba 2023 GPU trace's csv files)")
    if not 1 <= sites <= len(SITES):
        raise ConfigError(f"--sites: {sites} is not between 1 and {len(SITES)}")
    chosen = SITES[:sites]
    nodes: list[list[GpuNode]] = [[] for _ in chosen]
    cpus = [0.0] * sites
    memory = [0.0] * sites
    with open(node_file, newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            s = i % sites
            n, model = int(row["gpu"]), row["model"]
            dom = "nv" if model in NVLINK_8 and n >= 4 else ""
            k = len(nodes[s])
            nodes[s].append(GpuNode(row["sn"], model, 0, tuple(f"{row['sn']}/{dom}" if dom else "" for _ in range(n)),
                                    rack=f"r{k // RACK_SIZE}"))
            cpus[s] += int(row["cpu_milli"]) / 1000
            memory[s] += int(row["memory_mib"]) * 2**20
    out_sites = tuple(SimSite(name, jur, region, Inventory(tuple(nodes[i])), cpus[i], memory[i], dict(labels))
                      for i, (name, jur, region, labels) in enumerate(chosen))
    names = {s.name for s in out_sites}
    rng = random.Random(seed)
    jobs = []
    with open(pod_file, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in POD_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{pod_file}:1: no column {', '.join(missing)} (a pod list has "
                              f"{', '.join(POD_COLUMNS)}, and creation_time, deletion_time for replays)")
        timed = "creation_time" in (reader.fieldnames or [])
        for k, row in enumerate(reader):
            n, milli, cpu_milli, memory_mib = _integers(row, pod_file, k + 2)
            spec = row.get("gpu_spec") or ""
            models = frozenset(spec.split("|")) if spec else frozenset()
            if n == 0:
                gpu = None
            elif n == 1 and milli < MILLI:
                gpu = GpuRequest(share=milli, models=models)
            else:
                gpu = GpuRequest(count=n, models=models, nvlink="required" if n >= 2 else "")
            dataset: tuple[str, ...] = ()
            draw, acc = rng.random(), 0.0
            for name, p in DATASET_DRAW:
                acc += p
                if draw < acc:
                    dataset = (name,) if DATASETS[name][1] & names else ()
                    break
            start, end = _times(row, pod_file, k + 2) if timed else (float(k), float("inf"))
            jobs.append(SimJob(row["name"], start, max(1.0, end - start), cpu_milli / 1000, memory_mib * 2**20, gpu,
                               f"tenant-{rng.randrange(TENANTS)}", dataset))
    datasets = {k: (c, frozenset(held & names)) for k, (c, held) in DATASETS.items() if held & names}
    rules = RULES.format(n=sites, names=", ".join(s.name for s in out_sites), seed=seed)
    return Workload(out_sites, tuple(sorted(jobs, key=lambda j: (j.arrival, j.id))), datasets, rules, timed)


def _integers(row: dict[str, str], path: Path, line: int) -> tuple[int, int, int, int]:
    """num_gpu, gpu_milli, cpu_milli and memory_mib of a pod list's row, or why not."""
    values = []
    for column in ("num_gpu", "gpu_milli", "cpu_milli", "memory_mib"):
        try:
            value = int(row[column] or 0)
        except ValueError:
            raise ConfigError(f"{path}:{line}: {column}: {row[column]!r} is not a whole number") from None
        if value < 0:
            raise ConfigError(f"{path}:{line}: {column}: {value} is negative")
        values.append(value)
    if values[0] == 1 and not 0 < values[1] <= MILLI:
        raise ConfigError(f"{path}:{line}: gpu_milli: {values[1]} is not a share of one GPU (1-{MILLI})")
    return values[0], values[1], values[2], values[3]


def _times(row: dict[str, str], path: Path, line: int) -> tuple[float, float]:
    try:
        start, end = float(row["creation_time"]), float(row["deletion_time"] or "inf")
    except (TypeError, ValueError):
        raise ConfigError(f"{path}:{line}: creation_time, deletion_time: {row.get('creation_time')!r}, "
                          f"{row.get('deletion_time')!r} are not times in seconds") from None
    if end < start:
        raise ConfigError(f"{path}:{line}: deletion_time {end:g} is before creation_time {start:g}")
    return start, end


JOB_COLUMNS = ("id", "arrival_s", "duration_s", "cpus", "gpus", "gpu_type", "nvlink", "dataset", "tenant")


def csv_jobs(path: Path, base: Workload) -> Workload:
    """Jobs from our own CSV (columns JOB_COLUMNS; gpus may be a share below 1, gpu_type may list
    models with '|', nvlink is required|preferred|empty) on the sites of `base`."""
    jobs = []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in JOB_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(f"{path}:1: missing column(s) {', '.join(missing)}")
            for line, row in enumerate(reader, start=2):
                try:
                    gpus = float(row["gpus"] or 0)
                    models = frozenset(m for m in row["gpu_type"].split("|") if m)
                    nvlink = _nvlink(row["nvlink"])
                    if row["dataset"] and row["dataset"] not in base.datasets:
                        raise ValueError(f"dataset {row['dataset']!r} is not one of {', '.join(sorted(base.datasets))}")
                    if gpus > 1 and gpus != int(gpus):
                        raise ValueError(f"gpus {gpus:g}: more than one GPU must be a whole number")
                    gpu = None if gpus <= 0 else (GpuRequest(share=round(gpus * MILLI), models=models) if gpus < 1
                                                  else GpuRequest(count=int(gpus), models=models,
                                                                  nvlink=nvlink))
                    jobs.append(SimJob(row["id"], float(row["arrival_s"]), float(row["duration_s"]),
                                       float(row["cpus"] or 0), 0.0, gpu, row["tenant"] or "default",
                                       (row["dataset"],) if row["dataset"] else ()))
                except (ValueError, TypeError) as e:
                    raise ConfigError(f"{path}:{line}: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    return Workload(base.sites, tuple(sorted(jobs, key=lambda j: (j.arrival, j.id))), base.datasets,
                    base.rules.split(" Jobs:")[0] + f" Jobs: from {path.name}.")


def _nvlink(value: str) -> Literal["", "required", "preferred"]:
    if value not in ("", "required", "preferred"):
        raise ValueError(f"nvlink {value!r} is not required, preferred or empty")
    return value  # type: ignore[return-value]


def configured(site_files: list[Path]) -> Workload:
    """Sites (with their declared gpu_nodes and datasets) from Site YAML files; no jobs yet."""
    from federation.gpus import inventory_of
    from federation.spec import load_site

    sites: list[SimSite] = []
    datasets: dict[str, tuple[str, frozenset[str]]] = {}
    for path in site_files:
        cfg = load_site(path)
        body = cfg.spec
        if not body.gpu_nodes:
            raise ConfigError(f"{path}: spec.gpu_nodes: the simulator needs the site's declared GPU nodes")
        cap = body.capacity
        sites.append(SimSite(cfg.metadata.name, body.location.jurisdiction, body.location.region,
                             inventory_of(body.gpu_nodes), cap.cpus if cap else 1e9,
                             float(cap.memory) if cap else 1e18, dict(body.labels)))
        for d in body.datasets:
            cls, held = datasets.get(d.name, (d.classification, frozenset()))
            datasets[d.name] = (cls, held | {cfg.metadata.name})
    return Workload(tuple(sites), (), datasets, "sites: " + ", ".join(str(p) for p in site_files) + ".")
