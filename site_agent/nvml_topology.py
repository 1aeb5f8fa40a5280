"""A node's GPUs and how they are wired, read through NVML.

NVLink domains are the connected components of the NVLink graph: a link to another GPU's
PCI bus joins the two, a link to anything else (an NVSwitch) joins the GPU to the node's
switch fabric. A GPU whose fabric registration completed (NVL72-class racks) belongs to
its fabric clique, which spans nodes. A MIG-enabled GPU contributes its MIG instances,
each its own small GPU without NVLink. Every call goes through the `nvml` module passed
in: the real pynvml, or a recorded topology (see nvml_record) in tests.
"""
from __future__ import annotations

import ctypes
import logging
import re
from dataclasses import dataclass

from policies.gpus import GpuNode

log = logging.getLogger("site_agent.nvml")

NVLINK_MAX_LINKS = 18
FABRIC_STATE_COMPLETED = 3
SWITCH = "nvswitch"


@dataclass(frozen=True)
class Device:
    """One schedulable GPU: its place in the node's inventory and how CUDA names it."""

    entry: str          # inventory node name (the host, or host/<model> when one host has several kinds)
    index: int          # GPU index within that entry
    cuda: str           # CUDA_VISIBLE_DEVICES value: the device index, or a MIG UUID


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_NOISE = re.compile(r"^(\d+GB|HBM\w*|PCIE|SXM\d*|NVIDIA|TESLA|GEFORCE)$", re.IGNORECASE)


def _short_model(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100', 'Tesla V100-SXM2-32GB' -> 'V100', 'NVIDIA RTX A6000' ->
    'RTX-A6000'; a MIG instance keeps its profile: 'H100-MIG-3g.40gb'."""
    base, _, profile = name.partition(" MIG ")
    words = [w.split("-")[0] for w in base.split()]
    model = "-".join(w for w in words if w and not _NOISE.match(w)) or name
    return f"{model}-MIG-{profile.strip()}" if profile else model


def discover(nvml, host: str, rack: str = "", block: str = "") -> tuple[list[GpuNode], list[Device]]:
    """Inventory entries for this host, and the device each (entry, index) stands for."""
    nvml.nvmlInit()
    try:
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        bus = [_text(nvml.nvmlDeviceGetPciInfo(h).busId).lower() for h in handles]
        parent = list(range(len(handles)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        switched: list[int] = []
        linked = [False] * len(handles)
        for i, h in enumerate(handles):
            for link in range(NVLINK_MAX_LINKS):
                try:
                    if not nvml.nvmlDeviceGetNvLinkState(h, link):
                        continue
                    peer = _text(nvml.nvmlDeviceGetNvLinkRemotePciInfo(h, link).busId).lower()
                except nvml.NVMLError:
                    break  # no such link on this GPU (or NVLink unsupported)
                linked[i] = True
                if peer in bus:
                    parent[find(i)] = find(bus.index(peer))
                else:
                    switched.append(i)
        for i in switched[1:]:
            parent[find(i)] = find(switched[0])

        fabric = [_fabric_clique(nvml, h) for h in handles]
        kinds: dict[str, list[tuple[str, int, str]]] = {}   # model -> [(domain, memory, cuda)]
        for i, h in enumerate(handles):
            name = _text(nvml.nvmlDeviceGetName(h))
            mig = _mig_instances(nvml, h)
            if mig:
                for mig_name, memory, uuid in mig:
                    kinds.setdefault(_short_model(mig_name), []).append(("", memory, uuid))
                continue
            domain = fabric[i] or (f"{host}/nvlink{find(i)}" if linked[i] else "")
            kinds.setdefault(_short_model(name), []).append(
                (domain, int(nvml.nvmlDeviceGetMemoryInfo(h).total), str(i)))
    finally:
        nvml.nvmlShutdown()
    nodes: list[GpuNode] = []
    devices: list[Device] = []
    for model, gpus in kinds.items():
        entry = host if len(kinds) == 1 else f"{host}/{model.lower()}"
        nodes.append(GpuNode(entry, model, min(m for _, m, _ in gpus), tuple(d for d, _, _ in gpus), rack, block))
        devices.extend(Device(entry, k, cuda) for k, (_, _, cuda) in enumerate(gpus))
    return nodes, devices


def _fabric_clique(nvml, handle) -> str:
    try:
        info = nvml.c_nvmlGpuFabricInfoV_t()
        info.version = nvml.nvmlGpuFabricInfo_v2
        nvml.nvmlDeviceGetGpuFabricInfoV(handle, ctypes.byref(info))
    except (nvml.NVMLError, AttributeError):
        return ""
    uuid = bytes(info.clusterUuid).hex()
    if info.state != FABRIC_STATE_COMPLETED or not int(uuid, 16):
        return ""
    return f"fabric/{uuid}/{info.cliqueId}"


def _mig_instances(nvml, handle) -> list[tuple[str, int, str]]:
    try:
        current, _ = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError:
        return []
    if not current:
        return []
    out = []
    for k in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, k)
        except nvml.NVMLError:
            continue  # an empty MIG slot
        out.append((_text(nvml.nvmlDeviceGetName(mig)), int(nvml.nvmlDeviceGetMemoryInfo(mig).total),
                    _text(nvml.nvmlDeviceGetUUID(mig))))
    return out
