"""Aggregation strategies and secure aggregation: pure, checked against plain arithmetic."""
from __future__ import annotations

import numpy as np
import pytest

from training import secagg
from training.strategies import (
    FedAdam,
    FedAvg,
    proximal_gradient,
    strategy,
    weighted_mean,
)

SITES = ("eu-west", "us-east", "edge-paris", "eu-north")


def test_fedavg_is_the_example_weighted_mean():
    a, b = {"w": np.array([1.0, 2.0]), "b": np.array([0.0])}, {"w": np.array([3.0, 6.0]), "b": np.array([4.0])}
    mean = weighted_mean([(a, 1), (b, 3)])
    assert np.allclose(mean["w"], [2.5, 5.0]) and np.allclose(mean["b"], [3.0])
    assert FedAvg().aggregate({"w": np.zeros(2)}, mean) is mean
    with pytest.raises(ValueError, match="disagree on their parameters"):
        weighted_mean([(a, 1), ({"w": np.zeros(2)}, 1)])
    with pytest.raises(ValueError, match="no examples"):
        weighted_mean([(a, 0)])


def test_fedadam_steps_toward_the_mean_and_keeps_its_state():
    g = {"w": np.zeros(3)}
    mean = {"w": np.array([1.0, -1.0, 0.0])}
    adam = FedAdam(lr=0.1)
    step = adam.aggregate(g, mean)
    # First step: m = 0.1*d, v = 0.01*d^2, so w moves by lr * 0.1d / (0.1|d| + tau) toward the mean.
    assert np.allclose(step["w"], [0.1 * 0.1 / (0.1 + 1e-3), -0.1 * 0.1 / (0.1 + 1e-3), 0.0])
    again = FedAdam(lr=0.1)
    again.load(adam.state())
    assert np.allclose(again.aggregate(step, mean)["w"], FedAdam(lr=0.1, m=adam.m, v=adam.v).aggregate(step, mean)["w"])


def test_fedprox_adds_the_proximal_pull_and_strategies_are_named():
    grad = proximal_gradient({"w": np.array([2.0])}, {"w": np.array([1.0])}, mu=0.5)
    assert np.allclose(grad["w"], [0.5])
    assert strategy("fedprox", mu=0.1).mu == 0.1
    with pytest.raises(ValueError, match="expected one of fedadam, fedavg, fedprox"):
        strategy("fedsgd")


def test_pair_secrets_agree_within_a_pair_and_differ_across_pairs_and_rounds():
    keys = {s: secagg.KeyPair.generate() for s in SITES[:3]}
    ab = secagg.pair_secret(keys["eu-west"], "eu-west", "us-east", keys["us-east"].public, "t/1")
    ba = secagg.pair_secret(keys["us-east"], "us-east", "eu-west", keys["eu-west"].public, "t/1")
    assert ab == ba and len(ab) == 32
    assert ab != secagg.pair_secret(keys["eu-west"], "eu-west", "us-east", keys["us-east"].public, "t/2")
    assert ab != secagg.pair_secret(keys["eu-west"], "eu-west", "edge-paris", keys["edge-paris"].public, "t/1")
    with pytest.raises(ValueError, match="no mask with itself"):
        secagg.pair_secret(keys["eu-west"], "eu-west", "eu-west", keys["eu-west"].public, "t/1")


def test_an_update_too_large_to_encode_is_refused():
    with pytest.raises(ValueError, match="too large to encode"):
        secagg.encode(np.array([1e13]))


def test_a_training_spec_is_checked_like_a_job(tmp_path):
    from federation.errors import InvalidSpec
    from federation.spec import load_training, training_from_dict
    good = {"apiVersion": "federation/v1", "kind": "FederatedTraining",
            "metadata": {"name": "digits", "tenant": "research"},
            "spec": {"dataset": "digits", "sites": {"min": 3, "max": 4}, "rounds": 20, "round_timeout": "2m",
                     "local_step": {"entrypoint": "training.examples.digits:local_step", "config": {"epochs": 2}},
                     "strategy": {"name": "fedprox", "mu": 0.1}, "aggregation": {"regions": ["eu"], "secure": True}}}
    spec = training_from_dict(good)
    assert (spec.spec.round_timeout, spec.spec.strategy.mu, spec.spec.aggregation.secure) == (120.0, 0.1, True)
    path = tmp_path / "t.yaml"
    path.write_text("apiVersion: federation/v1\nkind: FederatedTraining\nmetadata: {name: d, tenant: r}\n"
                    "spec:\n  dataset: digits\n  rounds: 3\n  sites: {min: 3, max: 2}\n"
                    "  local_step: {entrypoint: x}\n  stratgy: {name: fedavg}\n")
    unknown = r"t.yaml:9: spec.stratgy: unknown field 'stratgy' \(did you mean 'strategy'\?\)"
    with pytest.raises(InvalidSpec, match=unknown):
        load_training(path)
    bad = dict(good, spec=dict(good["spec"], sites={"min": 3, "max": 2}))
    with pytest.raises(InvalidSpec, match=r"spec.sites: .*max \(2\) is below min \(3\)"):
        training_from_dict(bad)
    with pytest.raises(InvalidSpec, match="kind: expected 'FederatedTraining', got 'Job'"):
        training_from_dict(dict(good, kind="Job"))
    with pytest.raises(InvalidSpec, match="spec.strategy.name"):
        training_from_dict(dict(good, spec=dict(good["spec"], strategy={"name": "fedsgd"})))
    for sites in ({"min": 1}, {"min": 2, "max": 2}):
        with pytest.raises(InvalidSpec, match="sites: secure aggregation needs 3 sites or more to take part"):
            training_from_dict(dict(good, spec=dict(good["spec"], sites=sites)))
    half = dict(good["spec"]["aggregation"], threshold=0.5)
    with pytest.raises(InvalidSpec, match="spec.aggregation.threshold: .*greater than 0.5"):
        training_from_dict(dict(good, spec=dict(good["spec"], aggregation=half)))


