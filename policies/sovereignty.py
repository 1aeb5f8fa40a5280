"""Where data may be processed: dataset classification → allowed sites."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from policies.model import DatasetInfo, Reason, Rules, SiteView

EU = frozenset({
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
    "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
})
EEA = EU | {"IS", "LI", "NO"}
BUILTIN_GROUPS: Mapping[str, frozenset[str]] = {"EU": EU, "EEA": EEA}


def expand_jurisdictions(names: Iterable[str], groups: Mapping[str, Iterable[str]] = {}) -> frozenset[str] | None:
    """ISO codes and group names to a set of ISO codes; None when '*' (anywhere)."""
    out: set[str] = set()
    for name in names:
        if name == "*":
            return None
        if name in groups:
            out |= set(groups[name])
        elif name in BUILTIN_GROUPS:
            out |= BUILTIN_GROUPS[name]
        else:
            out.add(name)
    return frozenset(out)


def sovereignty_verdict(datasets: Iterable[str], site: SiteView, catalog: Mapping[str, DatasetInfo],
                        rules: Rules) -> tuple[Reason, str]:
    """May every dataset of a job be processed at `site`? First failing rule wins."""
    for name in datasets:
        info = catalog.get(name)
        if info is None:
            return Reason.UNKNOWN_DATASET, f"dataset {name} is not in the catalog"
        rule = rules.classifications.get(info.classification)
        if rule is None:
            return (Reason.NO_RULE,
                    f"classification {info.classification} of {name} has no rule in policy v{rules.version}")
        if rule.allowed_jurisdictions is not None and site.jurisdiction not in rule.allowed_jurisdictions:
            return (Reason.JURISDICTION,
                    f"{info.classification} data ({name}) may not be processed in {site.jurisdiction}")
        for key, value in rule.required_labels.items():
            if site.labels.get(key) != value:
                return Reason.MISSING_LABEL, f"{info.classification} data ({name}) requires site label {key}={value}"
        if site.name not in info.sites and not rule.allow_staging:
            return Reason.DATA_ELSEWHERE, f"{name} is not held here and {info.classification} data may not be staged"
    return Reason.OK, ""


LOGS = "logs"


def may_cross(datasets: Iterable[str], catalog: Mapping[str, DatasetInfo], rules: Rules) -> frozenset[str]:
    """What of a job on `datasets` may leave the site that runs it (results, model-updates, logs):
    what every dataset's rule lets cross. A dataset not in the catalog, or whose classification has
    no rule, lets nothing cross; a job without datasets keeps nothing back."""
    out = frozenset({"results", "model-updates", LOGS})
    for name in datasets:
        info = catalog.get(name)
        rule = rules.classifications.get(info.classification) if info else None
        out &= (rule.may_cross_border - {"nothing"}) if rule else frozenset()
    return out


def kept_by(what: str, datasets: Iterable[str], catalog: Mapping[str, DatasetInfo], rules: Rules) -> str:
    """Why `what` of a job on `datasets` stays at its site ('classification hipaa does not let logs
    cross'), or '' when it may leave."""
    for name in datasets:
        info = catalog.get(name)
        if info is None:
            return f"dataset {name} is not in the catalog"
        rule = rules.classifications.get(info.classification)
        if rule is None:
            return f"classification {info.classification} of {name} has no rule in policy v{rules.version}"
        if what not in rule.may_cross_border:
            return f"classification {info.classification} does not let {what} cross"
    return ""
