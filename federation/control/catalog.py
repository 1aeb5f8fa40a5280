"""What the federation binds: each site's location, labels and datasets, and who may use which
dataset. A site says where it is and what it holds; the federation believes it only where its
certificate or the policy's catalog says the same. Classifications come from the policy alone."""
from __future__ import annotations

from dataclasses import replace

from federation import identity
from federation.errors import PermissionDenied
from federation.identity import Identity
from federation.sites import DatasetRecord, SiteRecord
from federation.spec import PolicyConfig


def bound_site(who: Identity, site: SiteRecord, policy: PolicyConfig) -> SiteRecord:
    """The site as the federation records it: its claim checked against what binds it, each dataset
    classified by the policy. PermissionDenied names the first claim nothing backs."""
    claim = sorted(identity.binding(site.jurisdiction, site.region, site.labels))
    entry = policy.spec.sites.get(site.name)
    if who.bound:   # the certificate, issued for this site, is the more specific word
        identity.check_claim(who, site.jurisdiction, site.region, site.labels)
    elif entry is not None:
        listed = sorted(identity.binding(entry.jurisdiction, entry.region, entry.labels))
        if listed != claim:
            raise PermissionDenied(f"site {site.name} is listed in the policy (spec.sites.{site.name}) as "
                                   f"{', '.join(listed)}; it claims {', '.join(claim)}")
    elif who is not identity.ANONYMOUS:
        raise PermissionDenied(
            f"site {site.name}: nothing binds its location and labels; issue its certificate with "
            f"`fedctl ca init --site CONFIG` or a join token, or list it under spec.sites in the policy")
    return replace(site, datasets=tuple(_dataset(site.name, i, d, policy) for i, d in enumerate(site.datasets)))


def _dataset(site: str, i: int, d: DatasetRecord, policy: PolicyConfig) -> DatasetRecord:
    entry = policy.spec.datasets.get(d.name)
    where = f"site {site}: datasets[{i}] ({d.name})"
    if entry is None:
        raise PermissionDenied(f"{where}: not in the policy's dataset catalog (spec.datasets)")
    if "*" not in entry.sites and site not in entry.sites:
        raise PermissionDenied(f"{where}: the policy lists it at {', '.join(entry.sites)} only "
                               f"(spec.datasets.{d.name}.sites)")
    if d.classification and d.classification != entry.classification:
        raise PermissionDenied(f"{where}: claimed {d.classification}; the policy classifies it "
                               f"{entry.classification} (spec.datasets.{d.name}.classification)")
    return DatasetRecord(d.name, entry.classification, size=d.size)   # a site-local path is nobody else's business


def check_access(tenant: str, datasets: dict[str, str], policy: PolicyConfig) -> None:
    """May `tenant`'s jobs use each dataset (field path -> name)? By the dataset's own tenant list,
    else its class's."""
    for path, name in datasets.items():
        entry = policy.spec.datasets.get(name)
        if entry is None:
            continue  # an unknown dataset is refused by name, with a hint, where datasets are looked up
        rule = policy.spec.classifications[entry.classification]
        allowed, where = ((entry.tenants, f"spec.datasets.{name}.tenants") if entry.tenants is not None
                          else (rule.tenants, f"spec.classifications.{entry.classification}.tenants"))
        if "*" not in allowed and tenant not in allowed:
            raise PermissionDenied(f"{path}: tenant {tenant} may not use dataset {name} (policy {where})")
