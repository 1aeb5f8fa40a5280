"""What a site has: Ray's view, GPUs through NVML where present, or what the config declares."""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field

from federation.errors import RayError
from federation.gpus import inventory_of
from federation.sites import Capacity
from federation.spec.common import Resources
from federation.spec.site import SiteConfig
from policies.gpus import Inventory
from site_agent.binding import NODE_LABEL
from site_agent.ray_driver import RayDriver

RACK_LABEL = "fedctl.io/rack"
BLOCK_LABEL = "fedctl.io/block"

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


@dataclass(frozen=True)
class SiteGpus:
    inventory: Inventory = field(default_factory=Inventory)
    cuda: dict[tuple[str, int], str] = field(default_factory=dict)   # (entry, index) -> CUDA device


def site_gpus(config: SiteConfig, driver: RayDriver | None) -> SiteGpus:
    """The declared GPU nodes win; otherwise this host's GPUs through NVML, with its rack and
    block from the Ray node labelled fedctl.io/node=<hostname>. GPUs of other Ray nodes are not
    seen here: declare them (their topology is then the operator's word)."""
    if config.spec.gpu_nodes is not None:
        return SiteGpus(inventory_of(config.spec.gpu_nodes))
    try:
        known = driver.inventory() if driver is not None else None
    except RayError as e:
        log.warning("inventory: %s", e.message)
        known = Inventory()
    if known is not None:
        return SiteGpus(known)
    try:
        import pynvml
    except ImportError:
        return SiteGpus()
    from site_agent.nvml_topology import discover

    host = socket.gethostname()
    labels: dict[str, str] = {}
    try:
        if driver is not None:
            labels = next((n.labels for n in driver.nodes() if n.labels.get(NODE_LABEL) == host), {})
    except RayError as e:
        log.warning("inventory: %s", e.message)
    try:
        nodes, devices = discover(pynvml, host, labels.get(RACK_LABEL, ""), labels.get(BLOCK_LABEL, ""))
    except pynvml.NVMLError:
        return SiteGpus()  # no driver or no GPU
    return SiteGpus(Inventory(tuple(nodes)), {(d.entry, d.index): d.cuda for d in devices})
