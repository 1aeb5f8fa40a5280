"""The Prometheus config, its alerts and the Grafana dashboards are checked, not run: they parse, and every
metric their PromQL names is one the federation or a site agent really serves, so a renamed metric fails
here instead of leaving an empty panel or an alert that can never fire."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import federation.observe.state
from federation.observe.metrics import FederationMetrics
from site_agent.metrics import AgentMetrics
from tests.needs import missing

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted(GRAFANA.glob("*.json"))
JOBS = {"fedctl-federation", "fedctl-sites"}
BUILTINS = {"up"}   # series Prometheus makes itself; time() is a function, not a series

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
            "group_right", "inf", "nan"}
# Grafana's variables, as Prometheus would see them once Grafana substitutes them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$site": ".*"}


def known_metrics() -> set[str]:
    """Every series name the federation and the agents expose: their registries' families, and the families
    the state collector builds at scrape time (it needs a live control plane, so its source is read)."""
    names = set(BUILTINS)
    for registry in (FederationMetrics().registry, AgentMetrics().registry):
        for family in registry.collect():
            names |= {family.name + s for s in SUFFIXES.get(family.type, ("",))}
    source = Path(federation.observe.state.__file__).read_text()
    state = set(re.findall(r'GaugeMetricFamily\(\s*"([a-z0-9_]+)"', source))
    assert {"fedctl_jobs", "fedctl_site_lost", "fedctl_audit_chain_verified"} <= state, state
    return names | state


KNOWN = known_metrics()


def metric_names(expr: str) -> set[str]:
    """The series a PromQL expression selects: what is left once strings, label matchers, ranges, grouping
    clauses, numbers, keywords and function calls are taken out."""
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\boffset\s+\w+", " ", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        if not m.group(2) and m.group(1).lower() not in KEYWORDS:
            names.add(m.group(1))
    return names


def unknown(expr: str) -> set[str]:
    return metric_names(expr) - KNOWN


def alert_rules() -> list[dict]:
    alerts = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [r for g in alerts["groups"] for r in g["rules"]]


def panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))   # a collapsed row holds its panels
    return out


def dashboard_exprs() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) of every target, and the queries of its variables."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for p in panels(board):
            out.extend((path.name, p["title"], t["expr"]) for t in p.get("targets", []))
        for v in board["templating"]["list"]:
            if v["type"] == "query":
                query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
                assert inner, f"{path.name}: variable {v['name']}: expected label_values(SELECTOR, LABEL)"
                out.append((path.name, f"${v['name']}", inner.group(1)))
    return out


# --- the helper itself -----------------------------------------------------------------------------------------

def test_the_metric_check_catches_what_does_not_exist():
    assert unknown("sum(rate(fedctl_nope_total[5m]))") == {"fedctl_nope_total"}
    assert unknown("rate(fedctl_submissions[5m])") == {"fedctl_submissions"}, "a counter is read as _total"
    assert unknown("fedctl_scheduling_cycle_seconds") == {"fedctl_scheduling_cycle_seconds"}, "a histogram's series"
    assert unknown("upp == 0") == {"upp"}
    assert metric_names('histogram_quantile(0.99, sum by (le, method) (rate(x_bucket{code!="OK"}[$__rate_interval])))'
                        ) == {"x_bucket"}
    assert metric_names("time() - max(a > 0) and on (instance) b == scalar(max(c)) unless d offset 5m") == \
        {"a", "b", "c", "d"}
    assert not unknown('max by (queue) (fedctl_queue_pending_jobs) > 0 unless on (queue) '
                       'increase(fedctl_placements_total{queue=~"a|b"}[30m]) > 0 or up{job=~"fedctl-.*"} == 0')


# --- Prometheus --------------------------------------------------------------------------------------------------

def test_prometheus_scrapes_both_endpoints_over_mutual_tls():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == JOBS
    for name, job in jobs.items():
        assert job["scheme"] == "https", name
        tls = job["tls_config"]
        assert {"ca_file", "cert_file", "key_file"} <= set(tls), f"{name}: the scraper must present a certificate"
        assert all(tls[k].startswith("/etc/prometheus/fedctl/") for k in ("ca_file", "cert_file", "key_file"))
        assert not tls.get("insecure_skip_verify"), name
        assert all(sc["targets"] for sc in job["static_configs"]), name
    assert all(sc.get("labels", {}).get("site") for sc in jobs["fedctl-sites"]["static_configs"]), \
        "an agent's metrics carry no site label: its target gives it one"
    for rules in config["rule_files"]:
        assert (PROMETHEUS / rules).is_file(), rules


def test_every_alert_is_labelled_and_explained():
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names are unique"
    assert {"FedctlSiteLost", "FedctlSchedulerStalled", "FedctlQueueStarved", "FedctlAuditChainBroken",
            "FedctlSiteFenced", "FedctlAgentRayUnreachable", "FedctlScrapeDown"} <= set(names)
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        assert "$labels" in r["annotations"]["summary"] + r["annotations"]["description"] or \
            "$value" in r["annotations"]["summary"], f"{r['alert']}: say which series fired"
        if "for" in r:
            assert re.fullmatch(r"\d+[smh]", r["for"]), r["alert"]


def test_the_scrape_alert_watches_the_configured_jobs():
    expr = next(r["expr"] for r in alert_rules() if r["alert"] == "FedctlScrapeDown")
    pattern = re.search(r'job=~"([^"]+)"', expr).group(1)
    assert all(re.fullmatch(pattern, job) for job in JOBS)


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alerts_name_only_served_metrics(rule):
    assert not unknown(rule["expr"]), f"{rule['alert']}: no such metric {sorted(unknown(rule['expr']))}"


# --- Grafana -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboards_are_well_formed(path):
    board = json.loads(path.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), f"{path.name}: panel ids are unique"
    for p in panels(board):
        assert p["type"] in ("row", "timeseries", "stat", "table"), p["title"]
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{p['title']}: wider than the dashboard"
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"], f"{p['title']}: no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            used = set(re.findall(r"\$(\w+)", t["expr"])) - {"__rate_interval", "__interval", "__range"}
            assert used <= set(variables), f"{p['title']}: undefined variables {used - set(variables)}"


def test_there_are_both_dashboards():
    assert {p.name for p in DASHBOARDS} == {"federation.json", "site.json"}
    site = json.loads((GRAFANA / "site.json").read_text())
    assert "site" in {v["name"] for v in site["templating"]["list"]}


@pytest.mark.parametrize("where", dashboard_exprs(), ids=lambda w: f"{w[0]}:{w[1]}")
def test_dashboards_name_only_served_metrics(where):
    board, title, expr = where
    assert not unknown(expr), f"{board}, {title}: no such metric {sorted(unknown(expr))}"


# --- promtool, where it is installed -----------------------------------------------------------------------------

def test_promtool_accepts_the_config_the_alerts_and_the_dashboards_queries(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        missing("promtool is not on PATH (.ci/run installs it; the checks above still ran)")

    def check(*args: str) -> None:
        done = subprocess.run([promtool, "check", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr

    # promtool wants the certificate files to exist: point the config at empty ones.
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        for key in ("ca_file", "cert_file", "key_file"):
            local = tmp_path / Path(job["tls_config"][key]).name
            local.touch()
            job["tls_config"][key] = str(local)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    check("config", str(tmp_path / "prometheus.yml"))
    check("rules", str(tmp_path / "alerts.yml"))

    # Each dashboard query as a recording rule, so promtool parses it.
    exprs = []
    for _, _, expr in dashboard_exprs():
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        exprs.append(expr)
    rules = {"groups": [{"name": "dashboards",
                         "rules": [{"record": f"fedctl:dashboard_query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    (tmp_path / "dashboards.yml").write_text(yaml.safe_dump(rules))
    check("rules", str(tmp_path / "dashboards.yml"))
