"""What a site has: Ray's view, GPUs through NVML where present, or what the config declares."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from federation.sites import Capacity
from federation.spec.models import Resources
from site_agent.ray_driver import RayDriver

log = logging.getLogger("site_agent.inventory")


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    memory: int


def nvml_gpus() -> list[GPU] | None:
    """GPUs seen by NVML; None when NVML is not available (no driver, no GPU)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            out.append(GPU(i, name.decode() if isinstance(name, bytes) else name,
                           int(pynvml.nvmlDeviceGetMemoryInfo(h).total)))
        return out
    finally:
        pynvml.nvmlShutdown()


def site_capacity(declared: Resources | None, driver: RayDriver) -> Capacity:
    """The declared capacity wins (an operator may pledge less than the cluster has);
    otherwise Ray's totals. NVML is asked only to warn when it sees GPUs Ray does not."""
    if declared is not None:
        return Capacity(cpus=declared.cpus, memory=declared.memory, gpus=declared.gpus)
    r = driver.resources()
    gpus = r.gpus
    if not gpus:
        found = nvml_gpus()
        if found:
            log.warning("NVML sees %d GPUs but Ray reports none; declare them in the site's capacity", len(found))
    return Capacity(cpus=r.cpus, memory=r.memory, gpus=gpus)
