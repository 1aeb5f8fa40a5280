"""What one caller may make the federation hold, over real mutual TLS: a spec's size, an array's
size times its spec's, the jobs a tenant may have waiting, a caller's submissions a second and its
open streams; each refused in one line, with nothing stored, and never at the sites' expense."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import yaml

from federation.cli.main import main
from federation.client import Client
from federation.errors import InvalidSpec, ResourceExhausted
from federation.pki import init_pki, issue, scopes
from federation.service.sites import MESSAGE_BUDGET
from federation.transport import open_channel
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc
from tests.conftest import make_spec
from tests.integration.harness import CONFIGS, AgentStream, admin_client, register, site_stub, start
from tests.waiting import wait_for


def with_limits(tmp_path, **limits):
    policy = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    policy["spec"]["limits"] = limits
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    return tmp_path / "policy.yaml"


@pytest.fixture
def federation(tmp_path):
    server = start(tmp_path, with_limits(tmp_path, pending_per_tenant=5))
    yield server
    server.stop(grace=0)


def test_a_spec_larger_than_64_kib_is_refused(federation):
    with admin_client(federation) as admin:
        with pytest.raises(InvalidSpec, match=r"request: the spec is 71 KiB; at most 64 KiB"):
            admin.submit(make_spec("big", runtime_env={"env_vars": {f"BLOB{i}": "x" * 24_000 for i in range(3)}}))
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


def test_one_user_opening_a_thousand_streams_cannot_starve_the_sites_heartbeats(federation):
    """1,000 idle WatchJob streams from one user, started at once over 8 connections and never read,
    while two sites heartbeat every 0.25 s with the agent's deadline (a third of the lease): the user
    gets its 8, the other 992 are refused, and every heartbeat is answered well inside its deadline."""
    sites = {name: site_stub(federation, name) for name in ("eu-west", "us-east")}
    lease_s = register(sites["eu-west"][0], datasets=()).lease_s
    register(sites["us-east"][0], "us-east", "US", "us-east", datasets=())
    deadline = lease_s / 3
    with admin_client(federation) as admin, Heartbeats({n: s for n, (s, _) in sites.items()}, deadline) as beats:
        job = admin.submit(make_spec("watched"))
        calls, channels = open_watches(federation, job.id, 1000, connections=8)
        refusals = [outcome(call) for call in calls]
        assert (refusals.count(None), len(refusals) - refusals.count(None)) == (8, 992)
        assert {r for r in refusals if r} == {"RESOURCE_EXHAUSTED: admin has 8 streams open (watch, logs -f); "
                                              "at most 8 (policy spec.limits.streams_per_caller): close one"}
        answered = beats.answered()
        wait_for(lambda: beats.answered() >= answered + 4, deadline, "heartbeats beside the open streams")
        for call in calls:
            call.cancel()
        for channel in channels:
            channel.close()
        wait_for(lambda: watch_once(admin, job.id), 10, "a slot once they closed")
    for _, channel in sites.values():
        channel.close()
    worst = max(beats.times)
    print(f"\n{len(beats.times)} heartbeats beside 1,000 streams: worst {worst * 1000:.0f} ms of a "
          f"{deadline:g} s deadline")
    assert beats.failures == [], "every heartbeat acknowledged"
    assert worst < deadline / 2, f"a heartbeat took {worst:.1f}s of its {deadline:g}s deadline"


def test_open_streams_hold_no_thread(tmp_path):
    """500 WatchJob streams open at once (the policy lets this caller hold them) add no thread to
    the federation beyond its bounded pools: they wait on the event loop, not in a thread each."""
    federation = start(tmp_path, with_limits(tmp_path, streams_per_caller=600, user_streams=600))
    try:
        with admin_client(federation) as admin:
            job = admin.submit(make_spec("watched-by-many"))
            before = threading.active_count()
            calls, channels = open_watches(federation, job.id, 500, connections=4)
            assert [outcome(call) for call in calls].count(None) == 500, "every stream open"
            grown = threading.active_count() - before
            for call in calls:
                call.cancel()
            for channel in channels:
                channel.close()
    finally:
        federation.stop(grace=0)
    bounded = 64 + 16 + 4 + 4   # the users' and sites' pools at their default, the client's connections
    assert grown < bounded, f"{grown} threads more with 500 open streams"


def test_a_caller_past_its_submission_rate_is_told_to_retry_later(tmp_path):
    """3 at once, then 1 a second (spec.limits), on a clock the test moves: a burst of 10 from one
    caller stores 3 and refuses 7; another caller is not held back; a second later the first may submit
    once more. Trainings are metered too; a request counts once, however many jobs it makes."""
    pki = init_pki(tmp_path / "pki", clients=("admin", "eu-west", "us-east"))
    pki["alice"] = issue(pki["ca"], tmp_path / "pki", "alice", units=tuple(scopes("submitter", ("default",))))
    federation = start(tmp_path, with_limits(tmp_path, submissions_per_second=1, submission_burst=3), pki=pki)
    clock = Clock()
    federation.control.admission.rates.clock = clock
    alice = Client(federation.address, ca=pki["ca"].cert, cert=pki["alice"].cert, key=pki["alice"].key, timeout=5)
    with admin_client(federation) as admin, alice:
        with ThreadPoolExecutor(10) as pool:
            outcomes = list(pool.map(lambda i: submitted(admin, make_spec(f"burst-{i}", array="0-1")), range(10)))
        assert (outcomes.count("stored"), len(outcomes) - outcomes.count("stored")) == (3, 7)
        assert set(outcomes) - {"stored"} == {"admin submits faster than its limit of 1 a second (burst 3; policy "
                                              "spec.limits.submissions_per_second); retry in 1s"}
        assert len(admin.jobs()) == 6, "3 arrays of 2, each one request; nothing stored for the refused"
        assert alice.submit(make_spec("hers")).id, "another caller has its own bucket"
        with pytest.raises(ResourceExhausted, match="admin submits faster than its limit"):
            admin.submit_training(TRAINING)
        clock.now += 1.0
        assert admin.submit(make_spec("later")).id
        with pytest.raises(ResourceExhausted):
            admin.submit(make_spec("too-soon"))
        assert len(admin.jobs()) == 8
    federation.stop(grace=0)


TRAINING = {"metadata": {"name": "t"}, "spec": {"dataset": "patient-records-eu", "rounds": 1,
                                                "local_step": {"entrypoint": "training.examples:step"}}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def submitted(client: Client, spec) -> str:
    try:
        client.submit(spec)
        return "stored"
    except ResourceExhausted as e:
        return e.message


class Heartbeats:
    """Each site heartbeating every 0.25 s from a thread with the agent's deadline, round trips and
    failures kept."""

    def __init__(self, stubs: dict, deadline: float) -> None:
        self.stubs, self.deadline = stubs, deadline
        self.times: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="heartbeats")

    def __enter__(self) -> Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(self.deadline + 5)

    def answered(self) -> int:
        return len(self.times)

    def _beat(self) -> None:
        while not self._stop.is_set():
            for name, stub in self.stubs.items():
                started = time.monotonic()
                try:
                    stub.Heartbeat(pb.HeartbeatRequest(name=name), timeout=self.deadline)
                    self.times.append(time.monotonic() - started)
                except grpc.RpcError as e:
                    self.failures.append(f"{name}: {e.code().name}: {e.details()}")
            self._stop.wait(0.25)


def open_watches(federation, job_id: str, n: int, connections: int) -> tuple[list, list[grpc.Channel]]:
    """`n` WatchJob calls by the admin, started together from threads over `connections` connections
    of their own, none read."""
    pki = federation.pki
    channels = [open_channel(federation.address, ca=pki["ca"].cert, cert=pki["admin"].cert, key=pki["admin"].key)
                for _ in range(connections)]

    def start_calls(channel: grpc.Channel) -> list:
        stub = pb_grpc.FederationServiceStub(channel)
        return [stub.WatchJob(pb.WatchJobRequest(id=job_id), timeout=60) for _ in range(n // connections)]

    with ThreadPoolExecutor(connections) as pool:
        return [call for calls in pool.map(start_calls, channels) for call in calls], channels


def outcome(call) -> str | None:
    """None for a stream that opened (its first message came), else the refusal's code and message."""
    try:
        next(call)
        return None
    except grpc.RpcError as e:
        return f"{e.code().name}: {e.details()}"


