"""Sites and trust through a real federation: registration, cordon and drain, certificates, inventories."""
from __future__ import annotations

import grpc
import pytest

from federation.client import Client
from federation.errors import (
    ConfigError,
    NotFound,
    Unavailable,
)
from federation.identity import scopes
from federation.pki import create_ca, issue
from federation.server import start_server
from federation.spec.server import FederationBody, FederationConfig
from federation.v1 import federation_pb2 as pb
from tests.conftest import make_spec
from tests.integration.harness import CONFIGS, AgentStream, GiB, register, site_stub
from tests.waiting import wait_for
from training import secagg


def test_cordoned_site_gets_no_new_work(federation, client):
    stub, channel = site_stub(federation)
    register(stub, datasets=())
    assert client.cordon("eu-west").state == "cordoned"
    job = client.submit(make_spec())
    p = wait_for(lambda: (p := job.placement).verdicts and p, 5, "verdicts")
    assert [(v.site, v.reason_code) for v in p.verdicts] == [("eu-west", "cordoned")]
    assert client.uncordon("eu-west").state == "ready"
    wait_for(lambda: job.status().state == "placed", 5, "placement after uncordon")
    assert client.drain("eu-west").state == "draining"
    with pytest.raises(NotFound):
        client.cordon("nowhere")
    channel.close()


def test_site_registration_is_validated(federation):
    stub, channel = site_stub(federation)
    with pytest.raises(grpc.RpcError) as e:
        register(stub, jurisdiction="Germany")
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "jurisdiction" in e.value.details()
    register(stub)
    us_stub, us_channel = site_stub(federation, "us-east")
    with pytest.raises(grpc.RpcError) as e:
        register(us_stub, "us-east", "US", "us-east", datasets=(("patient-records-eu", "public"),))
    assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED   # the catalog says where a dataset is held
    assert "the policy lists it at eu-west, eu-north only" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        next(us_stub.Connect(iter([pb.ConnectRequest(site="us-east")])))  # never registered
    assert e.value.code() is grpc.StatusCode.NOT_FOUND
    # A zero or low-order agreement key would make every secure round it joins fail or be read.
    good = secagg.KeyPair.generate().public
    for key in (bytes(32), (1).to_bytes(32, "little"), b"short"):
        with pytest.raises(grpc.RpcError) as e:
            stub.RegisterSite(pb.RegisterSiteRequest(name="eu-west", location=pb.Location(
                jurisdiction="DE", region="eu-west"), agreement_key=key), timeout=5)
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT, key
        assert "agreement_key" in e.value.details(), e.value.details()
    stub.RegisterSite(pb.RegisterSiteRequest(name="eu-west", location=pb.Location(jurisdiction="DE", region="eu-west"),
                                             agreement_key=good), timeout=5)
    assert federation.control.store.get_site("eu-west").agreement_key == good.hex()
    channel.close()
    us_channel.close()


def test_a_site_certificate_speaks_only_for_its_own_site(federation):
    stub, channel = site_stub(federation, "us-east")
    for call in (lambda: register(stub, "eu-west"),
                 lambda: stub.Heartbeat(pb.HeartbeatRequest(name="eu-west"), timeout=5),
                 lambda: next(stub.Connect(iter([pb.ConnectRequest(site="eu-west")]), timeout=5))):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "certificate for us-east (site) cannot act as site 'eu-west'" in e.value.details()
    channel.close()


def test_clients_without_a_valid_certificate_are_refused(federation, tmp_path):
    pki = federation.pki
    no_cert = Client(federation.address, ca=pki["ca"].cert, timeout=2)
    with pytest.raises(Unavailable):
        no_cert.jobs()
    other_ca = create_ca(tmp_path / "other")
    stranger = issue(other_ca, tmp_path / "other", "admin")
    foreign = Client(federation.address, ca=pki["ca"].cert, cert=stranger.cert, key=stranger.key, timeout=2)
    with pytest.raises(Unavailable):
        foreign.jobs()
    plain = Client(federation.address, insecure=True, timeout=2)
    with pytest.raises(Unavailable):
        plain.jobs()
    old = issue(pki["ca"], tmp_path, "old-admin", days=-1, units=tuple(scopes("federation-admin")))
    expired = Client(federation.address, ca=pki["ca"].cert, cert=old.cert, key=old.key, timeout=2)
    with pytest.raises(Unavailable):
        expired.jobs()
    for c in (no_cert, foreign, plain, expired):
        c.close()


def test_a_second_federation_cannot_share_the_port(federation, tmp_path):
    config = FederationConfig(spec=FederationBody(listen=federation.address, store=tmp_path / "other.db",
                                                  policy=CONFIGS / "policy.yaml", insecure=True))
    with pytest.raises(ConfigError, match=f"listen: cannot bind {federation.address}"):
        start_server(config)


def gpu_node(name, gpus, nvlink=True, model="H100"):
    return pb.GpuNode(name=name, model=model, memory_bytes=80 * GiB,
                      domains=[f"{name}/nv" if nvlink else "" for _ in range(gpus)])


