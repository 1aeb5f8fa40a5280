"""Queues in the policy file, which queue a job goes to, and usage arithmetic."""
from __future__ import annotations

import math

import pytest

from federation.errors import InvalidSpec
from federation.queues import (
    DAY,
    UsageRecord,
    decayed,
    fair_share_usage,
    over_budget,
    queue_tree,
    report,
    resolve,
)
from federation.spec import load_policy
from federation.spec.policy import PolicyConfig

HEAD = """\
apiVersion: federation/v1
kind: Policy
metadata: {name: p}
spec:
  classifications: {}
"""


def policy(queues: list | None = None) -> PolicyConfig:
    return PolicyConfig.model_validate({"metadata": {"name": "p"},
                                        "spec": {"classifications": {}, "queues": queues or []}})


TREE = policy([
    {"name": "research", "deserved": {"gpus": 4}, "queues": [
        {"name": "oncology", "tenants": ["onco", "radiology"], "deserved": {"gpus": 2}},
        {"name": "genomics", "deserved": {"gpus": 2, "gpu_models": {"H100": 1}}, "limit": {"gpus": 6}}]},
    {"name": "default"},
])


def test_the_tree_is_flattened_parents_first_with_resource_dimensions():
    tree = queue_tree(TREE)
    assert [q.name for q in tree] == ["research", "oncology", "genomics", "default"]
    genomics = tree[2]
    assert genomics.parent == "research"
    assert genomics.deserved == {"gpus": 2.0, "gpu:H100": 1.0} and genomics.limit == {"gpus": 6.0}
    assert [q.name for q in queue_tree(policy())] == ["default"]


@pytest.mark.parametrize("tenant, requested, queue", [
    ("radiology", None, "oncology"),     # listed under tenants
    ("genomics", None, "genomics"),      # a leaf named like the tenant
    ("physics", None, "default"),        # anyone else
    ("radiology", "genomics", "genomics"),  # named in the spec
])
def test_a_job_goes_to_its_queue(tenant, requested, queue):
    assert resolve(TREE, tenant, requested) == queue


@pytest.mark.parametrize("requested, error", [
    ("genomic", "spec.queue: 'genomic' is not a queue (did you mean 'genomics'?)"),
    ("research", "spec.queue: 'research' is a group of queues, not a queue jobs go to"),
    ("zzz", "spec.queue: 'zzz' is not a queue; queues: default, genomics, oncology"),
])
def test_an_unknown_queue_is_refused_with_a_hint(requested, error):
    with pytest.raises(InvalidSpec) as e:
        resolve(TREE, "t", requested)
    assert str(e.value).startswith(error)


def test_without_a_default_queue_an_unmapped_tenant_is_refused():
    tree = policy([{"name": "gpu-team", "tenants": ["a"]}])
    with pytest.raises(InvalidSpec, match="tenant 'b' has no queue in the policy and there is no 'default' queue"):
        resolve(tree, "b", None)
    with pytest.raises(InvalidSpec, match="the policy defines no queues"):
        resolve(policy(), "b", "gpu-team")


@pytest.mark.parametrize("queues, line, message", [
    ("  queues:\n  - {name: a}\n  - {name: a}\n", 6, "queue 'a' is defined twice"),
    ("  queues:\n  - {name: a, tenants: [x]}\n  - {name: b, tenants: [x]}\n", 6, "tenant 'x' is in queues"),
    ("  queues:\n  - name: a\n    deserved: {gpus: 1}\n    queues:\n    - {name: b, deserved: {gpus: 2}}\n", 7,
     "deserved gpus of the child queues (2) is more than this queue's (1)"),
    ("  queues:\n  - {name: a, deserved: {cpus: 4}, limit: {cpus: 2}}\n", 7,
     "deserved.cpus: 4 is more than limit.cpus (2)"),
    ("  queues:\n  - {name: a, tenants: [x], queues: [{name: b}]}\n", 7, "only a queue without child queues"),
    ("  queues:\n  - {name: a, over_quota_weight: -1}\n", 7, "greater than or equal to 0"),
    ("  queues:\n  - {name: a, deserved: {gpu_models: {H100: -2}}}\n", 7, "gpu_models.H100: must not be negative"),
    ("  fair_share: {half_life: soon}\n", 6, "'soon' is not a duration"),
])
def test_bad_queues_name_the_file_line_and_rule(tmp_path, queues, line, message):
    path = tmp_path / "policy.yaml"
    path.write_text(HEAD + queues)
    with pytest.raises(InvalidSpec) as e:
        load_policy(path)
    text = str(e.value)
    assert f"policy.yaml:{line}" in text and message in text, text


