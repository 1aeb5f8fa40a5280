"""Deployment files are checked, not run: they parse, their commands exist, their configs validate."""
from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest
import yaml

from federation.cli.main import build_parser
from federation.spec import SCHEMAS, job_from_dict, job_from_text, training_from_dict
from federation.spec.loader import read_yaml, validate
from federation.spec.schema import schema_text

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def fedctl_args_parse(args: list[str]) -> None:
    build_parser().parse_args(args)  # SystemExit on an unknown command or option


def manifests() -> list[dict]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_kubernetes_manifests_are_well_formed():
    docs = manifests()
    assert {d["kind"] for d in docs} >= {"Deployment", "StatefulSet", "Service", "ConfigMap", "RayCluster"}
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"], d


def _containers(doc: dict) -> list[dict]:
    if doc["kind"] in ("Deployment", "StatefulSet"):
        return doc["spec"]["template"]["spec"]["containers"]
    if doc["kind"] == "RayCluster":
        out = doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
        for group in doc["spec"].get("workerGroupSpecs", []):
            out = out + group["template"]["spec"]["containers"]
        return out
    return []


def test_fedctl_containers_run_real_commands_with_mounted_configs():
    docs = manifests()
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    for doc in docs:
        pod = doc["spec"]["template"]["spec"] if doc["kind"] in ("Deployment", "StatefulSet") else \
            doc.get("spec", {}).get("headGroupSpec", {}).get("template", {}).get("spec")
        for c in _containers(doc):
            assert c.get("resources", {}).get("limits", {}).get("memory"), f"{c['name']} has no memory limit"
            if not c["image"].startswith("fedctl:"):
                continue
            fedctl_args_parse(c["args"])
            volumes = {v["name"]: v for v in pod["volumes"]}
            for m in c["volumeMounts"]:
                assert m["name"] in volumes
                cm = volumes[m["name"]].get("configMap")
                if cm and "subPath" in m:
                    assert m["subPath"] in configmaps[cm["name"]]["data"]


@pytest.mark.parametrize("kind", ["federation", "policy", "site"])
def test_configs_embedded_in_manifests_validate(kind):
    found = 0
    for doc in manifests():
        if doc["kind"] != "ConfigMap":
            continue
        for key, text in doc["data"].items():
            data, lines = read_yaml(text, key)
            if data.get("kind", "").lower() == kind:
                validate(SCHEMAS[kind], data, source=key, lines=lines)
                found += 1
    assert found


@pytest.mark.parametrize("unit", sorted((DEPLOY / "systemd").glob("*.service")), ids=lambda p: p.name)
def test_systemd_units_run_real_commands(unit):
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str
    parser.read(unit)
    exec_start = shlex.split(parser["Service"]["ExecStart"].replace("%i", "eu-west"))
    assert exec_start[0].endswith("/fedctl")
    fedctl_args_parse(exec_start[1:])
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_dockerfile_copies_what_exists():
    text = (DEPLOY / "container" / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src
    assert "USER fedctl" in text


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_committed_json_schemas_are_current(name):
    path = ROOT / "configs" / "schemas" / f"{name}.schema.json"
    assert path.read_text() == schema_text(name), "run `fedctl schema export` and commit"


def test_readme_example_job_is_valid():
    text = (ROOT / "README.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert job_from_text(block, "README.md").kind == "Job"


DOCUMENTED = [(path.name, block) for path in sorted((ROOT / "docs").glob("*.md"))
              for block in path.read_text().split("```yaml\n")[1:]
              if block.startswith("apiVersion:")]


@pytest.mark.parametrize("page, block", DOCUMENTED, ids=[f"{p}#{i}" for i, (p, _) in enumerate(DOCUMENTED)])
def test_whole_documents_in_the_docs_are_valid(page, block):
    """A page's example of a whole Job or FederatedTraining loads as that kind."""
    data = yaml.safe_load(block.split("```", 1)[0])
    loaded = job_from_dict(data, page) if data["kind"] == "Job" else training_from_dict(data, page)
    assert loaded.kind == data["kind"]


def test_the_docs_show_whole_documents():
    kinds = {yaml.safe_load(block.split("```", 1)[0])["kind"] for _, block in DOCUMENTED}
    assert kinds == {"Job", "FederatedTraining"}
