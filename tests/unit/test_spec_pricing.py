"""Prices, elastic node types, spot nodes, a job's cost goals and a queue's budget: good specs load,
bad ones get one line naming the field, the file and the line."""
from __future__ import annotations

from pathlib import Path

import pytest

from federation.errors import InvalidSpec
from federation.gpus import inventory_from_json, inventory_of, inventory_to_json
from federation.spec import job_from_text, load_policy, load_site

ROOT = Path(__file__).resolve().parents[2]
CLOUD = (ROOT / "configs" / "clouds" / "us-cloud.yaml").read_text()
JOB = """\
apiVersion: federation/v1
kind: Job
metadata: {name: sweep}
spec:
  entrypoint: python train.py
  placement: {optimize: cost, max_price: 0.5, spot: allow}
"""
POLICY = """\
apiVersion: federation/v1
kind: Policy
metadata: {name: p}
spec:
  currency: EUR
  classifications:
    open: {allowed_jurisdictions: ["*"]}
  queues:
    - name: research
      tenants: [lab]
      limit: {cpus: 64, cost_per_day: 250}
"""


def test_the_shipped_cloud_site_loads_with_its_prices_and_node_types():
    site = load_site(ROOT / "configs" / "clouds" / "us-cloud.yaml").spec
    assert site.pricing is not None and site.elastic is not None
    assert (site.pricing.currency, site.pricing.spot.gpu_hour) == ("USD", {"A10G": 0.35})
    od, spot, gpu = site.elastic.node_types
    assert (od.start, spot.spot, spot.start, gpu.gpus.model, site.elastic.idle_timeout) == (90, True, 120, "A10G", 60)


@pytest.mark.parametrize("old, new, expected", [
    ("cpu_hour: 0.048", "cpu_hour: -1", ":19: spec.pricing.cpu_hour: Input should be greater than or equal to 0"),
    ("    cpu_hour: 0.048\n", "", ":17: spec.pricing.cpu_hour: required field is missing"),
    ("gpu_hour: {A10G: 1.0}", "gpu_hour: {H100: 1.0}",
     "spec: elastic.node_types[2] (gpu-od): GPU model A10G has no price in pricing.gpu_hour"),
    ("    spot: {cpu_hour: 0.015, memory_gib_hour: 0.002, gpu_hour: {A10G: 0.35}}\n", "",
     "spec: elastic.node_types[1] (cpu-spot) is spot: give pricing.spot"),
    ("gpu_hour: {A10G: 1.0}", "gpu_hour: {A10G: -2}", "spec.pricing.gpu_hour: gpu_hour.A10G: -2 must be between"),
    ("currency: USD", "currency: dollars", "spec.pricing.currency: currency 'dollars' must be an ISO 4217 code"),
    ("max: 2, start: 90s", "min: 3, max: 2", "spec.elastic.node_types[0]: min: 3 is more than max (2)"),
    ("start: 2m", "start: soon", "spec.elastic.node_types[1].start: 'soon' is not a duration"),
    ("idle_timeout: 60s", "idle_timeout: 2d", "spec.elastic.idle_timeout: Input should be less than or equal to 86400"),
    ("  pricing:", "  pricing_:", "spec.pricing_: unknown field 'pricing_' (did you mean 'pricing'?)"),
])
def test_bad_prices_and_node_types_name_the_field_and_line(tmp_path, old, new, expected):
    path = tmp_path / "site.yaml"
    assert old in CLOUD
    path.write_text(CLOUD.replace(old, new))
    with pytest.raises(InvalidSpec) as e:
        load_site(path)
    assert e.value.message.startswith(str(path)) and expected in e.value.message and "\n" not in e.value.message


