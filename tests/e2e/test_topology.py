"""GPU topology end to end: declared inventories, a reserved NVLink block, a Ray placement group
pinned to the reserved node, and the scattered site's reason in `fedctl explain`."""
from __future__ import annotations

import pytest

from tests.e2e.test_federation import job, write

pytestmark = pytest.mark.e2e


def nvlink_job(name: str, **resources) -> dict:
    return job(name, entrypoint="python gpus.py", resources={"cpus": 1, "gpus": 2, **resources},
               topology={"nvlink": "required"})


def test_two_gpus_in_one_nvlink_domain_land_on_the_dgx_not_the_scattered_site(federation, tmp_path):
    out = federation.cli_json("submit", write(tmp_path, nvlink_job("allreduce")), "--wait", "--timeout", "120")
    assert (out["state"], out["site"]) == ("succeeded", "us-east"), out
    logs = federation.cli("logs", out["id"]).stdout
    assert "CUDA_VISIBLE_DEVICES 0,1" in logs
    assert "placement group CREATED STRICT_PACK on us-dgx" in logs
    status = federation.cli_json("status", out["id"])
    assert status["attempts"][0]["binding"] == [{"node": "us-dgx", "gpus": [0, 1], "milli": 1000}]

    explain = federation.cli_json("explain", out["id"])
    assert "2 GPUs in one NVLink domain on us-dgx GPU 0,1" in explain["summary"]
    verdicts = {v["site"]: v for v in explain["verdicts"]}
    assert verdicts["eu-west"]["reason_code"] == "topology" and not verdicts["eu-west"]["eligible"]
    assert verdicts["eu-west"]["reason"] == "no NVLink domain holds 2 GPUs (largest: 1)"
    table = federation.cli("explain", out["id"]).stdout
    assert "topology" in table and "no NVLink domain holds 2 GPUs (largest: 1)" in table


def test_a_shape_no_site_has_is_refused_at_submit(federation, tmp_path):
    r = federation.cli("submit", write(tmp_path, nvlink_job("too-wide", gpu_type="L4")))
    assert r.returncode != 0
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error[UNSATISFIABLE]: spec.resources: no site could ever hold 2 GPUs (L4) in one "
                           "NVLink domain (")
    assert "eu-west: no NVLink domain holds 2 GPUs (largest: 1)" in line
    assert "us-east: no GPU type L4 here (site has H100)" in line
