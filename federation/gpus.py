"""GPU shapes between specs, the store and the pure placement core."""
from __future__ import annotations

import hashlib
import json

from federation.errors import InvalidSpec
from federation.spec.job import JobBody
from federation.spec.site import NodeSpec
from policies.gpus import MILLI, Binding, GpuNode, GpuRequest, Inventory, Slot

MAX_GPUS_PER_SITE = 200_000
MAX_GPUS_PER_NODE = 128


def request_of(body: JobBody) -> GpuRequest | None:
    r, t = body.resources, body.topology
    if r.gpus <= 0 and r.gpu_memory is None:
        return None
    whole = r.gpus >= 1
    return GpuRequest(
        count=int(r.gpus) if whole else 0,
        share=0 if whole or r.gpus == 0 else max(1, round(r.gpus * MILLI)),
        memory=r.gpu_memory or 0, models=frozenset(r.gpu_type), nvlink=t.nvlink or "",
        per_node=t.gpus_per_node or 0, colocate=t.colocate or "")


def inventory_of(nodes: list[NodeSpec]) -> Inventory:
    """Declared nodes to an inventory; a node's NVLink groups become domains, a fabric one shared domain."""
    out = []
    for spec in nodes:
        names = [spec.name] if spec.replicas == 1 else [f"{spec.name}-{i}" for i in range(spec.replicas)]
        for name in names:
            domains = [""] * spec.gpus.count
            if spec.fabric:
                domains = [f"fabric/{spec.fabric}"] * spec.gpus.count
            for k, group in enumerate(spec.nvlink):
                for g in group:
                    domains[g] = f"{name}/nvlink{k}"
            out.append(GpuNode(name, spec.gpus.model, spec.gpus.memory, tuple(domains), spec.rack, spec.block,
                               spec.spot))
    return Inventory(tuple(out))


def inventory_to_json(inv: Inventory) -> str:
    # A spot node's row has a seventh field: rows stored before spot existed read back unchanged.
    return json.dumps([[n.name, n.model, n.memory, list(n.domains), n.rack, n.block, *([True] if n.spot else [])]
                       for n in inv.nodes], separators=(",", ":"))


def inventory_from_json(text: str | None) -> Inventory:
    if not text:
        return Inventory()
    return Inventory(tuple(GpuNode(name, model, int(memory), tuple(domains), rack, block, bool(spot and spot[0]))
                           for name, model, memory, domains, rack, block, *spot in json.loads(text)))


def digest(inv: Inventory) -> str:
    return hashlib.sha256(inventory_to_json(inv).encode()).hexdigest()[:16]


def check_inventory(inv: Inventory, where: str) -> Inventory:
    """What a site may publish: bounded sizes, unique node names, sane memory. A malicious or
    broken agent gets an error naming the node, never a federation that loops over garbage."""
    names: set[str] = set()
    total = 0
    for i, n in enumerate(inv.nodes):
        at = f"{where}.nodes[{i}]"
        if not n.name or len(n.name) > 253 or n.name in names:
            raise InvalidSpec(f"{at}.name: {n.name!r} is empty, too long or repeated")
        names.add(n.name)
        if n.gpus > MAX_GPUS_PER_NODE:
            raise InvalidSpec(f"{at}: {n.gpus} GPUs on one node is more than {MAX_GPUS_PER_NODE}")
        if n.memory < 0 or len(n.model) > 64 or len(n.rack) > 253 or len(n.block) > 253:
            raise InvalidSpec(f"{at}: model, memory, rack or block out of range")
        if any(len(d) > 253 for d in n.domains):
            raise InvalidSpec(f"{at}.domains: a domain id is longer than 253 characters")
        total += n.gpus
    if total > MAX_GPUS_PER_SITE:
        raise InvalidSpec(f"{where}: {total} GPUs is more than {MAX_GPUS_PER_SITE} for one site")
    return inv


def binding_to_json(binding: Binding) -> str:
    return json.dumps([[s.node, list(s.gpus), s.milli] for s in binding], separators=(",", ":")) if binding else ""


def binding_from_json(text: str | None) -> Binding:
    if not text:
        return ()
    return tuple(Slot(node, tuple(gpus), milli) for node, gpus, milli in json.loads(text))