def test_an_elastic_site_needs_prices_and_its_nodes_gpus_too(tmp_path):
    path = tmp_path / "site.yaml"
    start, end = CLOUD.index("  pricing:"), CLOUD.index("  elastic:")
    path.write_text(CLOUD[:start] + CLOUD[end:])
    with pytest.raises(InvalidSpec, match="elastic: an elastic site needs spec.pricing"):
        load_site(path)
    # A fixed site that prices itself prices every GPU model it declares.
    path.write_text(CLOUD[:end] + "  gpu_nodes:\n    - {name: n, gpus: {model: L4, count: 2, memory: 24Gi}}\n")
    with pytest.raises(InvalidSpec, match="pricing.gpu_hour: GPU model L4 of the site's nodes has no price"):
        load_site(path)


def test_a_job_s_cost_goals_load_and_bad_ones_are_refused():
    body = job_from_text(JOB).spec
    assert (body.placement.optimize, body.placement.max_price, body.placement.spot) == ("cost", 0.5, "allow")
    for old, new, expected in [
        ("max_price: 0.5", "max_price: 0", "<spec>:6: spec.placement.max_price: Input should be greater than 0"),
        ("max_price: 0.5", "max_price: -3", "spec.placement.max_price: Input should be greater than 0"),
        ("max_price: 0.5", "max_price: cheap", "spec.placement.max_price: Input should be a valid number"),
        ("spot: allow", "spot: sometimes", "spec.placement.spot: Input should be 'never', 'allow' or 'prefer'"),
        ("optimize: cost", "optimize: money", "spec.placement.optimize: Input should be 'time' or 'cost'"),
    ]:
        with pytest.raises(InvalidSpec) as e:
            job_from_text(JOB.replace(old, new))
        assert expected in e.value.message, e.value.message


@pytest.mark.parametrize("budget, expected", [
    ("cost_per_day: 250", None),
    ("cost_per_day: '250 EUR'", None),
    ("cost_per_day: '250 USD'", "spec: queues.research.limit.cost_per_day: 250 USD is in USD; this policy's prices "
                                "are in EUR (spec.currency)"),
    ("cost_per_day: 4Gi", "spec.queues[0].limit.cost_per_day: '4Gi' is not an amount of money"),
    ("cost_per_day: '25/h'", "spec.queues[0].limit.cost_per_day: '25/h' is not an amount of money"),
    ("cost_per_day: -5", "spec.queues[0].limit.cost_per_day: -5 must be a finite amount, not negative"),
])
def test_a_queue_budget_is_money_in_the_policy_s_currency(tmp_path, budget, expected):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("cost_per_day: 250", budget))
    if expected is None:
        assert load_policy(path).spec.queues[0].limit.cost_per_day.amount == 250
        return
    with pytest.raises(InvalidSpec) as e:
        load_policy(path)
    assert expected in e.value.message, e.value.message


def test_a_budget_is_a_limit_not_a_share(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("limit: {cpus: 64, cost_per_day: 250}", "deserved: {cost_per_day: 250}"))
    with pytest.raises(InvalidSpec, match="deserved.cost_per_day: a budget is a limit, not a share"):
        load_policy(path)


def test_a_declared_spot_node_is_marked_in_the_inventory_and_survives_the_store_s_json(tmp_path):
    text = (ROOT / "configs" / "sites" / "eu-west.yaml").read_text().replace(
        "{name: eu-pcie, gpus: {model: L4, count: 2, memory: 24Gi}}",
        "{name: eu-pcie, gpus: {model: L4, count: 2, memory: 24Gi}}\n"
        "    - {name: eu-spot, replicas: 2, gpus: {model: L4, count: 1, memory: 24Gi}, spot: true}")
    (tmp_path / "site.yaml").write_text(text)
    inv = inventory_of(load_site(tmp_path / "site.yaml").spec.gpu_nodes)
    assert [(n.name, n.spot) for n in inv.nodes] == [("eu-pcie", False), ("eu-spot-0", True), ("eu-spot-1", True)]
    assert inventory_from_json(inventory_to_json(inv)) == inv
    # A row stored before spot existed has six fields and reads back as an on-demand node.
    assert inventory_from_json('[["old","L4",0,[""],"",""]]').nodes[0].spot is False
