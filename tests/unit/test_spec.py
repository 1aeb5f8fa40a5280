"""Job, site, policy and federation specs: good files load, bad ones say where and what."""
from pathlib import Path

import pytest

from federation.errors import InvalidSpec
from federation.spec import (
    job_from_dict,
    job_from_text,
    load_federation,
    load_job,
    load_policy,
    load_site,
    load_training,
)
from federation.spec.quantity import format_bytes, parse_bytes

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

GOOD = """\
apiVersion: federation/v1
kind: Job
metadata: {name: tokenize-records, tenant: oncology, labels: {team: nlp}}
spec:
  entrypoint: python -m jobs.tokenize
  runtime_env: {working_dir: ./jobs, env_vars: {A: "1"}}
  datasets: [patient-records-eu]
  resources: {cpus: 2, memory: 4Gi, gpus: 0}
  placement: {regions: [eu], prefer: [eu-west]}
  priority: normal
"""


def test_good_job_loads_with_every_field():
    job = job_from_text(GOOD)
    assert job.metadata.tenant == "oncology"
    assert job.spec.resources.memory == 4 * 2**30
    assert job.spec.placement.prefer == ["eu-west"]
    assert job.spec.runtime_env["env_vars"] == {"A": "1"}


@pytest.mark.parametrize("path", sorted((CONFIGS / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_examples_load(path):
    if "kind: FederatedTraining" in path.read_text():
        assert load_training(path).spec.local_step.entrypoint
    else:
        assert load_job(path).spec.entrypoint


@pytest.mark.parametrize("path", sorted([*(CONFIGS / "sites").glob("*.yaml"), *(CONFIGS / "clouds").glob("*.yaml"),
                                         *(CONFIGS / "slurm").glob("*.yaml")]),
                         ids=lambda p: p.name)
def test_shipped_site_configs_load_with_paths_resolved(path):
    site = load_site(path)
    assert site.spec.federation.tls is not None and site.spec.federation.tls.ca.is_absolute()
    for d in site.spec.datasets:
        assert Path(d.path).is_file(), d.path


def test_shipped_federation_and_policy_load():
    fed = load_federation(CONFIGS / "federation.yaml")
    assert fed.spec.policy == (CONFIGS / "policy.yaml").resolve()
    assert "gdpr-personal" in load_policy(fed.spec.policy).spec.classifications


@pytest.mark.parametrize("text, expected", [
    # unknown field, with the line and a hint
    (GOOD.replace("gpus: 0", "gpuz: 0"), "<spec>:8: spec.resources.gpuz: unknown field 'gpuz' (did you mean 'gpus'?)"),
    (GOOD.replace("  priority: normal", "  priorty: normal"),
     "<spec>:10: spec.priorty: unknown field 'priorty' (did you mean 'priority'?)"),
    (GOOD.replace("metadata:", "metdata:"), "metdata: unknown field 'metdata' (did you mean 'metadata'?)"),
    # wrong values
    (GOOD.replace("memory: 4Gi", "memory: 4Gx"), "<spec>:8: spec.resources.memory: '4Gx' is not a size"),
    (GOOD.replace("memory: 4Gi", "memory: " + "9" * 400 + "Gi"), "<spec>:8: spec.resources.memory: '9999"),
    (GOOD.replace("memory: 4Gi", "memory: 1" + "0" * 30), "<spec>:8: spec.resources.memory: '1000"),
    (GOOD.replace("cpus: 2", "cpus: -1"), "<spec>:8: spec.resources.cpus: Input should be greater than or equal to 0"),
    (GOOD.replace("gpus: 0", "gpus: 1.5"), "spec.resources.gpus: more than one GPU must be a whole number"),
    (GOOD.replace("priority: normal", "priority: urgent"),
     "<spec>:10: spec.priority: Input should be 'low', 'normal' or 'high'"),
    (GOOD.replace("name: tokenize-records", "name: Tokenize_Records"),
     "<spec>:3: metadata.name: name 'Tokenize_Records' must be"),
    (GOOD.replace("[patient-records-eu]", "[a, a]"), "spec.datasets: a dataset is listed twice"),
    (GOOD.replace("federation/v1", "federation/v2"), "<spec>:1: apiVersion: Input should be 'federation/v1'"),
    (GOOD.replace("  entrypoint: python -m jobs.tokenize\n", ""), "spec.entrypoint: required field is missing"),
    # malformed YAML, wrong kind, wrong shape
    (GOOD.replace("{name: tokenize-records,", "{name: tokenize-records"), "malformed YAML"),
    (GOOD.replace("kind: Job", "kind: Site"), "<spec>: kind: expected 'Job', got 'Site'"),
    ("- just\n- a list\n", "expected a mapping"),
    ("", "empty document"),
])
def test_bad_job_specs_name_the_field_and_line(text, expected):
    with pytest.raises(InvalidSpec) as e:
        job_from_text(text)
    message = e.value.message
    assert expected in message
    assert "\n" not in message


def test_several_errors_are_counted_on_one_line():
    with pytest.raises(InvalidSpec, match=r"\(and 1 more\)$"):
        job_from_text(GOOD.replace("gpus: 0", "gpuz: 0").replace("cpus: 2", "cpuz: 2"))


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(InvalidSpec, match="no such file"):
        load_job(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("gpus: 0", "gpuz: 0"))
    with pytest.raises(InvalidSpec, match=rf"^{bad}:8: spec.resources.gpuz"):
        load_job(bad)
    big = tmp_path / "big.yaml"
    big.write_text("x: " + "a" * (1 << 20) + "\n")
    with pytest.raises(InvalidSpec, match="larger than"):
        load_job(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InvalidSpec, match="not UTF-8"):
        load_job(binary)


def test_dict_specs_validate_like_files():
    data = job_from_text(GOOD).model_dump()
    assert job_from_dict(data).metadata.name == "tokenize-records"
    data["spec"]["resources"]["gpus"] = -1
    with pytest.raises(InvalidSpec, match="spec.resources.gpus"):
        job_from_dict(data)


def test_site_config_requires_tls_or_explicit_insecure(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("""\
apiVersion: federation/v1
kind: Site
metadata: {name: s1}
spec:
  federation: {address: "127.0.0.1:1"}
  location: {jurisdiction: DE, region: eu-west}
""")
    with pytest.raises(InvalidSpec, match="spec.federation: set tls"):
        load_site(path)
    path.write_text(path.read_text().replace('address: "127.0.0.1:1"', 'address: "127.0.0.1:1", insecure: true')
                    .replace("jurisdiction: DE", "jurisdiction: Germany"))
    with pytest.raises(InvalidSpec, match=r":6: spec.location.jurisdiction: jurisdiction 'Germany' must be"):
        load_site(path)


@pytest.mark.parametrize("text, value", [("4Gi", 4 * 2**30), ("512Mi", 512 * 2**20), ("2G", 2 * 10**9),
                                         ("1.5Ki", 1536), (1024, 1024), ("10", 10)])
def test_quantities(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["4 GB", "-1", "Gi", True, "1e9"])
def test_bad_quantities(text):
    with pytest.raises(ValueError):
        parse_bytes(text)


def test_format_bytes():
    assert format_bytes(4 * 2**30) == "4Gi"
    assert format_bytes(100) == "100"


@pytest.mark.parametrize(("value", "error"), [
    ("-5s", r"spec.time_limit: '-5s' is not a duration"), ("soon", r"spec.time_limit: 'soon' is not a duration"),
    (0, r"spec.time_limit: Input should be greater than 0")])
def test_a_time_limit_is_a_positive_duration_and_a_bad_one_names_its_field(value, error):
    assert job_from_dict({"metadata": {"name": "a", "tenant": "t"},
                          "spec": {"entrypoint": "x", "time_limit": "2h"}}).spec.time_limit == 7200
    with pytest.raises(InvalidSpec, match=error):
        job_from_dict({"metadata": {"name": "a", "tenant": "t"}, "spec": {"entrypoint": "x", "time_limit": value}})
