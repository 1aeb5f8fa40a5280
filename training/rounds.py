"""The round plan: who takes part, where the aggregator may run, and when a round is done.

Pure functions of plain data (the placement snapshot's SiteView, catalog and rules), so the
federation's training loop only gathers state and acts on the answers.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from policies.feasible import in_region
from policies.model import DatasetInfo, Reason, Rules, SiteView
from policies.sovereignty import sovereignty_verdict

MODEL_UPDATES = "model-updates"


@dataclass(frozen=True)
class Participants:
    chosen: tuple[str, ...]
    refused: Mapping[str, str]     # site -> why it does not take part


def usable(site: SiteView) -> str:
    """Why a site cannot take part now, or ''."""
    if not site.connected:
        return "offline"
    if site.cordoned or site.draining:
        return "cordoned" if site.cordoned else "draining"
    return ""


def participants(dataset: str, sites: Iterable[SiteView], catalog: Mapping[str, DatasetInfo], rules: Rules,
                 most: int | None) -> Participants:
    """The sites holding a shard of `dataset` whose rules let it be processed there and that can
    work now; the least busy first, at most `most`."""
    info = catalog.get(dataset)
    holders = info.sites if info is not None else frozenset()
    eligible, refused = [], {}
    for site in sites:
        if site.name not in holders:
            continue
        reason, detail = sovereignty_verdict([dataset], site, catalog, rules)
        why = detail if reason is not Reason.OK else usable(site)
        if why:
            refused[site.name] = why
        else:
            eligible.append(site)
    eligible.sort(key=lambda s: (s.used_cpus / s.cpus if s.cpus else 1.0, s.name))
    chosen = eligible if most is None else eligible[:most]
    for site in eligible[len(chosen):]:
        refused[site.name] = f"more than the {most} sites the training takes"
    return Participants(tuple(sorted(s.name for s in chosen)), refused)


def may_receive_updates(site: SiteView, sources: Iterable[SiteView], classification: str, rules: Rules) -> str:
    """Why `site` may not receive model updates trained at `sources` on data of `classification`,
    or '': an update stays in its jurisdiction unless the rule lets model updates cross borders."""
    rule = rules.classifications.get(classification)
    if rule is None:
        return f"classification {classification} has no rule in policy v{rules.version}"
    if MODEL_UPDATES in rule.may_cross_border:
        return ""
    foreign = sorted({s.jurisdiction for s in sources if s.jurisdiction != site.jurisdiction})
    if foreign:
        return (f"model updates of {classification} data may not cross a border "
                f"(from {', '.join(foreign)} to {site.jurisdiction})")
    return ""


def aggregator_sites(sites: Iterable[SiteView], sources: Iterable[SiteView], classification: str, rules: Rules,
                     only_sites: Iterable[str] = (), regions: Iterable[str] = ()) -> tuple[list[str], dict[str, str]]:
    """Sites that may run the aggregator (least busy first), and why each other one may not."""
    sources, only_sites, regions = list(sources), set(only_sites), set(regions)
    ok, refused = [], {}
    for site in sites:
        if only_sites and site.name not in only_sites:
            refused[site.name] = "not in aggregation.sites"
        elif regions and not any(in_region(site.region, r) for r in regions):
            refused[site.name] = "not in aggregation.regions"
        elif why := (may_receive_updates(site, sources, classification, rules) or usable(site)):
            refused[site.name] = why
        else:
            ok.append(site)
    ok.sort(key=lambda s: (s.used_cpus / s.cpus if s.cpus else 1.0, s.name))
    return [s.name for s in ok], refused


class RoundState(str, Enum):
    WAIT = "wait"            # updates still due, within the round's time
    AGGREGATE = "aggregate"  # every participant reported, or the time ran out with enough of them
    FAIL = "fail"            # too few can still report


def round_state(participants: Iterable[str], reported: Iterable[str], lost: Iterable[str], timed_out: bool,
                min_sites: int) -> RoundState:
    everyone, reported, lost = set(participants), set(reported), set(lost)
    still_due = everyone - reported - lost
    if not still_due:
        return RoundState.AGGREGATE if len(reported) >= min_sites else RoundState.FAIL
    if timed_out:
        return RoundState.AGGREGATE if len(reported) >= min_sites else RoundState.FAIL
    if len(reported) + len(still_due) < min_sites:
        return RoundState.FAIL
    return RoundState.WAIT
