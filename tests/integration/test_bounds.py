"""What one caller may make the federation hold, over real mutual TLS: a spec's size, an array's
size times its spec's, and the jobs a tenant may have waiting; each refused in one line, with
nothing stored."""
from __future__ import annotations

import pytest
import yaml

from federation.cli.main import main
from federation.errors import InvalidSpec, ResourceExhausted
from tests.conftest import make_spec
from tests.integration.harness import CONFIGS, admin_client, start


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
