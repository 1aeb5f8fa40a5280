"""Fixtures shared by the integration tests: a real federation (gRPC, mutual TLS, a SQLite file)
and sites played by hand (see harness for the helpers)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from federation.store import SQLiteStore, Store
from federation.store.postgres import PostgresStore
from federation.v1 import federation_pb2 as pb
from tests.integration.harness import (
    AgentStream,
    admin_client,
    register,
    site_stub,
    start,
)


@pytest.fixture
def federation(tmp_path):
    server = start(tmp_path)
    yield server
    server.stop(grace=0)


@pytest.fixture
def client(federation):
    with admin_client(federation) as c:
        yield c


@pytest.fixture
def eu_site(federation):
    """eu-west registered and heartbeating, holding patient-records-eu (gdpr-personal)."""
    stub, channel = site_stub(federation)
    register(stub)
    stub.Heartbeat(pb.HeartbeatRequest(name="eu-west"), timeout=5)
    yield stub
    channel.close()


@pytest.fixture
def us_site(federation):
    """us-east registered, holding claims-us (hipaa), with baa=true."""
    stub, channel = site_stub(federation, "us-east")
    register(stub, "us-east", "US", "us-east", datasets=(("claims-us", "hipaa"),), labels={"baa": "true"})
    yield stub
    channel.close()


@pytest.fixture
def eu_agent(eu_site):
    agent = AgentStream(eu_site, "eu-west")
    yield agent
    agent.close()


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgres"])
def store(request, tmp_path) -> Iterator[Store]:
    """Every storage backend, for the store's suites."""
    if request.param == "postgres":
        s: Store = PostgresStore(request.getfixturevalue("postgres_url"))
    else:
        s = SQLiteStore(tmp_path / "fed.db" if request.param == "sqlite-file" else ":memory:")
    yield s
    s.close()
