"""Record a machine's NVML topology to JSON, and replay it as an NVML module.

`fedctl site inventory --record FILE` writes what `discover` reads on a real GPU machine;
tests replay such recordings (tests/fixtures/nvml/) through the same discovery code.
"""
from __future__ import annotations

import ctypes
from types import SimpleNamespace
from typing import Any

from site_agent.nvml_topology import NVLINK_MAX_LINKS, _fabric_clique, _text


def record(nvml) -> dict[str, Any]:
    nvml.nvmlInit()
    try:
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            links: list[str | None] = []
            for link in range(NVLINK_MAX_LINKS):
                try:
                    active = nvml.nvmlDeviceGetNvLinkState(h, link)
                    links.append(_text(nvml.nvmlDeviceGetNvLinkRemotePciInfo(h, link).busId) if active else None)
                except nvml.NVMLError:
                    break
            clique = _fabric_clique(nvml, h)
            mig = None
            try:
                if nvml.nvmlDeviceGetMigMode(h)[0]:
                    mig = []
                    for k in range(nvml.nvmlDeviceGetMaxMigDeviceCount(h)):
                        try:
                            m = nvml.nvmlDeviceGetMigDeviceHandleByIndex(h, k)
                        except nvml.NVMLError:
                            continue
                        mig.append({"name": _text(nvml.nvmlDeviceGetName(m)),
                                    "memory": int(nvml.nvmlDeviceGetMemoryInfo(m).total),
                                    "uuid": _text(nvml.nvmlDeviceGetUUID(m))})
            except nvml.NVMLError:
                pass
            gpus.append({
                "name": _text(nvml.nvmlDeviceGetName(h)), "memory": int(nvml.nvmlDeviceGetMemoryInfo(h).total),
                "bus": _text(nvml.nvmlDeviceGetPciInfo(h).busId), "uuid": _text(nvml.nvmlDeviceGetUUID(h)),
                "links": links, "mig": mig,
                "fabric": None if not clique else {"cluster": clique.split("/")[1],
                                                   "clique": int(clique.split("/")[2])}})
        return {"gpus": gpus}
    finally:
        nvml.nvmlShutdown()


class NVMLError(Exception):
    pass


class RecordedNVML:
    """The subset of pynvml that discovery calls, answering from a recording."""

    NVMLError = NVMLError
    nvmlGpuFabricInfo_v2 = 2

    class c_nvmlGpuFabricInfoV_t(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint), ("clusterUuid", ctypes.c_ubyte * 16), ("status", ctypes.c_uint),
                    ("cliqueId", ctypes.c_uint), ("state", ctypes.c_uint), ("healthMask", ctypes.c_uint)]

    def __init__(self, data: dict[str, Any]) -> None:
        self.gpus = data["gpus"]
        self.initialised = 0

    def nvmlInit(self) -> None:
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int):
        return ("gpu", i)

    def _gpu(self, h) -> dict[str, Any]:
        if h[0] == "gpu":
            return self.gpus[h[1]]
        return self.gpus[h[1]]["mig"][h[2]]

    def nvmlDeviceGetName(self, h) -> str:
        return self._gpu(h)["name"]

    def nvmlDeviceGetUUID(self, h) -> str:
        return self._gpu(h)["uuid"]

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=self._gpu(h)["memory"])

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=self._gpu(h)["bus"])

    def _link(self, h, link: int) -> str | None:
        links = self._gpu(h)["links"]
        if link >= len(links):
            raise NVMLError("NVML_ERROR_INVALID_ARGUMENT")
        return links[link]

    def nvmlDeviceGetNvLinkState(self, h, link: int) -> int:
        return int(self._link(h, link) is not None)

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h, link: int):
        return SimpleNamespace(busId=self._link(h, link))

    def nvmlDeviceGetGpuFabricInfoV(self, h, ref) -> None:
        fabric = self._gpu(h).get("fabric")
        if fabric is None:
            raise NVMLError("NVML_ERROR_NOT_SUPPORTED")
        info = ref._obj
        info.clusterUuid[:] = list(bytes.fromhex(fabric["cluster"]))
        info.cliqueId = fabric["clique"]
        info.state = 3

    def nvmlDeviceGetMigMode(self, h) -> list[int]:
        if self._gpu(h).get("mig") is None:
            return [0, 0]
        return [1, 1]

    def nvmlDeviceGetMaxMigDeviceCount(self, h) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h, k: int):
        if k >= len(self._gpu(h)["mig"] or ()):
            raise NVMLError("NVML_ERROR_NOT_FOUND")
        return ("mig", h[1], k)
