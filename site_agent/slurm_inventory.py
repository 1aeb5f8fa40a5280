"""A Slurm site's GPU inventory, read from Slurm unless the site declares it: each node's GRES GPUs
(`sinfo`) and, where Slurm's topology/tree plugin is configured (`topology.conf`), its leaf switch
as the node's rack and that switch's parent as its block (`scontrol show topology`). Slurm says
nothing of NVLink: a site that wants its GPUs placed by NVLink domain declares `gpu_nodes`."""
from __future__ import annotations

import re

from policies.gpus import GpuNode, Inventory

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def hostnames(hostlist: str) -> list[str]:
    """Slurm's compressed host list, expanded: `gpu[01-03,07],login` -> gpu01, gpu02, gpu03, gpu07, login."""
    out: list[str] = []
    for prefix, ranges, plain in re.findall(r"([^,\[\]]*)\[([^\]]*)\]|([^,\[\]]+)", hostlist):
        if plain:
            out.append(plain)
            continue
        for part in ranges.split(","):
            m = _RANGE.match(part.strip())
            if not m:
                raise ValueError(f"host list {hostlist!r}: {part!r} is not a number or a range")
            first, last = m.group(1), m.group(2) or m.group(1)
            out += [f"{prefix}{i:0{len(first)}d}" for i in range(int(first), int(last) + 1)]
    return out


def gres_gpus_by_model(gres: str) -> dict[str, int]:
    """A node's GRES, e.g. `gpu:a100:4(S:0-1),gpu:v100:2,nvme:1` -> {'A100': 4, 'V100': 2}."""
    out: dict[str, int] = {}
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            model = parts[1].upper() if len(parts) == 3 else ""
            out[model] = out.get(model, 0) + int(parts[-1])
    return out


def racks(topology: str) -> dict[str, tuple[str, str]]:
    """`scontrol show topology`: each node's (leaf switch, its parent switch)."""
    leaves: dict[str, str] = {}
    parent: dict[str, str] = {}
    for line in topology.splitlines():
        fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
        name = fields.get("SwitchName")
        if not name:
            continue
        for node in hostnames(fields.get("Nodes", "")):
            leaves.setdefault(node, name)
        for child in hostnames(fields.get("Switches", "")):
            parent[child] = name
    return {node: (switch, parent.get(switch, "")) for node, switch in leaves.items()}


def inventory(sinfo: str, topology: str) -> Inventory:
    """The GPU nodes of `sinfo -h -N -o '%N|%G|%t'` (up, one line per node and partition) placed by
    `scontrol show topology`."""
    where = racks(topology)
    nodes: dict[str, GpuNode] = {}
    for line in sinfo.splitlines():
        name, gres, state = (line.split("|") + ["", ""])[:3]
        if not name or name in nodes or state.startswith(("down", "drain", "fail")):
            continue
        rack, block = where.get(name, ("", ""))
        by_model = gres_gpus_by_model(gres)
        for model, count in sorted(by_model.items()):
            entry = name if len(by_model) == 1 else f"{name}:{model or 'gpu'}"
            nodes[entry] = GpuNode(entry, model, 0, ("",) * count, rack, block)
    return Inventory(tuple(nodes.values()))