def views():
    from policies.model import SiteView

    def site(name, jurisdiction, region, used=0.0, **flags):
        return SiteView(name, jurisdiction, region, {}, 4.0, 2**34, 0.0, used_cpus=used, **flags)
    return [site("eu-west", "DE", "eu-west", 1.0), site("eu-north", "SE", "eu-north", 3.0),
            site("eu-south", "IT", "eu-south", connected=False), site("us-east", "US", "us-east"),
            site("edge-paris", "FR", "eu-west-edge", 2.0)]


def rules(crosses):
    from policies.model import ClassificationRule, Rules
    from policies.sovereignty import EU
    return Rules({"gdpr-personal": ClassificationRule(EU, may_cross_border=frozenset(crosses))})


def test_participants_are_the_shard_holders_the_rules_allow_least_busy_first():
    from policies.model import DatasetInfo
    from training.rounds import participants
    catalog = {"patients": DatasetInfo("patients", "gdpr-personal",
                                       frozenset({"eu-west", "eu-north", "eu-south", "us-east", "edge-paris"}))}
    p = participants("patients", views(), catalog, rules(["results"]), most=2)
    assert p.chosen == ("edge-paris", "eu-west")
    assert p.refused == {"eu-north": "more than the 2 sites the training takes", "eu-south": "offline",
                         "us-east": "gdpr-personal data (patients) may not be processed in US"}
    assert participants("nothing", views(), catalog, rules([]), None).chosen == ()


def test_the_aggregator_runs_only_where_model_updates_may_go():
    from training.rounds import aggregator_sites
    sites = {s.name: s for s in views()}
    sources = [sites["eu-west"], sites["edge-paris"]]
    ok, refused = aggregator_sites(views(), sources, "gdpr-personal", rules(["results"]))
    assert ok == [] and refused["eu-west"] == ("model updates of gdpr-personal data may not cross a border "
                                               "(from FR to DE)")
    ok, refused = aggregator_sites(views(), [sites["eu-west"]], "gdpr-personal", rules(["results"]))
    assert ok == ["eu-west"]
    ok, refused = aggregator_sites(views(), sources, "gdpr-personal", rules(["results", "model-updates"]),
                                   regions=["eu"])
    assert ok == ["eu-west", "edge-paris", "eu-north"]
    assert refused == {"eu-south": "offline", "us-east": "not in aggregation.regions"}
    ok, _ = aggregator_sites(views(), sources, "gdpr-personal", rules(["model-updates"]), only_sites=["eu-north"])
    assert ok == ["eu-north"]
    assert aggregator_sites(views(), sources, "unknown", rules([]))[1]["eu-west"].startswith("classification unknown")


@pytest.mark.parametrize("reported, lost, timed_out, state", [
    ({"a", "b", "c"}, set(), False, "aggregate"),
    ({"a", "b"}, set(), False, "wait"),          # c is still due and has time
    ({"a", "b"}, set(), True, "aggregate"),      # a straggler is left out; two are enough
    ({"a", "b"}, {"c"}, False, "aggregate"),     # a lost site does not stop the round
    ({"a"}, {"c"}, False, "wait"),
    ({"a"}, {"b", "c"}, False, "fail"),          # at most one can still report
    ({"a"}, set(), True, "fail"),
])
def test_a_round_proceeds_with_min_sites_when_others_are_slow_or_lost(reported, lost, timed_out, state):
    from training.rounds import round_state
    assert round_state({"a", "b", "c"}, reported, lost, timed_out, min_sites=2).value == state
