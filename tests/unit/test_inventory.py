"""Inventory: declared capacity, Ray's totals, and GPUs through NVML (a recorded fake here)."""
from __future__ import annotations

import sys
import types

import pytest

from federation.sites import Capacity
from federation.spec.common import Resources
from site_agent.inventory import nvml_gpus, site_capacity
from site_agent.ray_driver import RayResources


class Ray:
    def __init__(self, gpus=0.0):
        self.gpus = gpus

    def resources(self):
        return RayResources(cpus=16, memory=64 * 2**30, gpus=self.gpus, nodes=2)


@pytest.fixture
def fake_nvml(monkeypatch):
    """A pynvml module answering like a two-GPU H100 node."""
    calls = []
    m = types.ModuleType("pynvml")
    m.nvmlInit = lambda: calls.append("init")
    m.nvmlShutdown = lambda: calls.append("shutdown")
    m.nvmlDeviceGetCount = lambda: 2
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3" if h == 0 else "NVIDIA H100 80GB HBM3"
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 * 2**30)
    monkeypatch.setitem(sys.modules, "pynvml", m)
    return calls


def test_nvml_lists_gpus_and_always_shuts_down(fake_nvml):
    gpus = nvml_gpus()
    assert [(g.index, g.name, g.memory) for g in gpus] == [(0, "NVIDIA H100 80GB HBM3", 80 * 2**30),
                                                           (1, "NVIDIA H100 80GB HBM3", 80 * 2**30)]
    assert fake_nvml == ["init", "shutdown"]


def test_nvml_absent_or_failing_means_no_gpus(monkeypatch):
    m = types.ModuleType("pynvml")

    def fail():
        raise RuntimeError("NVML Shared Library Not Found")

    m.nvmlInit = fail
    monkeypatch.setitem(sys.modules, "pynvml", m)
    assert nvml_gpus() is None
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert nvml_gpus() is None


def test_declared_capacity_wins_over_what_ray_reports():
    declared = Resources(cpus=4, memory=8 * 2**30, gpus=2)
    assert site_capacity(declared, Ray()) == Capacity(cpus=4, memory=8 * 2**30, gpus=2)
    assert site_capacity(None, Ray(gpus=8)) == Capacity(cpus=16, memory=64 * 2**30, gpus=8)


def test_gpus_ray_cannot_see_are_not_offered(fake_nvml, caplog):
    assert site_capacity(None, Ray(gpus=0)).gpus == 0
    assert "NVML sees 2 GPUs but Ray reports none" in caplog.text


def test_a_local_ray_head_gets_distinct_ports_labels_and_the_stop_grace():
    from federation.spec.site import LocalRay
    from site_agent.local_ray import LocalRayHead
    head = LocalRayHead(LocalRay(port_base=31000, num_cpus=2, stop_grace_s=45), labels={"fedctl.io/node": "n0"},
                        num_gpus=2)
    args = head.command()
    assert "--port=31000" in args and "--num-cpus=2" in args and "--num-gpus=2" in args
    assert "--labels=fedctl.io/node=n0" in args
    env = head.environment()
    assert env["RAY_JOB_STOP_WAIT_TIME_S"] == "45"
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == str(head.temp_dir / "auth_token")
    open_head = LocalRayHead(LocalRay(port_base=31000, token_auth=False))
    assert "RAY_AUTH_MODE" not in open_head.environment() or open_head.environment()["RAY_AUTH_MODE"] != "token"
