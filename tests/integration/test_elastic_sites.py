"""Elastic, priced sites through a real federation and every store: what a site says it costs and
can add is checked as its YAML would be, kept, shown, and placed against; nodes it reports up
count as capacity, not as room to grow; a lying or malformed report is refused."""
from __future__ import annotations

from dataclasses import replace

import grpc
import pytest
import yaml

from federation.errors import Unsatisfiable
from federation.sites import Capacity, SiteRecord
from federation.v1 import federation_pb2 as pb
from policies.pricing import Elastic, NodeType, Pricing, Rates
from tests.conftest import make_spec
from tests.integration.harness import CONFIGS, AgentStream, GiB, admin_client, run_on, site_stub, start
from tests.waiting import wait_for

CPU_OD = pb.NodeType(name="cpu-od", cpus=4, memory_bytes=16 * GiB, max=2, start_s=90)
CPU_SPOT = pb.NodeType(name="cpu-spot", cpus=4, memory_bytes=16 * GiB, max=2, spot=True, start_s=120)


def pricing(**kw) -> pb.Pricing:
    return pb.Pricing(currency=kw.pop("currency", "USD"), on_demand=pb.Rates(cpu_hour=kw.pop("cpu_hour", 0.05)),
                      spot=pb.Rates(cpu_hour=0.02), **kw)


def register(stub, name="us-east", price: pb.Pricing | None = None, elastic: pb.Elastic | None = None, cpus=0.0):
    return stub.RegisterSite(pb.RegisterSiteRequest(
        name=name, location=pb.Location(jurisdiction="US", region="us-east"), labels={"baa": "true"},
        capacity=pb.Resources(cpus=cpus, memory_bytes=int(cpus) * 4 * GiB),
        pricing=price or pricing(), elastic=elastic or pb.Elastic(node_types=[CPU_OD, CPU_SPOT], idle_timeout_s=60)),
        timeout=5)


def test_an_elastic_site_is_kept_shown_and_placed_against(federation, client):
    stub, channel = site_stub(federation, "us-east")
    register(stub)
    site = client.site("us-east")
    assert site.pricing["currency"] == "USD" and site.pricing["spot"]["cpu_hour"] == 0.02
    assert [(t["name"], t["up"], t["price_hour"]) for t in site.node_types] == [("cpu-od", 0, 0.2),
                                                                                ("cpu-spot", 0, 0.08)]
    job = client.submit(make_spec(datasets=[], resources={"cpus": 2}))
    p = wait_for(lambda: (p := job.placement).site and p, 5, "a placement")
    assert p.site == "us-east" and "starts on a new cpu-od node the site adds (about 90 s)" in p.summary
    # One node comes up: the federation counts it as capacity, and one more as room to grow.
    stub.Heartbeat(pb.HeartbeatRequest(name="us-east", capacity=pb.Resources(cpus=4, memory_bytes=16 * GiB),
                                       nodes_up={"cpu-od": 1, "cpu-spot": 0}), timeout=5)
    assert [t["up"] for t in client.site("us-east").node_types] == [1, 0]
    channel.close()


@pytest.mark.parametrize("change, expected", [
    (lambda r: r.pricing.on_demand.__setattr__("cpu_hour", -1.0), "pricing.cpu_hour: Input should be greater"),
    (lambda r: r.pricing.__setattr__("currency", "dollars"), "pricing.currency: Value error, currency 'dollars'"),
    (lambda r: r.pricing.on_demand.__setattr__("cpu_hour", float("nan")), "pricing.cpu_hour"),
    (lambda r: r.ClearField("pricing"), "elastic: an elastic site needs pricing"),
    (lambda r: r.pricing.ClearField("spot"), "elastic.node_types[1] (cpu-spot) is spot"),
    (lambda r: r.elastic.node_types[0].__setattr__("max", -1), "elastic.node_types.0.max"),
    (lambda r: r.elastic.node_types.append(pb.NodeType(name="g", cpus=4, memory_bytes=GiB, max=1, gpu_model="H100",
                                                       gpu_count=8, gpu_memory_bytes=80 * GiB)),
     "elastic.node_types[2] (g): GPU model H100 has no price"),
    (lambda r: r.elastic.up.__setitem__("nowhere", 3), "elastic.up: 'nowhere' is not one of the site's node types"),
    (lambda r: r.pricing.__setattr__("currency", "EUR"), "pricing.currency: EUR, but the federation's policy prices"),
])
def test_a_bad_registration_is_refused_with_where_and_nothing_is_kept(federation, client, change, expected):
    stub, channel = site_stub(federation, "us-east")
    request = pb.RegisterSiteRequest(
        name="us-east", location=pb.Location(jurisdiction="US", region="us-east"), labels={"baa": "true"},
        pricing=pricing(), elastic=pb.Elastic(node_types=[CPU_OD, CPU_SPOT], idle_timeout_s=60))
    change(request)
    with pytest.raises(grpc.RpcError) as e:
        stub.RegisterSite(request, timeout=5)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and expected in e.value.details(), e.value.details()
    assert "\n" not in e.value.details()
    assert [s.name for s in client.sites()] == []
    channel.close()