def test_half_life_takes_durations():
    body = PolicyConfig.model_validate({"metadata": {"name": "p"}, "spec": {
        "classifications": {}, "fair_share": {"half_life": "7d", "history_weight": 1}}}).spec
    assert body.fair_share.half_life == 7 * 86400


def test_decay_is_the_integral_of_the_halving_weight():
    h, now = 100.0, 1000.0
    steps = 100_000
    numeric = sum(2 ** (-(now - (800 + (k + 0.5) * 200 / steps)) / h) for k in range(steps)) * 200 / steps
    assert decayed(800, 1000, now, h) == pytest.approx(numeric, rel=1e-6)
    assert decayed(0, 1e9, 1e9, h) == pytest.approx(h / math.log(2))   # all of time: the window
    assert decayed(5, 5, now, h) == 0


def record(queue="q", start=0.0, end=0.0, gpus=2.0, **kw) -> UsageRecord:
    base = dict(job_id="j", attempt=1, tenant="t", queue=queue, site="s", gpu_model="H100", cpus=1.0,
                memory=float(2**30), gpus=gpus, started_at=start, ended_at=end)
    return UsageRecord(**{**base, **kw})


def test_fair_share_usage_is_a_decayed_mean_rate():
    h = 3600.0
    # Two GPUs held for ever: the decayed mean is two GPUs.
    usage = fair_share_usage([record(start=-1e9, end=0)], {}, 0.0, h)["q"]
    assert usage.history["gpus"] == pytest.approx(2.0) and usage.history["gpu:H100"] == pytest.approx(2.0)
    # The same two GPUs ended one half-life ago weigh half.
    usage = fair_share_usage([record(start=-1e9, end=-h)], {"q": {"gpus": 1}}, 0.0, h)["q"]
    assert usage.history["gpus"] == pytest.approx(1.0) and usage.running == {"gpus": 1}


def test_usage_report_groups_and_clips_to_the_window():
    records = [record("a", 0, 100, site="x", price=3.6), record("a", 50, 0, site="y", gpus=1),
               record("b", 0, 10, gpus=0)]
    rows = report(records, ("queue",), since=20, until=200)
    assert rows[0] == {"queue": "a", "attempts": 2, "cpu_seconds": 80 + 150, "memory_gib_seconds": 230.0,
                       "gpu_seconds": 2 * 80 + 1 * 150, "cost": pytest.approx(3.6 * 80 / 3600)}
    assert len(rows) == 1  # b ended before the window
    by_site = {r["site"]: r["gpu_seconds"] for r in report(records, ("queue", "site"), 0, 200)}
    assert by_site == {"x": 200, "y": 150, "s": 0}  # b ran 10 s on s, CPU only


def test_a_spent_budget_holds_its_queue_and_those_under_it_and_clears_as_the_day_slides():
    policy = PolicyConfig.model_validate({"metadata": {"name": "p"}, "spec": {
        "currency": "EUR", "classifications": {"open": {"allowed_jurisdictions": ["*"]}},
        "queues": [{"name": "lab", "limit": {"cost_per_day": 10}, "queues": [
            {"name": "a", "tenants": ["a"]}, {"name": "b", "tenants": ["b"], "limit": {"cost_per_day": "100 EUR"}}]},
                   {"name": "free", "tenants": ["f"]}]}})
    parents = {"lab": None, "a": "lab", "b": "lab", "free": None}
    now = 10 * DAY
    # 4 EUR an hour for 3 hours in b: 12 EUR, over lab's 10 (not b's own 100): a and b both wait.
    spent = [record("b", now - 3 * 3600, now, price=4.0), record("free", now - DAY, now, price=100.0)]
    held = over_budget(spent, policy, parents, now)
    assert set(held) == {"lab", "a", "b"}
    assert held["a"].startswith("queue lab spent 12.00 EUR of its 10 EUR a day")
    # A day later that spending is out of the window; still running work keeps counting.
    assert over_budget(spent[:1], policy, parents, now + DAY) == {}
    assert set(over_budget([record("a", now - 3 * 3600, 0, price=4.0)], policy, parents, now)) == {"lab", "a", "b"}
