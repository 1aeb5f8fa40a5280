"""NVML topology discovery, replayed from recorded topologies through the real discovery code."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from site_agent.nvml_record import RecordedNVML, record
from site_agent.nvml_topology import discover

FIXTURES = Path(__file__).parent.parent / "fixtures" / "nvml"


def replay(name: str) -> RecordedNVML:
    return RecordedNVML(json.loads((FIXTURES / f"{name}.json").read_text()))


def domains(node) -> list[int]:
    """Domain of each GPU as small integers in order of first use ('' stays None)."""
    seen: dict[str, int] = {}
    return [None if not d else seen.setdefault(d, len(seen)) for d in node.domains]


def test_nvswitch_node_is_one_domain():
    (node,), devices = discover(replay("dgx-h100"), "dgx-a", rack="r1", block="b1")
    assert node.name == "dgx-a" and node.model == "H100" and node.gpus == 8
    assert node.memory == 81559 * 2**20 and (node.rack, node.block) == ("r1", "b1")
    assert domains(node) == [0] * 8
    assert [d.cuda for d in devices] == [str(i) for i in range(8)]


def test_pcie_gpus_have_no_nvlink_domain():
    (node,), _ = discover(replay("pcie-l4"), "edge")
    assert node.model == "L4" and node.domains == ("",) * 4


def test_a_single_gpu_cloud_vm_recorded_on_a_real_h100():
    # tests/fixtures/nvml/h100-vm.json was written by `fedctl site inventory --record` on an H100 VM.
    (node,), devices = discover(replay("h100-vm"), "vm")
    assert (node.name, node.model, node.gpus, node.domains) == ("vm", "H100", 1, ("",))
    assert node.memory == 85520809984
    assert [d.cuda for d in devices] == ["0"]


def test_bridges_make_pairs():
    (node,), _ = discover(replay("bridged-a6000"), "ws")
    assert node.model == "RTX-A6000"
    assert domains(node) == [0, 0, 1, 1]


def test_cube_mesh_is_connected():
    (node,), _ = discover(replay("dgx1-v100"), "dgx1")
    assert node.model == "V100" and domains(node) == [0] * 8


def test_fabric_clique_spans_trays():
    (a,), _ = discover(replay("gb200-tray"), "tray-1")
    (b,), _ = discover(replay("gb200-tray"), "tray-2")
    assert set(a.domains) == set(b.domains) and len(set(a.domains)) == 1
    assert a.domains[0].startswith("fabric/5c3a0e1f") and a.domains[0].endswith("/7")


def test_mig_instances_are_their_own_gpus():
    nodes, devices = discover(replay("mig-h100"), "box")
    by_model = {n.model: n for n in nodes}
    assert set(by_model) == {"H100", "H100-MIG-3g.40gb"}
    mig = by_model["H100-MIG-3g.40gb"]
    assert mig.name == "box/h100-mig-3g.40gb" and mig.gpus == 2 and mig.domains == ("", "")
    assert mig.memory == 40192 * 2**20
    cuda = {(d.entry, d.index): d.cuda for d in devices}
    assert cuda[("box/h100-mig-3g.40gb", 1)] == "MIG-h100-0-1" and cuda[("box/h100", 0)] == "1"


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_recording_a_replay_gives_the_same_recording(name):
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    nvml = RecordedNVML(data)
    assert record(nvml) == data
    assert nvml.initialised == 0


def test_cli_prints_the_declared_inventory(capsys):
    from federation.cli.main import main
    root = FIXTURES.parents[2]
    assert main(["site", "inventory", "--config", str(root / "configs" / "sites" / "us-east.yaml"),
                 "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"nodes": [{
        "name": "us-dgx", "model": "H100", "gpus": 2, "memory": 80 * 2**30, "nvlink_domains": ["us-dgx/nvlink0"],
        "rack": "", "block": ""}]}


def test_cli_record_without_nvml_is_one_clear_error(tmp_path, capsys, monkeypatch):
    import pynvml

    from federation.cli.main import main

    def no_driver():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    assert main(["site", "inventory", "--record", str(tmp_path / "rec.json")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error[CONFIG]: --record: NVML: ")
    assert not (tmp_path / "rec.json").exists()
