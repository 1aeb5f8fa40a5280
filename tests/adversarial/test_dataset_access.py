"""Tenants against a real federation over mutual TLS: a job may name only the datasets the
policy opens to its tenant, and a refused submission leaves nothing behind."""
from __future__ import annotations

import pytest
import yaml

from federation.cli.main import main
from federation.client import Client
from federation.errors import PermissionDenied
from tests.conftest import make_spec
from tests.integration.harness import CONFIGS, admin_client, register, site_stub, start


@pytest.fixture
def federation(tmp_path, capsys):
    policy = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    policy["spec"]["datasets"]["claims-us"]["tenants"] = ["billing"]   # narrower than its class (billing, research)
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    server = start(tmp_path, tmp_path / "policy.yaml")
    for name, tenant in (("bob", "billing"), ("rita", "research")):
        assert main(["user", "add", name, "--role", "submitter", "--tenant", tenant,
                     "--dir", str(tmp_path / "pki")]) == 0
    capsys.readouterr()
    eu, eu_channel = site_stub(server)
    register(eu)
    us, us_channel = site_stub(server, "us-east")
    register(us, "us-east", "US", "us-east", datasets=(("claims-us", ""),))
    yield server
    eu_channel.close()
    us_channel.close()
    server.stop(grace=0)


def as_user(federation, name: str) -> Client:
    pki = federation.pki["ca"].cert.parent
    return Client(federation.address, ca=pki / "ca.pem", cert=pki / f"{name}.pem", key=pki / f"{name}.key", timeout=5)


def test_a_tenant_may_not_name_a_dataset_its_class_keeps_from_it(federation):
    with as_user(federation, "bob") as bob:
        with pytest.raises(PermissionDenied) as e:
            bob.submit(make_spec(name="peek", tenant="billing", datasets=["patient-records-eu"]))
        assert e.value.message == ("spec.datasets[0]: tenant billing may not use dataset patient-records-eu "
                                   "(policy spec.classifications.gdpr-personal.tenants)")
        assert bob.jobs(tenant="billing") == []           # nothing stored
        assert bob.submit(make_spec(name="own", tenant="billing", datasets=["claims-us"])).status().state


def test_a_datasets_own_tenant_list_narrows_its_class(federation):
    with as_user(federation, "rita") as rita:          # research may use hipaa data, but not claims-us
        with pytest.raises(PermissionDenied) as e:
            rita.submit(make_spec(name="peek", tenant="research", datasets=["claims-us"]))
        assert "(policy spec.datasets.claims-us.tenants)" in e.value.message
        assert rita.submit(make_spec(name="eu", tenant="research", datasets=["patient-records-eu"])).id


def test_a_gang_part_naming_a_forbidden_dataset_refuses_the_whole_gang(federation):
    spec = make_spec(name="gang", tenant="billing", gang={"parts": [
        {"name": "ok", "datasets": ["claims-us"]}, {"name": "sneaky", "datasets": ["patient-records-eu"]}]})
    with as_user(federation, "bob") as bob:
        with pytest.raises(PermissionDenied) as e:
            bob.submit(spec)
        assert e.value.message.startswith("spec.gang.parts[1] (sneaky): spec.datasets[0]: tenant billing")
    with admin_client(federation) as admin:
        assert admin.jobs() == []


def test_fedctl_submit_prints_one_line_and_exits_with_the_permission_status(federation, tmp_path, capsys):
    path = tmp_path / "peek.yaml"
    path.write_text(yaml.safe_dump(make_spec(name="peek", tenant="billing", datasets=["patient-records-eu"])
                                   .model_dump(mode="json", exclude_defaults=True)))
    pki = tmp_path / "pki"
    code = main(["submit", str(path), "--address", federation.address, "--ca", str(pki / "ca.pem"),
                 "--cert", str(pki / "bob.pem"), "--key", str(pki / "bob.key")])
    err = capsys.readouterr().err
    assert code == 5 and err.count("\n") == 1 and err.startswith("error[PERMISSION_DENIED]: spec.datasets[0]")