def test_a_published_inventory_shapes_placement_and_the_assignment_carries_the_block(federation, client):
    stub, channel = site_stub(federation)
    request = pb.RegisterSiteRequest(name="eu-west", location=pb.Location(jurisdiction="DE", region="eu-west"),
                                     capacity=pb.Resources(cpus=8, memory_bytes=8 * GiB, gpus=8),
                                     inventory=pb.Inventory(nodes=[gpu_node("pcie", 4, nvlink=False),
                                                                   gpu_node("dgx", 4)]))
    stub.RegisterSite(request, timeout=5)
    (site,) = client.sites()
    assert [(n["name"], n["gpus"], n["nvlink_domains"]) for n in site.gpu_nodes] == [("pcie", 4, 0), ("dgx", 4, 1)]
    agent = AgentStream(stub, "eu-west")
    job = client.submit(make_spec(resources={"gpus": 4}, topology={"nvlink": "required"}))
    (a,) = wait_for(lambda: agent.next_assignments(), 5, "an assignment")
    assert [(s.node, list(s.gpus), s.milli) for s in a.binding] == [("dgx", [0, 1, 2, 3], 1000)]
    assert job.status().attempts[0].binding == ({"node": "dgx", "gpus": [0, 1, 2, 3], "milli": 1000},)

    # The next NVLink job finds the domain taken: it waits, and says why.
    second = client.submit(make_spec(resources={"gpus": 4}, topology={"nvlink": "required"}))
    p = wait_for(lambda: (e := second.placement).verdicts and e, 5, "a verdict")
    assert p.verdicts[0].reason_code == "fragmented"
    assert p.verdicts[0].reason == ("needs 4 GPUs in one NVLink domain: 4 such GPUs free, but not in that "
                                     "shape (most free in one NVLink domain: 1)")

    # A heartbeat with a changed inventory (a new node) is taken in, and the waiting job placed there.
    stub.Heartbeat(pb.HeartbeatRequest(name="eu-west", inventory=pb.Inventory(
        nodes=[gpu_node("pcie", 4, nvlink=False), gpu_node("dgx", 4), gpu_node("dgx2", 4)])), timeout=5)
    wait_for(lambda: second.status().state == "placed", 5, "placement on the new node")
    assert second.status().attempts[0].binding[0]["node"] == "dgx2"
    agent.close()
    channel.close()


@pytest.mark.parametrize("nodes,error", [
    ([gpu_node("a", 4), gpu_node("a", 4)], "inventory.nodes[1].name: 'a' is empty, too long or repeated"),
    ([gpu_node("big", 129)], "inventory.nodes[0]: 129 GPUs on one node is more than 128"),
    ([gpu_node("", 1)], "inventory.nodes[0].name: '' is empty, too long or repeated"),
])
def test_a_malformed_inventory_is_refused_and_nothing_is_stored(federation, client, nodes, error):
    stub, channel = site_stub(federation)
    register(stub)
    for call in (lambda: stub.RegisterSite(pb.RegisterSiteRequest(
                     name="eu-west", location=pb.Location(jurisdiction="DE", region="eu-west"),
                     inventory=pb.Inventory(nodes=nodes)), timeout=5),
                 lambda: stub.Heartbeat(pb.HeartbeatRequest(name="eu-west", inventory=pb.Inventory(nodes=nodes)),
                                        timeout=5)):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and error in e.value.details()
    (site,) = client.sites()
    assert site.gpu_nodes == ()
    channel.close()


def test_a_sites_newer_connect_stream_closes_the_one_before(federation):
    """An agent that reconnects before its old stream was seen to break: the old stream is closed,
    so one site never has two streams reading and reporting for it."""
    stub, channel = site_stub(federation)
    register(stub, datasets=())
    first = AgentStream(stub, "eu-west")
    first.next_assignments()
    second = AgentStream(stub, "eu-west")
    second.next_assignments()
    with pytest.raises(grpc.RpcError) as closed:
        while True:
            first.next_assignments()
    assert closed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert closed.value.details() == "a newer Connect stream for eu-west replaced this one"
    second.report()
    assert second.next_assignments() == []   # the newer stream serves on
    second.close()
    channel.close()


def test_a_user_calling_site_methods_is_refused_before_taking_a_sites_thread(federation):
    pki = federation.pki
    from federation.transport import open_channel
    from federation.v1 import federation_pb2_grpc as pb_grpc
    channel = open_channel(federation.address, ca=pki["ca"].cert, cert=pki["admin"].cert, key=pki["admin"].key)
    stub = pb_grpc.SiteServiceStub(channel)
    for call in (lambda: stub.Heartbeat(pb.HeartbeatRequest(name="eu-west"), timeout=5),
                 lambda: next(stub.Connect(iter([pb.ConnectRequest(site="eu-west")]), timeout=5))):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert refused.value.details() == "certificate for admin (federation-admin) is not a site's"
    channel.close()


def test_a_job_that_refuses_spot_is_never_bound_to_a_spot_node_an_agent_published(federation, client):
    stub, channel = site_stub(federation)
    spot = gpu_node("spot-0", 4)
    spot.spot = True
    stub.RegisterSite(pb.RegisterSiteRequest(name="eu-west", location=pb.Location(jurisdiction="DE", region="eu-west"),
                                             capacity=pb.Resources(cpus=8, memory_bytes=8 * GiB, gpus=4),
                                             inventory=pb.Inventory(nodes=[spot])), timeout=5)
    agent = AgentStream(stub, "eu-west")
    refusing = client.submit(make_spec(resources={"gpus": 1}))   # no checkpoint: spot never, by default
    p = wait_for(lambda: (e := refusing.placement).verdicts and e, 5, "a verdict")
    assert p.verdicts[0].reason_code == "no-free-capacity"
    accepting = client.submit(make_spec(resources={"gpus": 1}, placement={"spot": "allow"}))
    (a,) = wait_for(lambda: agent.next_assignments(), 5, "an assignment")
    assert a.job_id == accepting.id and [s.node for s in a.binding] == ["spot-0"]
    assert refusing.status().state == "pending"
    agent.close()
    channel.close()