def watch_once(admin, job_id: str) -> bool:
    try:
        next(admin._stub.WatchJob(pb.WatchJobRequest(id=job_id)))
        return True
    except grpc.RpcError as e:
        raise AssertionError(e.details()) from None


def test_a_site_gets_more_specs_than_one_message_holds_and_each_only_once(tmp_path):
    """200 jobs of 50 KB each: 10 MB of specs, past the channel's 8 MiB cap for one message. The
    desired set always lists every attempt; specs come at most a budget a message, once each."""
    server = start(tmp_path)
    try:
        eu, channel = site_stub(server)
        register(eu, datasets=(), cpus=64)
        with admin_client(server) as admin:
            pad = {"env_vars": {"A": "x" * 25_000, "B": "y" * 25_000}}
            ids = {admin.submit(make_spec(f"big-{i}", resources={"cpus": 0.01}, runtime_env=pad)).id
                   for i in range(200)}
        agent = AgentStream(eu, "eu-west")
        described: list[str] = []
        while set(described) != ids:
            response = next(agent.responses)
            assert response.ByteSize() < MESSAGE_BUDGET + 64 * 1024 + 100 * len(response.assignments)
            listed = [a.job_id for a in response.assignments]
            assert set(described) <= set(listed), "every attempt already described is still listed"
            described += [a.job_id for a in response.assignments if a.HasField("spec")]
        assert len(described) == len(ids) == 200, "no spec sent twice on one stream"
        agent.close()
        channel.close()
    finally:
        server.stop(grace=0)
