"""Shows the GPU block the federation reserved: the devices and the placement group's node."""
import os

import ray
from ray.util import get_placement_group
from ray.util.placement_group import placement_group_table

ray.init(address="auto", namespace="fedctl", log_to_driver=False)
table = placement_group_table(get_placement_group(os.environ["FEDCTL_PLACEMENT_GROUP"]))
nodes = {n["NodeID"]: (n.get("Labels") or {}).get("fedctl.io/node") for n in ray.nodes()}
where = ",".join(sorted(nodes[n] for n in table["bundles_to_node_id"].values()))
print(f"GPUs {os.environ['CUDA_VISIBLE_DEVICES']} on {where}, one NVLink domain, "
      f"placement group {table['strategy']} {table['state'].lower()}")
