"""Synthetic federations for benchmarks: many sites, many datasets, many pending jobs."""
from __future__ import annotations

import random
from dataclasses import replace

from policies import (
    ClassificationRule,
    DatasetInfo,
    PendingJob,
    Rules,
    SiteView,
    Snapshot,
    expand_jurisdictions,
)
from policies.pricing import ALLOW, NEVER, PREFER, Elastic, NodeType, Pricing, Rates

GiB = 2**30
JURISDICTIONS = [("DE", "eu-central"), ("FR", "eu-west"), ("NL", "eu-west"), ("US", "us-east"), ("US", "us-west"),
                 ("NO", "eu-north"), ("JP", "ap-northeast"), ("SG", "ap-southeast")]
RULES = Rules({
    "gdpr-personal": ClassificationRule(expand_jurisdictions(["EU"])),
    "hipaa": ClassificationRule(expand_jurisdictions(["US"]), required_labels={"baa": "true"}),
    "internal": ClassificationRule(expand_jurisdictions(["EEA", "US"]), allow_staging=True),
    "public": ClassificationRule(None, allow_staging=True),
})


def federation(sites: int, jobs: int, seed: int = 1, datasets: int = 200,
               nodes_per_site: int = 1, priced: bool = False) -> tuple[Snapshot, list[PendingJob]]:
    rng = random.Random(seed)
    views = []
    for i in range(sites):
        jurisdiction, region = rng.choice(JURISDICTIONS)
        views.append(SiteView(
            name=f"site-{i:05d}", jurisdiction=jurisdiction, region=f"{region}-{i % 3}",
            labels={"baa": "true"} if rng.random() < 0.5 else {},
            cpus=64.0 * nodes_per_site, memory=float(256 * GiB * nodes_per_site),
            gpus=float(rng.choice([0, 0, 4, 8]) * nodes_per_site),
            used_cpus=float(rng.randint(0, 16)), connected=rng.random() > 0.02, cordoned=rng.random() < 0.02))
    names = [s.name for s in views]
    catalog = {}
    for d in range(datasets):
        cls = rng.choice(list(RULES.classifications))
        catalog[f"ds-{d}"] = DatasetInfo(f"ds-{d}", cls, frozenset(rng.sample(names, k=min(3, len(names)))))
    pending = []
    for j in range(jobs):
        pending.append(PendingJob(
            id=f"job-{j:07d}", tenant=f"t{j % 20}",
            datasets=tuple(rng.sample(sorted(catalog), k=rng.choice([0, 0, 1, 1, 2]))),
            cpus=float(rng.choice([1, 2, 4, 8])), memory=float(rng.choice([1, 4, 16]) * GiB),
            gpus=float(rng.choice([0, 0, 0, 1, 2, 8])),
            regions=(rng.choice(["eu", "us", "ap"]),) if rng.random() < 0.2 else (),
            priority=rng.choice([-1, 0, 0, 1]), submitted_at=float(j)))
    if priced:
        views, pending = _priced(views, pending, random.Random(seed + 1))
    return Snapshot(tuple(views), catalog, RULES), pending


CLOUD_TYPES = (NodeType("cpu-od", 16, 64.0 * GiB, max=8, start_s=90),
               NodeType("cpu-spot", 16, 64.0 * GiB, max=8, spot=True, start_s=120),
               NodeType("gpu-od", 32, 256.0 * GiB, max=4, gpus=8, gpu_model="H100", gpu_memory=80.0 * GiB, start_s=240),
               NodeType("gpu-spot", 32, 256.0 * GiB, max=4, gpus=8, gpu_model="H100", gpu_memory=80.0 * GiB, spot=True,
                        start_s=300))


def _priced(views: list[SiteView], pending: list[PendingJob], rng: random.Random
            ) -> tuple[list[SiteView], list[PendingJob]]:
    """Every site priced; a third of them elastic clouds (two thirds of those with nothing up yet);
    jobs with goals, caps and spot settings of every kind."""
    out = []
    for v in views:
        scale = rng.uniform(0.5, 2.0)
        pricing = Pricing(Rates(0.04 * scale, 0.005 * scale, {"H100": 2.5 * scale, "": 1.0 * scale}),
                          Rates(0.015 * scale, 0.002 * scale, {"H100": 0.9 * scale}))
        if rng.random() < 1 / 3:
            up = rng.choice([{}, {}, {"cpu-od": 2}])
            cpus = 16.0 * up.get("cpu-od", 0)
            v = replace(v, cpus=cpus, memory=64.0 * GiB * up.get("cpu-od", 0), gpus=0.0, used_cpus=0.0,
                        elastic=Elastic(CLOUD_TYPES, 300.0, up))
        out.append(replace(v, pricing=pricing))
    jobs = [replace(j, optimize_cost=rng.random() < 0.3, spot=rng.choice([NEVER, NEVER, ALLOW, PREFER]),
                    max_price=rng.choice([0.0, 0.0, 0.0, 0.5, 5.0, 40.0])) for j in pending]
    return out, jobs
