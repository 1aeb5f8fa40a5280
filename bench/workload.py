"""Synthetic federations for benchmarks: many sites, many datasets, many pending jobs."""
from __future__ import annotations

import random

from policies import (
    ClassificationRule,
    DatasetInfo,
    PendingJob,
    Rules,
    SiteView,
    Snapshot,
    expand_jurisdictions,
)

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
               nodes_per_site: int = 1) -> tuple[Snapshot, list[PendingJob]]:
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
    return Snapshot(tuple(views), catalog, RULES), pending
