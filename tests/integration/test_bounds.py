"""What one caller may make the federation hold, over real mutual TLS: a spec's size, an array's
size times its spec's, and the jobs a tenant may have waiting; each refused in one line, with
nothing stored."""
from __future__ import annotations

import time

import grpc
import pytest
import yaml

from federation.cli.main import main
from federation.errors import InvalidSpec, ResourceExhausted
from federation.v1 import federation_pb2 as pb
from tests.conftest import make_spec
from tests.integration.harness import CONFIGS, admin_client, register, site_stub, start
from tests.waiting import wait_for


@pytest.fixture
def federation(tmp_path):
    policy = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    policy["spec"]["limits"] = {"pending_per_tenant": 5}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    server = start(tmp_path, tmp_path / "policy.yaml")
    yield server
    server.stop(grace=0)


def test_a_spec_larger_than_64_kib_is_refused(federation):
    with admin_client(federation) as admin:
        with pytest.raises(InvalidSpec, match=r"request: the spec is 69 KiB; at most 64 KiB"):
            admin.submit(make_spec("big", runtime_env={"env_vars": {"BLOB": "x" * 70_000}}))
        assert admin.jobs() == []


def test_an_array_whose_elements_would_store_too_much_is_refused(federation):
    with admin_client(federation) as admin:
        with pytest.raises(InvalidSpec, match=r"spec.array: 10000 elements of a \d+\.\d KiB spec would store \d+ MiB"):
            admin.submit(make_spec("wide", array="0-9999", runtime_env={"env_vars": {"PAD": "x" * 2000}}))
        assert admin.jobs() == []


def test_a_tenant_past_its_waiting_limit_is_told_to_retry_later(federation, tmp_path, capsys):
    with admin_client(federation) as admin:
        assert len(admin.submit(make_spec("first", tenant="research", array="0-2")).jobs) == 3
        with pytest.raises(ResourceExhausted) as e:
            admin.submit(make_spec("more", tenant="research", array="0-2"))
        assert e.value.message == ("tenant research has 3 jobs waiting; 3 more would pass its limit of 5 "
                                   "(policy spec.limits.pending_per_tenant); retry later")
        assert len(admin.jobs(tenant="research")) == 3, "nothing half-stored"
        assert admin.submit(make_spec("other", tenant="billing")).id, "another tenant is not held back"
    path = tmp_path / "more.yaml"
    path.write_text(yaml.safe_dump(make_spec("more", tenant="research", array="0-2")
                                   .model_dump(mode="json", exclude_defaults=True)))
    pki = federation.pki
    code = main(["submit", str(path), "--address", federation.address, "--ca", str(pki["ca"].cert),
                 "--cert", str(pki["admin"].cert), "--key", str(pki["admin"].key)])
    err = capsys.readouterr().err
    assert code == 9 and err.startswith("error[RESOURCE_EXHAUSTED]: tenant research") and err.count("\n") == 1


def test_one_user_holding_streams_cannot_take_the_threads_sites_heartbeat_on(federation):
    stub, channel = site_stub(federation)
    register(stub, datasets=())
    with admin_client(federation) as admin:
        job = admin.submit(make_spec("watched"))
        watchers = [admin._stub.WatchJob(pb.WatchJobRequest(id=job.id)) for _ in range(200)]
        opened, refused = 0, 0
        for call in watchers:
            try:
                next(call)
                opened += 1
            except grpc.RpcError as e:
                assert e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, e
                assert "streams open (watch, logs -f); at most 8: close one" in e.details()
                refused += 1
        assert (opened, refused) == (8, 192)
        started = time.monotonic()
        for _ in range(20):
            stub.Heartbeat(pb.HeartbeatRequest(name="eu-west"), timeout=2)
        print(f"\n20 heartbeats beside 8 open streams and 192 refused: {(time.monotonic() - started) * 50:.1f} ms each")
        for call in watchers:
            call.cancel()
        wait_for(lambda: watch_once(admin, job.id), 10, "a slot once they closed")
    channel.close()


def watch_once(admin, job_id: str) -> bool:
    try:
        next(admin._stub.WatchJob(pb.WatchJobRequest(id=job_id)))
        return True
    except grpc.RpcError as e:
        raise AssertionError(e.details()) from None
