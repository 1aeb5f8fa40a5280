"""An agent's lease across its own restart, against a real federation over mutual TLS: restarted
while cut off from the federation, it still fences the work Ray kept running, in time."""
from __future__ import annotations

import threading

from federation.spec import SiteConfig
from federation.transport import open_channel
from site_agent.agent import SiteAgent
from site_agent.ray_driver import RayJob
from tests.integration.harness import site_stub, start
from tests.unit.test_reconciler import MemoryRay
from tests.waiting import wait_for

LEASE_S = 3.0


def config(tmp_path, pki, address: str) -> SiteConfig:
    return SiteConfig.model_validate({
        "metadata": {"name": "eu-west"},
        "spec": {"federation": {"address": address, "tls": {"ca": str(pki["ca"].cert), "cert": str(pki["eu-west"].cert),
                                                           "key": str(pki["eu-west"].key)}},
                 "location": {"jurisdiction": "DE", "region": "eu-west"}, "work_dir": str(tmp_path / "site")}})


def test_an_agent_restarted_while_cut_off_fences_from_its_last_lease(tmp_path):
    federation = start(tmp_path, site_timeout_s=LEASE_S)
    pki = federation.pki
    try:
        stub, channel = site_stub(federation)
        first = SiteAgent(config(tmp_path, pki, federation.address), MemoryRay(), lambda _address: channel)
        first._register(stub)   # the lease, and when it was renewed, kept beside the agent's work
        channel.close()
    finally:
        federation.stop(grace=0)
    ray = MemoryRay()   # Ray outlived the agent: its job still runs
    ray.jobs_["fed-j-1-1"] = RayJob("fed-j-1-1", "RUNNING", site="eu-west")

    def unreachable(address: str):
        return open_channel(address, ca=pki["ca"].cert, cert=pki["eu-west"].cert, key=pki["eu-west"].key)

    restarted = SiteAgent(config(tmp_path, pki, "127.0.0.1:1"), ray, unreachable)
    assert restarted.lease_s == LEASE_S
    watch = threading.Thread(target=restarted._watch_lease, daemon=True)
    watch.start()
    try:
        wait_for(lambda: restarted.reconciler.fenced, 2 * LEASE_S, "the restarted agent to fence")
        assert ray.stopped == ["fed-j-1-1"], "the job Ray kept is stopped before the federation may re-place it"
    finally:
        restarted.stop()
        watch.join(5)