def test_a_heartbeat_cannot_claim_nodes_the_site_does_not_have(federation, client):
    stub, channel = site_stub(federation, "us-east")
    register(stub)
    for up, expected in (({"gpu-x": 1}, "'gpu-x' is not one of the site's node types"),
                         ({"cpu-od": -1}, "nodes_up.cpu-od: -1 nodes is not between 0 and 10000")):
        with pytest.raises(grpc.RpcError) as e:
            stub.Heartbeat(pb.HeartbeatRequest(name="us-east", nodes_up=up), timeout=5)
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and expected in e.value.details()
    assert [t["up"] for t in client.site("us-east").node_types] == [0, 0]
    channel.close()


def test_the_store_keeps_prices_and_node_types_and_a_heartbeat_updates_only_what_it_carries(store):
    elastic = Elastic((NodeType("cpu-od", 4, 16.0 * GiB, max=2, start_s=90),
                       NodeType("gpu", 8, 64.0 * GiB, max=1, gpus=8, gpu_model="H100", gpu_memory=80.0 * GiB,
                                spot=True)), 60.0, {"cpu-od": 0, "gpu": 0})
    site = SiteRecord("us-east", "US", "us-east", pricing=Pricing(Rates(0.05, 0.005, {"H100": 2.5}),
                                                                   Rates(0.02, 0.002, {"H100": 0.9}), 0.09, "USD"),
                      elastic=elastic)
    assert store.upsert_site(site).pricing == site.pricing
    assert store.list_sites()[0].elastic == elastic
    store.heartbeat("us-east", Capacity(4, 16 * GiB), 10.0)
    got = store.get_site("us-east")
    assert (got.last_heartbeat, got.capacity.cpus, got.elastic) == (10.0, 4, elastic)
    grown = replace(elastic, up={"cpu-od": 1, "gpu": 0})
    store.heartbeat("us-east", None, 11.0, elastic=grown)
    assert [(s.last_heartbeat, s.elastic) for s in store.list_sites()] == [(11.0, grown)]
    plain = store.upsert_site(SiteRecord("eu-west", "DE", "eu-west"))
    assert (plain.pricing, plain.elastic) == (None, None)


def test_a_max_price_below_every_site_is_refused_at_submission_and_nothing_is_stored(federation, client):
    stub, channel = site_stub(federation, "us-east")
    register(stub)
    with pytest.raises(Unsatisfiable) as e:
        client.submit(make_spec(datasets=[], resources={"cpus": 1}, placement={"max_price": 0.01}))
    assert str(e.value.message) == ("spec.placement.max_price: 0.01 an hour is below every site's price for this job "
                                    "(cheapest: us-east at 0.05 an hour)")
    assert client.jobs() == []
    # Accepting spot brings it within reach: it is stored, and placed on a spot node.
    job = client.submit(make_spec(datasets=[], resources={"cpus": 1}, placement={"max_price": 0.03, "spot": "allow"}))
    p = wait_for(lambda: (p := job.placement).site and p, 5, "a placement")
    assert "starts on a new cpu-spot node" in p.summary and "0.02 USD/h" in p.summary
    channel.close()


def test_a_queue_whose_budget_is_spent_holds_its_jobs_and_says_why(tmp_path):
    data = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    research = next(q for q in data["spec"]["queues"] if q["name"] == "research")
    research.setdefault("limit", {})["cost_per_day"] = "1 USD"
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(data))
    federation = start(tmp_path, tmp_path / "policy.yaml")
    try:
        with admin_client(federation) as client:
            stub, channel = site_stub(federation, "us-east")
            register(stub, price=pricing(cpu_hour=360_000.0), cpus=4)   # 100 dollars a CPU-second
            agent = AgentStream(stub, "us-east")
            spender = client.submit(make_spec("spender", tenant="research", datasets=[]))
            run_on(agent, spender)
            other = client.submit(make_spec("other", tenant="oncology", datasets=[]))   # another queue
            wait_for(lambda: other.status().state == "placed", 5, "the other queue's job placed")
            held = client.submit(make_spec("held", tenant="research", datasets=[]))
            p = wait_for(lambda: (p := held.placement).summary.startswith("held:") and p, 10, "a budget hold")
            assert p.summary.startswith("held: queue research spent ") and "of its 1 USD a day" in p.summary
            assert {v.reason_code for v in p.verdicts} == {"queue-limit"} and held.status().state == "pending"
            rows = client.usage(group_by=["queue"])
            assert next(r for r in rows if r["queue"] == "research")["cost"] >= 1.0
            agent.close()
            channel.close()
    finally:
        federation.stop(grace=0)


def test_a_dataset_s_size_is_kept_and_a_negative_one_refused(federation, client):
    stub, channel = site_stub(federation)
    request = pb.RegisterSiteRequest(name="eu-west", location=pb.Location(jurisdiction="DE", region="eu-west"),
                                     datasets=[pb.Dataset(name="patient-records-eu", classification="gdpr-personal",
                                                          size_bytes=-1)])
    with pytest.raises(grpc.RpcError) as e:
        stub.RegisterSite(request, timeout=5)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and client.sites() == []
    assert e.value.details() == "registration of 'eu-west': size: Value error, size must not be negative"
    request.datasets[0].size_bytes = 50 * GiB
    stub.RegisterSite(request, timeout=5)
    assert federation.control.store.get_site("eu-west").datasets[0].size == 50 * GiB
    channel.close()
